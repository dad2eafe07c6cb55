"""``acqharvest service install | uninstall | start | stop | status``: plan, then run or print.

The planners (``service_systemd``, ``service_windows``, ``service_launchd``) decide what to
do; this module gathers what they need from the running installation and the config, and
is the one place that touches the system: ``apply`` runs a plan's steps in order (stopping
at the first that fails), ``--dry-run`` prints them with every file's content, mode and
owner and does nothing. ``root`` re-roots every file step below a folder and
``run_commands=False`` leaves commands out, so a plan's files can be written and checked
without privileges.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

from acqharvest.durable import replace_durably
from acqharvest.model import Settings
from acqharvest.service_plan import (
    Action,
    FromEnv,
    MakeFolder,
    PlanError,
    Platform,
    Program,
    Remove,
    Request,
    Run,
    ServicePaths,
    ServiceState,
    SetAccess,
    Step,
    WriteFile,
)
from acqharvest.statedir import log_file_of

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def planner(platform: Platform) -> ModuleType:
    """The module that plans for ``platform`` (``plan``, ``status_command``, ``parse_status``)."""
    from acqharvest import service_launchd, service_systemd, service_windows

    return {"linux": service_systemd, "windows": service_windows, "macos": service_launchd}[
        platform
    ]


_PLATFORMS: dict[str, Platform] = {"win32": "windows", "darwin": "macos"}


def this_platform() -> Platform:
    return _PLATFORMS.get(sys.platform, "linux")


def default_config(platform: Platform) -> str:
    default: str = planner(platform).DEFAULT_CONFIG
    return default


def plan(request: Request) -> list[Step]:
    steps: list[Step] = planner(request.platform).plan(request)
    return steps


def paths_of(settings: Settings, config: Path) -> ServicePaths:
    """What the plans need from a loaded config."""
    state_dir = settings.state_dir
    log_dir = log_file_of(settings).parent
    endpoint = settings.endpoint
    return ServicePaths(
        config=str(config),
        state_dir=str(state_dir),
        log_dir=None if log_dir.is_relative_to(state_dir) else str(log_dir),
        endpoint_dir=str(endpoint.path) if endpoint.type == "directory" and endpoint.path else None,
        watch=tuple(str(folder.path) for folder in settings.watch),
        secrets=_secrets(settings),
    )


def _secrets(settings: Settings) -> tuple[str, ...]:
    """Files only the service account may read: the endpoint's token and client key, and the
    status server's token. Each is read at start, and a service that cannot read one exits."""
    status = settings.status_server
    named = (
        settings.endpoint.token_file,
        settings.endpoint.client_key,
        None if status is None else status.token_file,
    )
    return tuple(dict.fromkeys(str(path) for path in named if path is not None))


def this_program(platform: Platform) -> Program:
    """How the service manager starts this installation (the interpreter running now)."""
    if platform != "windows":
        # beside the interpreter, unresolved: a venv's python is a link out of the venv
        script = Path(sys.executable).parent / "acqharvest"
        if not script.is_file():
            raise PlanError(f"no acqharvest executable beside {sys.executable} ({script})")
        return Program(str(script))
    spec = importlib.util.find_spec("servicemanager")
    if spec is None:
        raise PlanError("pywin32 is missing: pip install 'acqharvest[windows]'")
    in_venv = sys.prefix != sys.base_prefix
    return Program(
        # a venv's python.exe is a launcher that starts the real one as a child
        executable=getattr(sys, "_base_executable", sys.executable),
        venv_python=sys.executable if in_venv else None,
        event_messages=spec.origin,
    )


# --------------------------------------------------------------------------- describing


def _owner(owner: str | None, group: str | None) -> str:
    return f"{owner or ''}{':' + group if group else ''}"


def _access(mode: int | None, owner: str | None, group: str | None) -> str:
    parts = ([f"mode {mode:04o}"] if mode is not None else []) + (
        [f"owner {_owner(owner, group)}"] if owner or group else []
    )
    return f" ({', '.join(parts)})" if parts else ""


def _command(argv: tuple[str | FromEnv, ...], platform: Platform) -> str:
    words = [f"<${word.variable}>" if isinstance(word, FromEnv) else word for word in argv]
    return subprocess.list2cmdline(words) if platform == "windows" else shlex.join(words)


def describe(step: Step, platform: Platform) -> str:
    """One step in words, as ``--dry-run`` prints it (a file's content follows, indented)."""
    if isinstance(step, Run):
        line = f"run: {_command(step.argv, platform)}"
        if step.unless is not None:
            line += f"  (unless `{_command(step.unless, platform)}` succeeds)"
        return line + ("  (a failure is reported and ignored)" if step.may_fail else "")
    if isinstance(step, WriteFile):
        content = "".join(f"    {line}" for line in step.content.splitlines(keepends=True))
        return f"write {step.path}{_access(step.mode, step.owner, step.group)}:\n{content}"
    if isinstance(step, MakeFolder):
        when = "" if step.take_over else " if missing"
        return f"make folder {step.path}{_access(step.mode, step.owner, step.group)}{when}"
    if isinstance(step, SetAccess):
        return f"set {step.path}{_access(step.mode, step.owner, step.group)}"
    return f"remove {'folder ' if step.tree else ''}{step.path}" + (
        " and everything in it" if step.tree else ""
    )


