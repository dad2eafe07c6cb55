"""The state dir: where the daemon keeps what it writes, and whether it can write there.

Layout under ``state_dir`` (``state_paths``): ``outbox/`` (the spool, see ``outbox``),
``state.sqlite3`` (the registry, see ``state``), ``secret.key`` (the per-installation key
for consistent UID replacement, 32 bytes, mode 0600) and ``daemon.lock`` (held by the one
daemon running on it). The log file defaults to ``acqharvest.log`` there too.

Health is judged three ways, each for one reader:

- ``state_dir_problems``: what ``acqharvest status`` shows, read without writing
  (not writable, or less than 16 MiB free);
- ``StorageHealth``: what the running daemon logs when a write fails, an error when a
  problem starts or changes and a debug line while it lasts, and once when it is over;
- ``recreate``: the folder deleted under a running daemon is made again, its lock held
  again and the same secret written back, so de-identification stays consistent.

Nothing here touches a watched folder.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from acqharvest import logs
from acqharvest.durable import (
    InstanceLock,
    StorageError,
    error_code,
    fsync_dir,
    replace_durably,
)
from acqharvest.model import Settings

log = logs.get_logger("acqharvest.statedir")

#: free space in the state dir below which ``status`` warns
_LOW_SPACE_BYTES = 16 * 2**20
_SECRET_BYTES = 32


def log_file_of(settings: Settings) -> Path:
    return settings.log.file or settings.state_dir / "acqharvest.log"


def own_paths(settings: Settings) -> tuple[tuple[str, Path], ...]:
    """What the daemon writes, by config key: the watcher never harvests it, by any path."""
    endpoint = settings.endpoint.path
    own = (("state_dir", settings.state_dir), ("log file", log_file_of(settings)))
    return own if endpoint is None else (*own, ("endpoint.path", endpoint))


def instance_lock_path(settings: Settings) -> Path:
    """The file a running daemon holds locked: one daemon per state dir."""
    return settings.state_dir / "daemon.lock"


def state_paths(settings: Settings) -> tuple[Path, Path, Path]:
    """(outbox folder, registry database, per-installation secret) under the state dir."""
    root = settings.state_dir
    return root / "outbox", root / "state.sqlite3", root / "secret.key"


def installation_secret(path: Path) -> bytes:
    """The key for consistent UID replacement; created once, readable by the owner only."""
    with contextlib.suppress(FileNotFoundError):
        value = path.read_bytes()
        if len(value) == _SECRET_BYTES:
            return value
        # Only a crash while creating it leaves a short key, before any package used it.
        log.warning("secret_replaced", path=str(path), reason="incomplete key file")
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_bytes(_SECRET_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    replace_durably(tmp, path, value, mode=0o600)
    fsync_dir(path.parent)
    return value


def state_dir_problems(folder: Path) -> list[str]:
    """Why the daemon cannot write its state dir now, if it cannot."""
    if not folder.is_dir():
        return []  # never ran here (or deleted: the daemon recreates it)
    if not os.access(folder, os.W_OK | os.X_OK):
        return [f"state dir {folder}: not writable (read-only file system or permissions)"]
    free = shutil.disk_usage(folder).free
    if free < _LOW_SPACE_BYTES:
        return [f"state dir {folder}: only {free} bytes free; packages cannot be spooled"]
    return []


class StorageHealth:
    """Logs state-dir write failures once per problem, and once when writing works again."""

    def __init__(self) -> None:
        #: (code, path) of the state dir's current write failure, to log each problem once
        self._problem: tuple[str | None, str] | None = None

    @property
    def problem(self) -> str | None:
        """The write failure going on (for the status server), None while writes work."""
        if self._problem is None:
            return None
        code, path = self._problem
        return f"cannot write {path}" + (f" ({code})" if code else "")

    def failed(self, error: StorageError, **context: Any) -> None:
        """Log a state-dir write failure: an error when it starts or changes, debug after."""
        problem = (error.code, str(error.path))
        level = log.debug if problem == self._problem else log.error
        self._problem = problem
        level(
            "state_dir_unwritable",
            path=str(error.path),
            errno=error.code,
            error=str(error),
            action="harvested again at the next scan once it is writable",
            **context,
        )

    def ok(self) -> None:
        if self._problem is not None:
            log.info("state_dir_writable_again", path=self._problem[1])
            self._problem = None


def recreate(settings: Settings, instance: InstanceLock, secret: bytes) -> None:
    """Make the state dir deleted under the running daemon again: folder, lock and secret.

    The outbox folders and the registry are the caller's to open again. Raises
    ``StorageError`` when it cannot be made.
    """
    _, _, secret_path = state_paths(settings)
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        # the lock went with the folder: hold the new one, so no second daemon starts
        instance.release()
        instance.acquire()
        replace_durably(
            secret_path.with_name(f".{secret_path.name}.tmp"),
            secret_path,
            secret,
            mode=0o600,
        )
    except OSError as error:
        raise StorageError(
            f"cannot recreate {settings.state_dir}: {error}",
            settings.state_dir,
            error_code(error),
        ) from error
