"""The macOS plan: a launchd daemon in ``/Library/LaunchDaemons``, loaded with ``launchctl``.

``plist_text`` is the one source of the job: ``service install`` writes it with this
installation's paths, and ``packaging/macos/org.acqharvest.agent.plist`` is the same job
for the default paths (a test keeps the two equal). launchd runs a daemon as root unless
the job names a ``UserName``: ``--user`` names an existing account to run it as.
"""

from __future__ import annotations

import plistlib
from typing import Any

from acqharvest.service_plan import (
    MakeFolder,
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

LABEL = "org.acqharvest.agent"
PLIST_PATH = f"/Library/LaunchDaemons/{LABEL}.plist"
DEFAULT_CONFIG = "/Library/Application Support/acqharvest/acqharvest.yaml"
#: what the daemon writes before its log is set up (a config error) goes here
ERROR_LOG = "/Library/Logs/acqharvest.err.log"
_TARGET = f"system/{LABEL}"


def job(executable: str, paths: ServicePaths, user: str | None) -> dict[str, Any]:
    """The launchd job as a dictionary."""
    document: dict[str, Any] = {
        "Label": LABEL,
        "ProgramArguments": [executable, "run", "--config", paths.config],
        "RunAtLoad": True,
        # restarted when it fails, not after a clean stop
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 10,
        # SIGTERM stops it cleanly; launchd waits this long before SIGKILL
        "ExitTimeOut": 30,
        "StandardErrorPath": ERROR_LOG,
    }
    if user is not None:
        document["UserName"] = user
    return document


def plist_text(executable: str, paths: ServicePaths, user: str | None) -> str:
    return plistlib.dumps(job(executable, paths, user), sort_keys=False).decode()


def packaged_plist() -> str:
    """``packaging/macos/org.acqharvest.agent.plist``: the job for the default paths."""
    paths = ServicePaths(config=DEFAULT_CONFIG, state_dir="/Library/Application Support/acqharvest")
    return plist_text("/opt/acqharvest/bin/acqharvest", paths, None)


def plan(request: Request) -> list[Step]:
    if request.action == "install":
        return _install(request)
    if request.action == "uninstall":
        steps: list[Step] = [
            Run(("launchctl", "bootout", _TARGET), may_fail=True),
            Remove(PLIST_PATH),
        ]
        if request.purge:
            paths = needs_paths(request)
            steps += [Remove(paths.state_dir, tree=True), Remove(paths.config)]
        return steps
    if request.action == "start":
        return [Run(("launchctl", "kickstart", _TARGET))]
    if request.action == "stop":
        # a clean exit: KeepAlive does not start it again (until the next boot or start)
        return [Run(("launchctl", "kill", "SIGTERM", _TARGET))]
    return [status_command()]


def _install(request: Request) -> list[Step]:
    paths = needs_paths(request)
    owner = request.user or "root"
    return [
        SetAccess(paths.config, 0o600, owner),
        *(SetAccess(secret, 0o600, owner) for secret in paths.secrets),
        MakeFolder(paths.state_dir, 0o750, owner),
        *(
            MakeFolder(folder, 0o750, owner, take_over=False)
            for folder in (paths.log_dir, paths.endpoint_dir)
            if folder is not None
        ),
        # launchd refuses a job file not owned by root or writable by others
        WriteFile(
            PLIST_PATH,
            plist_text(request.program.executable, paths, request.user),
            0o644,
            "root",
            "wheel",
        ),
        # installing again replaces the loaded job
        Run(("launchctl", "bootout", _TARGET), may_fail=True),
        Run(("launchctl", "enable", _TARGET)),
        Run(("launchctl", "bootstrap", "system", PLIST_PATH)),
    ]


def status_command() -> Run:
    return Run(("launchctl", "print", _TARGET))


def parse_status(returncode: int, output: str) -> ServiceState:
    """``launchctl print``: ``state = running`` in the job's block; non-zero: not loaded."""
    if returncode != 0:
        return ServiceState(False, False, "not loaded")
    for line in output.splitlines():
        key, _, value = line.strip().partition(" = ")
        if key == "state":
            return ServiceState(True, value == "running", value)
    return ServiceState(True, False, "unknown")
