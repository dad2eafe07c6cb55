"""The Linux plan: a system user, its folders, and a hardened ``Type=notify`` systemd unit.

``unit_text`` is the one source of the unit: ``service install`` writes it with this
installation's paths, and ``packaging/linux/acqharvest.service`` is the same text for the
default paths (a test keeps the two equal).
"""

from __future__ import annotations

import posixpath

from acqharvest.service_plan import (
    SERVICE_NAME,
    MakeFolder,
    PlanError,
    Remove,
    Request,
    Run,
    ServicePaths,
    ServiceState,
    SetAccess,
    Step,
    WriteFile,
    needs_paths,
)

UNIT_PATH = f"/etc/systemd/system/{SERVICE_NAME}.service"
UNIT = f"{SERVICE_NAME}.service"
#: where ``service install`` looks for the config when ``--config`` is not given
DEFAULT_CONFIG = "/etc/acqharvest/acqharvest.yaml"
DEFAULT_USER = SERVICE_NAME

_UNIT = """\
# The acqharvest service, written by `acqharvest service install` with the paths of its
# installation and config (which also makes the user and folders, and starts it);
# packaging/linux/acqharvest.service is this unit for the default paths.
[Unit]
Description=acqharvest acquisition metadata harvester
Documentation=https://pypi.org/project/acqharvest/
After=network-online.target remote-fs.target
Wants=network-online.target

[Service]
# The daemon says READY=1 once its folders are watched, and pings the watchdog from its
# harvest loop: a loop that stops turning gets the service restarted.
Type=notify
# Watching a tree of 100,000 folders takes minutes before READY=1 on a slow share.
TimeoutStartSec=30min
WatchdogSec=5min
User={user}
Group={user}
ExecStart={exec_start}
Restart=on-failure
RestartSec=10
# Exit status 2 is a config error, the same at every start: fix the config, then start it.
RestartPreventExitStatus=2
# SIGTERM stops it cleanly: the outbox is on disk, nothing in flight is lost.
KillSignal=SIGTERM
TimeoutStopSec=30
# The daemon only reads instrument folders: the whole file system is read-only to it
# except its state dir (and its log and delivery folders, if set apart).
ProtectSystem=strict
ReadWritePaths={read_write}
{read_only}ProtectHome=read-only
PrivateTmp=true
NoNewPrivileges=true

[Install]
WantedBy=multi-user.target
"""


def _quoted(value: str) -> str:
    """One word of a unit file setting: ``%`` escaped, quoted when it holds a space."""
    value = value.replace("%", "%%")
    if any(char in value for char in " \t\"\\'"):
        value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def unit_text(executable: str, paths: ServicePaths, user: str) -> str:
    """The unit for this executable, config and account."""
    if not posixpath.isabs(executable):
        raise PlanError(f"the acqharvest executable must be an absolute path: {executable}")
    exec_start = [executable, "run", "--config", paths.config]
    read_write = [paths.state_dir, *filter(None, (paths.log_dir, paths.endpoint_dir))]
    # "-": a watch folder not mounted yet must not keep the service from starting
    read_only = " ".join("-" + _quoted(folder) for folder in paths.watch)
    return _UNIT.format(
        user=user,
        exec_start=" ".join(_quoted(word) for word in exec_start),
        read_write=" ".join(_quoted(folder) for folder in read_write),
        read_only=f"# The watch folders, read-only even if a folder above is not.\n"
        f"ReadOnlyPaths={read_only}\n"
        if read_only
        else "",
    )


def packaged_unit() -> str:
    """``packaging/linux/acqharvest.service``: the unit for the default paths."""
    paths = ServicePaths(config=DEFAULT_CONFIG, state_dir="/var/lib/acqharvest")
    return unit_text("/opt/acqharvest/bin/acqharvest", paths, DEFAULT_USER)


def plan(request: Request) -> list[Step]:
    user = request.user or DEFAULT_USER
    systemctl = ("systemctl",)
    if request.action == "install":
        return _install(request, user)
    if request.action == "uninstall":
        return _uninstall(request, user)
    if request.action == "start":
        return [Run((*systemctl, "start", UNIT))]
    if request.action == "stop":
        return [Run((*systemctl, "stop", UNIT))]
    return [status_command()]


def _install(request: Request, user: str) -> list[Step]:
    paths = needs_paths(request)
    steps: list[Step] = [
        Run(
            (
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                paths.state_dir,
                "--shell",
                "/usr/sbin/nologin",
                user,
            ),
            unless=("id", "-u", user),
        ),
        # the config may hold proxy credentials: the service reads it, nobody else
        SetAccess(paths.config, 0o640, "root", user),
        *(SetAccess(secret, 0o640, "root", user) for secret in paths.secrets),
        MakeFolder(paths.state_dir, 0o750, user, user),
        *(
            MakeFolder(folder, 0o750, user, user, take_over=False)
            for folder in (paths.log_dir, paths.endpoint_dir)
            if folder is not None
        ),
        WriteFile(
            UNIT_PATH, unit_text(request.program.executable, paths, user), 0o644, "root", "root"
        ),
        Run(("systemctl", "daemon-reload")),
        Run(("systemctl", "enable", UNIT)),
        # restart, not start: installing again applies a changed config or executable
        Run(("systemctl", "restart", UNIT)),
    ]
    return steps


def _uninstall(request: Request, user: str) -> list[Step]:
    steps: list[Step] = [
        Run(("systemctl", "disable", "--now", UNIT), may_fail=True),
        Remove(UNIT_PATH),
        Run(("systemctl", "daemon-reload")),
    ]
    if request.purge:
        paths = needs_paths(request)
        steps += [Remove(paths.state_dir, tree=True), Remove(paths.config)]
        if request.user is None:  # only the account install made, never a named one
            steps.append(Run(("userdel", user), may_fail=True))
    return steps


def status_command() -> Run:
    return Run(
        (
            "systemctl",
            "show",
            UNIT,
            "--property=LoadState,ActiveState,SubState,UnitFileState",
        )
    )


def parse_status(returncode: int, output: str) -> ServiceState:
    """``systemctl show``'s ``Key=value`` lines as a state."""
    values = dict(line.partition("=")[::2] for line in output.splitlines() if "=" in line)
    load = values.get("LoadState", "")
    if returncode != 0 or not load:
        return ServiceState(False, False, output.strip() or f"systemctl exit status {returncode}")
    active, sub = values.get("ActiveState", "unknown"), values.get("SubState", "unknown")
    enabled = values.get("UnitFileState", "")
    detail = f"{active} ({sub})" + (f", {enabled}" if enabled else "")
    return ServiceState(load not in ("not-found", "masked"), active == "active", detail)
