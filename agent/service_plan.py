"""What installing, removing, starting or stopping the service takes, as plain steps.

The ``service`` command is split in two so that what it does can be read and tested on
any machine: the planners (``service_systemd``, ``service_windows``, ``service_launchd``)
turn a ``Request`` into an ordered list of ``Step`` values, touching nothing; one executor
(``service_install``) runs the steps, or prints them for ``--dry-run``. A planner receives
every path as text in its platform's own syntax, so the Windows plan is computed (and
tested) on Linux exactly as on Windows.

Nothing here looks at the machine: a step that depends on its state says so
(``Run.unless``, ``MakeFolder.take_over``, ``Run.may_fail``) and the executor decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Platform = Literal["linux", "windows", "macos"]
Action = Literal["install", "uninstall", "start", "stop", "status"]

#: the service's name everywhere: the unit, the Windows service, the default account
SERVICE_NAME = "acqharvest"
DESCRIPTION = (
    "acqharvest: harvests acquisition metadata from instrument output folders and delivers "
    "it to the archive"
)


@dataclass(frozen=True, slots=True)
class FromEnv:
    """A secret command argument read from an environment variable when the step runs.

    The plan, and ``--dry-run``, only ever hold the variable's name.
    """

    variable: str


Argument = str | FromEnv


@dataclass(frozen=True, slots=True)
class Run:
    """Run a command (an argument list, never a shell line)."""

    argv: tuple[Argument, ...]
    #: skip the command when this one succeeds (e.g. ``id -u acqharvest`` before ``useradd``)
    unless: tuple[str, ...] | None = None
    #: a failure is reported and the plan goes on (stopping what may not be running)
    may_fail: bool = False


@dataclass(frozen=True, slots=True)
class WriteFile:
    """Write ``content`` to ``path`` (replacing it), then set its mode and owner."""

    path: str
    content: str
    mode: int | None = None
    owner: str | None = None
    group: str | None = None


@dataclass(frozen=True, slots=True)
class MakeFolder:
    """Make a folder (and its parents) with this mode and owner."""

    path: str
    mode: int | None = None
    owner: str | None = None
    group: str | None = None
    #: an existing folder gets the mode and owner too; False leaves an existing folder as
    #: it is (a folder the admin may share with others, such as a delivery folder)
    take_over: bool = True


@dataclass(frozen=True, slots=True)
class SetAccess:
    """Give an existing file this mode and owner (the config and token the admin wrote)."""

    path: str
    mode: int
    owner: str | None = None
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Remove:
    """Remove a file, or a folder with everything in it; nothing there is fine."""

    path: str
    tree: bool = False


Step = Run | WriteFile | MakeFolder | SetAccess | Remove


@dataclass(frozen=True, slots=True)
class ServicePaths:
    """The paths the service needs, from its config, as text in the platform's syntax."""

    config: str
    state_dir: str
    #: the log file's folder when it is not inside the state dir
    log_dir: str | None = None
    #: the delivery folder of a ``directory`` endpoint
    endpoint_dir: str | None = None
    watch: tuple[str, ...] = ()
    #: files the service reads that nobody else should (the endpoint token)
    secrets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Program:
    """How the service manager starts this installation of acqharvest."""

    #: the ``acqharvest`` executable (Linux, macOS) or the real ``python.exe`` (Windows)
    executable: str
    #: Windows, in a virtual environment: the venv's ``python.exe`` the interpreter is
    #: told about (``__PYVENV_LAUNCHER__``), so it uses the venv's packages
    venv_python: str | None = None
    #: Windows: pywin32's ``servicemanager`` module, the message file of the event log
    event_messages: str | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """One ``acqharvest service`` command, with everything its plan depends on."""

    action: Action
    platform: Platform
    program: Program
    #: None for the actions that do not read the config (start, stop, status, uninstall)
    paths: ServicePaths | None = None
    #: the account the service runs as; None: the platform's default
    user: str | None = None
    #: uninstall also removes the state dir, the config and the service account
    purge: bool = False


@dataclass(frozen=True, slots=True)
class ServiceState:
    """What ``service status`` found."""

    installed: bool
    running: bool
    #: the service manager's own words (``active (running)``, ``STOPPED``, ...)
    detail: str


class PlanError(Exception):
    """The request cannot be planned (a missing path, an account that cannot work)."""


def needs_paths(request: Request) -> ServicePaths:
    """The request's paths; the CLI loads the config for every action that needs them."""
    if request.paths is None:
        raise PlanError(f"service {request.action} needs the config's paths")
    return request.paths
