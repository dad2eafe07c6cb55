"""The Windows plan, computed here as on Windows: sc.exe lines, recovery, account, ACLs."""

from __future__ import annotations

import io
import json

import pytest

from acqharvest.service_install import describe
from acqharvest.service_plan import (
    DESCRIPTION,
    FromEnv,
    MakeFolder,
    PlanError,
    Program,
    Remove,
    Request,
    Run,
)
from acqharvest.service_plan import ServicePaths as Paths
from acqharvest.service_windows import (
    account_arguments,
    event_log_level,
    parse_status,
    plan,
)

PYTHON = r"C:\Program Files\Python312\python.exe"
MESSAGES = r"C:\Program Files\Python312\Lib\site-packages\win32\servicemanager.pyd"
PATHS = Paths(
    config=r"C:\ProgramData\acqharvest\acqharvest.yaml",
    state_dir=r"C:\ProgramData\acqharvest\state",
    endpoint_dir=r"D:\harvested",
    watch=(r"D:\Instrument Data",),
    secrets=(r"C:\ProgramData\acqharvest\token",),
)
PROGRAM = Program(PYTHON, event_messages=MESSAGES)
BIN_PATH = (
    r'"C:\Program Files\Python312\python.exe" -m acqharvest.winservice '
    r"--config C:\ProgramData\acqharvest\acqharvest.yaml"
)
RESTART = (
    "powershell.exe",
    "-NoProfile",
    "-NonInteractive",
    "-Command",
    "Restart-Service acqharvest",
)
SERVICE_ACL = ("*S-1-5-18:(OI)(CI)(F)", "*S-1-5-32-544:(OI)(CI)(F)")


def test_install_creates_a_delayed_auto_service_with_recovery_as_a_virtual_account() -> None:
    steps = plan(Request("install", "windows", PROGRAM, PATHS))

    event_key = r"HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\acqharvest"
    assert steps == [
        Run(
            ("sc.exe", "create", "acqharvest", "binPath=", BIN_PATH),
            unless=("sc.exe", "query", "acqharvest"),
        ),
        Run(("sc.exe", "sidtype", "acqharvest", "unrestricted")),
        Run(
            (
                "sc.exe",
                "config",
                "acqharvest",
                "binPath=",
                BIN_PATH,
                "start=",
                "delayed-auto",
                "obj=",
                r"NT SERVICE\acqharvest",
                "DisplayName=",
                "acqharvest",
            )
        ),
        Run(("sc.exe", "description", "acqharvest", DESCRIPTION)),
        Run(
            (
                "sc.exe",
                "failure",
                "acqharvest",
                "reset=",
                "86400",
                "actions=",
                "restart/60000/restart/60000/restart/300000",
            )
        ),
        Run(("sc.exe", "failureflag", "acqharvest", "1")),
        Run(
            (
                "reg.exe",
                "delete",
                r"HKLM\SYSTEM\CurrentControlSet\Services\acqharvest",
                "/v",
                "Environment",
                "/f",
            ),
            may_fail=True,
        ),
        Run(
            (
                "reg.exe",
                "add",
                event_key,
                "/v",
                "EventMessageFile",
                "/t",
                "REG_EXPAND_SZ",
                "/d",
                MESSAGES,
                "/f",
            )
        ),
        Run(
            (
                "reg.exe",
                "add",
                event_key,
                "/v",
                "TypesSupported",
                "/t",
                "REG_DWORD",
                "/d",
                "7",
                "/f",
            )
        ),
        MakeFolder(r"C:\ProgramData\acqharvest\state"),
        Run(
            (
                "icacls",
                r"C:\ProgramData\acqharvest\state",
                "/inheritance:r",
                "/grant:r",
                *SERVICE_ACL,
                r"NT SERVICE\acqharvest:(OI)(CI)(M)",
            )
        ),
        MakeFolder(r"D:\harvested", take_over=False),
        Run(("icacls", r"D:\harvested", "/grant", r"NT SERVICE\acqharvest:(OI)(CI)(M)")),
        Run(
            (
                "icacls",
                r"C:\ProgramData\acqharvest\acqharvest.yaml",
                "/inheritance:r",
                "/grant:r",
                "*S-1-5-18:(F)",
                "*S-1-5-32-544:(F)",
                r"NT SERVICE\acqharvest:(R)",
            )
        ),
        Run(
            (
                "icacls",
                r"C:\ProgramData\acqharvest\token",
                "/inheritance:r",
                "/grant:r",
                "*S-1-5-18:(F)",
                "*S-1-5-32-544:(F)",
                r"NT SERVICE\acqharvest:(R)",
            )
        ),
        Run(RESTART),
    ]
    # the instrument's folders keep their ACLs
    assert not any(r"D:\Instrument Data" in str(step) for step in steps)


def test_start_and_stop_wait_until_done() -> None:
    assert plan(Request("start", "windows", PROGRAM)) == [
        Run((*RESTART[:-1], "Start-Service acqharvest"))
    ]
    assert plan(Request("stop", "windows", PROGRAM)) == [
        Run((*RESTART[:-1], "Stop-Service acqharvest"))
    ]
    assert plan(Request("status", "windows", PROGRAM)) == [Run(("sc.exe", "query", "acqharvest"))]


