"""The Windows plan: a native service (pywin32) created and configured with ``sc.exe``.

The service runs ``python.exe -m acqharvest.winservice --config FILE`` with the real
interpreter: a console-script launcher or a venv's ``python.exe`` would start the
interpreter as a child process, not the process the service manager started and talks to.
In a venv the interpreter is pointed at it through the service's environment
(``__PYVENV_LAUNCHER__``, what the venv's own launcher does). By default it runs as the
virtual account ``NT SERVICE\\acqharvest``, which needs no password and reaches network
shares as the computer account; ``--user`` names another (a gMSA ending in ``$``, or an
account whose password is read from ``ACQHARVEST_SERVICE_PASSWORD`` when the plan runs,
never printed).

Start is automatic and delayed (after the boot rush); a failure restarts it after one
minute, twice, then after five minutes, the count reset after a day; a stop with a
non-zero exit status counts as a failure. The state dir gets an ACL of its own: SYSTEM,
Administrators and the service; the config and token are readable by the service only
besides those two (groups by SID: names are translated on a German or French Windows).
The watch folders are left alone (their ACLs are the instrument's): the account needs read
access there, which local users have by default.
"""

from __future__ import annotations

import json
import re
import subprocess

from acqharvest.service_plan import (
    DESCRIPTION,
    SERVICE_NAME,
    Argument,
    FromEnv,
    MakeFolder,
    PlanError,
    Remove,
    Request,
    Run,
    ServiceState,
    Step,
    needs_paths,
)

SC = "sc.exe"
DEFAULT_ACCOUNT = f"NT SERVICE\\{SERVICE_NAME}"
DEFAULT_CONFIG = r"C:\ProgramData\acqharvest\acqharvest.yaml"
PASSWORD_ENV = "ACQHARVEST_SERVICE_PASSWORD"  # noqa: S105 - a variable name, not its value
#: reset the failure count after a day; restart after 1 min, 1 min, then every 5 min
RECOVERY = ("reset=", "86400", "actions=", "restart/60000/restart/60000/restart/300000")
_SYSTEM, _ADMINISTRATORS = "*S-1-5-18", "*S-1-5-32-544"
_SERVICE_KEY = rf"HKLM\SYSTEM\CurrentControlSet\Services\{SERVICE_NAME}"
_EVENT_SOURCE_KEY = rf"HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\{SERVICE_NAME}"
#: accounts that have no password: virtual and built-in service accounts
_NO_PASSWORD = ("NT SERVICE\\", "NT AUTHORITY\\")


def command_line(request: Request, config: str) -> str:
    """The service's ``binPath``: the interpreter, the service module and the config."""
    # quoted as the C runtime splits it again
    return subprocess.list2cmdline(
        (request.program.executable, "-m", "acqharvest.winservice", "--config", config)
    )


def account_arguments(user: str | None) -> tuple[Argument, ...]:
    """``obj=`` (and ``password=``, for an account that has one) for ``sc.exe config``."""
    account = user or DEFAULT_ACCOUNT
    if "\\" not in account and "@" not in account and account not in ("LocalSystem",):
        raise PlanError(
            f"--user {account}: name the account with its domain or computer "
            f"(DOMAIN\\{account}, .\\{account}), or use a virtual account (NT SERVICE\\...)"
        )
    needs_password = not (
        account.upper().startswith(_NO_PASSWORD)
        or account.endswith("$")
        or account == "LocalSystem"
    )
    return ("obj=", account, *(("password=", FromEnv(PASSWORD_ENV)) if needs_password else ()))


def plan(request: Request) -> list[Step]:
    if request.action == "install":
        return _install(request)
    if request.action == "uninstall":
        return _uninstall(request)
    if request.action == "start":
        return [_powershell("Start-Service")]
    if request.action == "stop":
        return [_powershell("Stop-Service")]
    return [status_command()]


def _powershell(cmdlet: str) -> Run:
    """Start, stop or restart and wait until done (``sc.exe`` returns while it is pending)."""
    return Run(
        ("powershell.exe", "-NoProfile", "-NonInteractive", "-Command", f"{cmdlet} {SERVICE_NAME}")
    )


def _grant(path: str, service: str, rights: str) -> Run:
    """An ACL of its own on ``path``: SYSTEM and Administrators full, the service ``rights``."""
    inherit = "(OI)(CI)" if rights == "M" else ""
    return Run(
        (
            "icacls",
            path,
            "/inheritance:r",
            "/grant:r",
            f"{_SYSTEM}:{inherit}(F)",
            f"{_ADMINISTRATORS}:{inherit}(F)",
            f"{service}:{inherit}({rights})",
        )
    )


