"""The macOS plan: the launchd job (round-tripped through plistlib) and launchctl lines."""

from __future__ import annotations

import plistlib
from pathlib import Path

from acqharvest.service_launchd import (
    PLIST_PATH,
    job,
    packaged_plist,
    parse_status,
    plan,
)
from acqharvest.service_plan import (
    MakeFolder,
    Program,
    Remove,
    Request,
    Run,
    ServicePaths,
    SetAccess,
    WriteFile,
)

REPO = Path(__file__).resolve().parent.parent
PATHS = ServicePaths(
    config="/Library/Application Support/acqharvest/acqharvest.yaml",
    state_dir="/Library/Application Support/acqharvest/state",
    watch=("/Volumes/Data",),
    secrets=("/Library/Application Support/acqharvest/token",),
)
PROGRAM = Program("/opt/acqharvest/bin/acqharvest")


def test_install_writes_the_job_and_bootstraps_it() -> None:
    steps = plan(Request("install", "macos", PROGRAM, PATHS, user="_acqharvest"))

    assert steps[:3] == [
        SetAccess(PATHS.config, 0o600, "_acqharvest"),
        SetAccess(PATHS.secrets[0], 0o600, "_acqharvest"),
        MakeFolder(PATHS.state_dir, 0o750, "_acqharvest"),
    ]
    written = steps[3]
    assert isinstance(written, WriteFile)
    assert (written.path, written.mode, written.owner, written.group) == (
        PLIST_PATH,
        0o644,
        "root",
        "wheel",
    )
    assert plistlib.loads(written.content.encode()) == job(PROGRAM.executable, PATHS, "_acqharvest")
    assert steps[4:] == [
        Run(("launchctl", "bootout", "system/org.acqharvest.agent"), may_fail=True),
        Run(("launchctl", "enable", "system/org.acqharvest.agent")),
        Run(("launchctl", "bootstrap", "system", PLIST_PATH)),
    ]


def test_the_job_runs_this_installation_with_its_config() -> None:
    document = job(PROGRAM.executable, PATHS, "_acqharvest")
    assert document["ProgramArguments"] == [
        "/opt/acqharvest/bin/acqharvest",
        "run",
        "--config",
        "/Library/Application Support/acqharvest/acqharvest.yaml",
    ]
    assert document["UserName"] == "_acqharvest"
    assert document["KeepAlive"] == {"SuccessfulExit": False}
    assert "UserName" not in job(PROGRAM.executable, PATHS, None)  # root, launchd's default


def test_the_packaged_plist_is_the_generated_one() -> None:
    committed = (REPO / "packaging" / "macos" / "org.acqharvest.agent.plist").read_text(
        encoding="utf-8"
    )
    assert committed == packaged_plist(), (
        "packaging/macos/org.acqharvest.agent.plist is stale; regenerate it with\n"
        '  python -c "from acqharvest.service_launchd import packaged_plist; '
        "print(packaged_plist(), end='')\" > packaging/macos/org.acqharvest.agent.plist"
    )


def test_uninstall_start_stop() -> None:
    assert plan(Request("uninstall", "macos", PROGRAM)) == [
        Run(("launchctl", "bootout", "system/org.acqharvest.agent"), may_fail=True),
        Remove(PLIST_PATH),
    ]
    assert plan(Request("uninstall", "macos", PROGRAM, PATHS, purge=True))[2:] == [
        Remove(PATHS.state_dir, tree=True),
        Remove(PATHS.config),
    ]
    assert plan(Request("start", "macos", PROGRAM)) == [
        Run(("launchctl", "kickstart", "system/org.acqharvest.agent"))
    ]
    assert plan(Request("stop", "macos", PROGRAM)) == [
        Run(("launchctl", "kill", "SIGTERM", "system/org.acqharvest.agent"))
    ]


LAUNCHCTL_PRINT = """system/org.acqharvest.agent = {
\tactive count = 1
\tpath = /Library/LaunchDaemons/org.acqharvest.agent.plist
\ttype = LaunchDaemon
\tstate = running

\tprogram = /opt/acqharvest/bin/acqharvest
\tpid = 412
}
"""


def test_status_is_read_from_launchctl_print() -> None:
    running = parse_status(0, LAUNCHCTL_PRINT)
    assert (running.installed, running.running, running.detail) == (True, True, "running")
    waiting = parse_status(0, LAUNCHCTL_PRINT.replace("state = running", "state = waiting"))
    assert (waiting.installed, waiting.running) == (True, False)
    missing = parse_status(
        113, 'Could not find service "org.acqharvest.agent" in domain for system'
    )
    assert (missing.installed, missing.running) == (False, False)