# --------------------------------------------------------------------------- applying


class StepFailed(Exception):
    """A step failed; the message names it and why."""


def apply(
    steps: Sequence[Step],
    platform: Platform,
    *,
    root: Path | None = None,
    run_commands: bool = True,
    say: Callable[[str], None] = print,
) -> None:
    """Run ``steps`` in order, saying each; raises ``StepFailed`` at the first failure."""
    for step in steps:
        say(describe(step, platform).splitlines()[0].removesuffix(":"))
        if isinstance(step, Run):
            if run_commands:
                _run(step, platform, say)
            continue
        path = Path(step.path) if root is None else root / step.path.lstrip("/\\")
        try:
            _apply_file_step(step, path)
        except (OSError, LookupError) as error:
            raise StepFailed(f"{describe(step, platform).splitlines()[0]}: {error}") from error


def _apply_file_step(step: WriteFile | MakeFolder | SetAccess | Remove, path: Path) -> None:
    if isinstance(step, Remove):
        if step.tree:
            if path.is_dir():
                shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        return
    if isinstance(step, WriteFile):
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_durably(path.with_name(f".{path.name}.tmp"), path, step.content.encode())
    elif isinstance(step, MakeFolder):
        if path.is_dir() and not step.take_over:
            return
        path.mkdir(parents=True, exist_ok=True)
    elif not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if step.mode is not None:
        os.chmod(path, step.mode)
    if step.owner and step.group:
        shutil.chown(path, step.owner, step.group)
    elif step.owner:
        shutil.chown(path, step.owner)
    elif step.group:
        shutil.chown(path, group=step.group)


def _run(step: Run, platform: Platform, say: Callable[[str], None]) -> None:
    if step.unless is not None:
        check = subprocess.run(step.unless, capture_output=True, check=False)
        if check.returncode == 0:
            say("  skipped: already done")
            return
    argv = [_resolve(word) for word in step.argv]
    try:
        returncode = subprocess.run(argv, check=False).returncode
    except OSError as error:
        reason = str(error)
    else:
        if returncode == 0:
            return
        reason = f"exit status {returncode}"
    message = f"{_command(step.argv, platform)} failed: {reason}"
    if not step.may_fail:
        raise StepFailed(message)
    say(f"  {message} (ignored)")


def _resolve(word: str | FromEnv) -> str:
    if isinstance(word, str):
        return word
    value = os.environ.get(word.variable)
    if not value:
        raise StepFailed(f"set the environment variable {word.variable} (the account's password)")
    return value


def service_state(platform: Platform) -> ServiceState:
    """Ask the service manager (``systemctl show``, ``sc.exe query``, ``launchctl print``)."""
    module = planner(platform)
    command: Run = module.status_command()
    argv = [_resolve(word) for word in command.argv]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as error:
        return ServiceState(False, False, f"{argv[0]}: {error}")
    state: ServiceState = module.parse_status(result.returncode, result.stdout + result.stderr)
    return state


# --------------------------------------------------------------------------- the command


def command(
    action: Action, config: Path | None, user: str | None, *, dry_run: bool, purge: bool
) -> int:
    """``acqharvest service ACTION``: the exit status, after printing what happened."""
    platform = this_platform()
    if action == "status" and not dry_run:
        state = service_state(platform)
        print(
            f"acqharvest service: {'installed' if state.installed else 'not installed'}, "
            f"{'running' if state.running else 'not running'} ({state.detail})"
        )
        if state.installed and not state.running:
            print("run `acqharvest doctor` to see what is wrong")
        return EXIT_OK if state.running else EXIT_FAILED
    config_path = Path(config or default_config(platform)).absolute()
    paths = None
    if action == "install" or (action == "uninstall" and purge):
        from acqharvest.config import ConfigError, load_settings

        try:
            paths = paths_of(load_settings(config_path), config_path)
        except ConfigError as error:
            for message in error.messages:
                print(f"config error: {message}", file=sys.stderr)
            return EXIT_CONFIG
    try:
        program = this_program(platform) if action == "install" else Program(sys.executable)
        steps = plan(Request(action, platform, program, paths, user, purge))
    except PlanError as error:
        print(f"acqharvest service {action}: {error}", file=sys.stderr)
        return EXIT_FAILED
    if dry_run:
        for step in steps:
            print(describe(step, platform))
        return EXIT_OK
    if sys.platform != "win32" and os.geteuid() != 0:
        print(
            f"acqharvest service {action}: run it as root (sudo), or with --dry-run",
            file=sys.stderr,
        )
        return EXIT_FAILED
    try:
        apply(steps, platform)
    except StepFailed as error:
        print(f"acqharvest service {action}: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