def _install(request: Request) -> list[Step]:
    paths = needs_paths(request)
    account = account_arguments(request.user)
    # the service's own SID names it in ACLs, whatever account it runs as
    service_sid = DEFAULT_ACCOUNT
    bin_path = command_line(request, paths.config)
    steps: list[Step] = [
        Run((SC, "create", SERVICE_NAME, "binPath=", bin_path), unless=(SC, "query", SERVICE_NAME)),
        # before the account: a virtual account is the service's SID, which this enables
        Run((SC, "sidtype", SERVICE_NAME, "unrestricted")),
        Run(
            (
                SC,
                "config",
                SERVICE_NAME,
                "binPath=",
                bin_path,
                "start=",
                "delayed-auto",
                *account,
                "DisplayName=",
                "acqharvest",
            )
        ),
        Run((SC, "description", SERVICE_NAME, DESCRIPTION)),
        Run((SC, "failure", SERVICE_NAME, *RECOVERY)),
        # a stop with a non-zero exit status (the daemon failed) also triggers the recovery
        Run((SC, "failureflag", SERVICE_NAME, "1")),
    ]
    if request.program.venv_python is not None:
        steps.append(
            _reg_add(
                _SERVICE_KEY,
                "Environment",
                "REG_MULTI_SZ",
                f"__PYVENV_LAUNCHER__={request.program.venv_python}",
            )
        )
    else:  # an earlier install from a venv named it
        steps.append(
            Run(("reg.exe", "delete", _SERVICE_KEY, "/v", "Environment", "/f"), may_fail=True)
        )
    if request.program.event_messages is not None:
        steps += [
            _reg_add(
                _EVENT_SOURCE_KEY,
                "EventMessageFile",
                "REG_EXPAND_SZ",
                request.program.event_messages,
            ),
            _reg_add(_EVENT_SOURCE_KEY, "TypesSupported", "REG_DWORD", "7"),
        ]
    steps += [
        MakeFolder(paths.state_dir),
        _grant(paths.state_dir, service_sid, "M"),
        *(
            MakeFolder(folder, take_over=False)
            for folder in (paths.log_dir, paths.endpoint_dir)
            if folder is not None
        ),
        *(
            Run(("icacls", folder, "/grant", f"{service_sid}:(OI)(CI)(M)"))
            for folder in (paths.log_dir, paths.endpoint_dir)
            if folder is not None
        ),
        _grant(paths.config, service_sid, "R"),
        *(_grant(secret, service_sid, "R") for secret in paths.secrets),
        # restart, not start: installing again applies a changed config or interpreter
        _powershell("Restart-Service"),
    ]
    return steps


def _reg_add(key: str, name: str, kind: str, data: str) -> Run:
    return Run(("reg.exe", "add", key, "/v", name, "/t", kind, "/d", data, "/f"))


def _uninstall(request: Request) -> list[Step]:
    steps: list[Step] = [
        Run(_powershell("Stop-Service").argv, may_fail=True),
        Run((SC, "delete", SERVICE_NAME), may_fail=True),
        Run(("reg.exe", "delete", _EVENT_SOURCE_KEY, "/f"), may_fail=True),
    ]
    if request.purge:
        paths = needs_paths(request)
        steps += [Remove(paths.state_dir, tree=True), Remove(paths.config)]
    return steps


def status_command() -> Run:
    return Run((SC, "query", SERVICE_NAME))


def parse_status(returncode: int, output: str) -> ServiceState:
    """``sc.exe query``: ``STATE : 4  RUNNING``; exit status 1060: no such service."""
    if returncode == 1060:
        return ServiceState(False, False, "not installed")
    for line in output.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "STATE":
            words = value.split()
            state = words[1] if len(words) > 1 else value.strip()
            return ServiceState(True, state == "RUNNING", state)
    return ServiceState(False, False, output.strip() or f"sc.exe exit status {returncode}")


#: a line of structlog's console renderer without colours: ``TIMESTAMP [level    ] event``
_CONSOLE_LINE = re.compile(r"^\S+ \[(debug|info|warning|error|critical|exception) *\]( |$)")


def event_log_level(line: str) -> str | None:
    """The event log level of a line the service writes, or None to leave it to the log file.

    Log lines go by their level (warning and above), JSON lines and ``log.format: console``
    lines alike; any other text is an error printed before logging was set up (a config
    error, a daemon that cannot start).
    """
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except ValueError:
        console = _CONSOLE_LINE.match(line)
        if console is None:
            return "error"
        record = {"level": console.group(1)}
    level = record.get("level") if isinstance(record, dict) else None
    if level in ("error", "critical", "exception"):
        return "error"
    if level == "warning":
        return "warning"
    return None if isinstance(level, str) else "error"