def test_a_venv_is_named_in_the_services_environment() -> None:
    venv = Program(PYTHON, venv_python=r"C:\acqharvest\Scripts\python.exe")
    steps = plan(Request("install", "windows", venv, PATHS))
    assert (
        Run(
            (
                "reg.exe",
                "add",
                r"HKLM\SYSTEM\CurrentControlSet\Services\acqharvest",
                "/v",
                "Environment",
                "/t",
                "REG_MULTI_SZ",
                "/d",
                r"__PYVENV_LAUNCHER__=C:\acqharvest\Scripts\python.exe",
                "/f",
            )
        )
        in steps
    )


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (None, ("obj=", r"NT SERVICE\acqharvest")),
        (r"NT AUTHORITY\NetworkService", ("obj=", r"NT AUTHORITY\NetworkService")),
        (r"LAB\gmsa-acq$", ("obj=", r"LAB\gmsa-acq$")),
        (
            r"LAB\svc-acq",
            ("obj=", r"LAB\svc-acq", "password=", FromEnv("ACQHARVEST_SERVICE_PASSWORD")),
        ),
        (r".\acqsvc", ("obj=", r".\acqsvc", "password=", FromEnv("ACQHARVEST_SERVICE_PASSWORD"))),
    ],
)
def test_the_account_and_whether_it_needs_a_password(
    user: str | None, expected: tuple[object, ...]
) -> None:
    assert account_arguments(user) == expected


def test_an_account_without_its_domain_is_refused() -> None:
    with pytest.raises(PlanError, match=r"DOMAIN\\svc-acq"):
        account_arguments("svc-acq")


def test_a_password_is_never_in_the_printed_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACQHARVEST_SERVICE_PASSWORD", "hunter2-secret")
    steps = plan(Request("install", "windows", PROGRAM, PATHS, user=r"LAB\svc-acq"))
    printed = "\n".join(describe(step, "windows") for step in steps)
    assert "<$ACQHARVEST_SERVICE_PASSWORD>" in printed
    assert "hunter2" not in printed
    # Windows quoting in the printed lines, as cmd.exe takes them back
    assert f'binPath= "{BIN_PATH.replace(chr(34), chr(92) + chr(34))}"' in printed


def test_uninstall_keeps_state_and_config_unless_purged() -> None:
    keep = plan(Request("uninstall", "windows", PROGRAM))
    assert [step.argv[:2] for step in keep if isinstance(step, Run)] == [
        ("powershell.exe", "-NoProfile"),
        ("sc.exe", "delete"),
        ("reg.exe", "delete"),
    ]
    assert keep[0] == Run((*RESTART[:-1], "Stop-Service acqharvest"), may_fail=True)
    assert all(isinstance(step, Run) for step in keep)
    purge = plan(Request("uninstall", "windows", PROGRAM, PATHS, purge=True))
    assert purge[3:] == [
        Remove(r"C:\ProgramData\acqharvest\state", tree=True),
        Remove(r"C:\ProgramData\acqharvest\acqharvest.yaml"),
    ]


SC_RUNNING = """
SERVICE_NAME: acqharvest
        TYPE               : 10  WIN32_OWN_PROCESS
        STATE              : 4  RUNNING
                                (STOPPABLE, NOT_PAUSABLE, ACCEPTS_SHUTDOWN)
        WIN32_EXIT_CODE    : 0  (0x0)
"""
SC_MISSING = (
    "[SC] EnumQueryServicesStatus:OpenService FAILED 1060:\n\n"
    "The specified service does not exist as an installed service.\n"
)


@pytest.mark.parametrize(
    ("returncode", "output", "state"),
    [
        (0, SC_RUNNING, (True, True, "RUNNING")),
        (0, SC_RUNNING.replace("4  RUNNING", "1  STOPPED"), (True, False, "STOPPED")),
        (1060, SC_MISSING, (False, False, "not installed")),
    ],
)
def test_status_is_read_from_sc_query(
    returncode: int, output: str, state: tuple[bool, bool, str]
) -> None:
    found = parse_status(returncode, output)
    assert (found.installed, found.running, found.detail) == state


@pytest.mark.parametrize(
    ("line", "level"),
    [
        (json.dumps({"event": "delivery_failed", "level": "error"}), "error"),
        (json.dumps({"event": "watch_limit_reached", "level": "warning"}), "warning"),
        (json.dumps({"event": "package_delivered", "level": "info"}), None),
        ("config error: C:\\ProgramData\\acqharvest\\acqharvest.yaml: state_dir: missing", "error"),
        # log.format: console, as structlog renders it into a stream that is no terminal
        ("2026-12-06T08:27:43.120Z [info     ] package_delivered package_id=ab", None),
        ("2026-12-06T08:27:43.120Z [warning  ] watch_limit_reached folder=D:\\data", "warning"),
        ("2026-12-06T08:27:43.120Z [error    ] delivery_failed", "error"),
        ("", None),
    ],
)
def test_what_reaches_the_event_log(line: str, level: str | None) -> None:
    assert event_log_level(line) == level


@pytest.mark.usefixtures("restored_logging")
def test_console_log_lines_reach_the_event_log_at_their_level() -> None:
    """``log.format: console`` lines, as the daemon's own logging renders them."""
    from acqharvest import logs

    stream = io.StringIO()
    logs.configure("info", "console", stream=stream)
    log = logs.get_logger()
    log.info("package_delivered", package_id="ab")
    log.warning("watch_limit_reached", folder="D:\\data")
    log.error("delivery_failed")
    levels = [event_log_level(line) for line in stream.getvalue().splitlines()]
    assert levels == [None, "warning", "error"]
