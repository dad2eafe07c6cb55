"""Crash-safe writes in acqharvest's own folders (state dir, directory endpoint).

Never used on instrument folders: those are only ever read, through ``readonly``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path


class StorageError(Exception):
    """A write in acqharvest's own folders failed: names the path and the system's code.

    ``code`` is the errno name (``ENOSPC``, ``EROFS``, ``ENOENT``...) or SQLite's error
    name (``SQLITE_FULL``, ``SQLITE_READONLY``...), or None when not a system error.
    """

    def __init__(self, message: str, path: Path, code: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.code = code


def error_code(error: BaseException) -> str | None:
    """The errno name of an OSError, SQLite's name of a sqlite3 error, else None."""
    number = getattr(error, "errno", None)
    if isinstance(number, int):
        return errno.errorcode.get(number, str(number))
    name = getattr(error, "sqlite_errorname", None)
    return name if isinstance(name, str) else None


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (POSIX)."""
    # Windows cannot open a directory for fsync; NTFS journals the rename metadata itself.
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(tmp: Path, target: Path, data: bytes, *, mode: int = 0o666) -> None:
    """Write ``data`` to the new file ``tmp``, fsync it, then rename it over ``target``.

    Readers see the old file or the whole new one, never a part; ``tmp`` is removed on
    failure. ``mode`` is filtered by the umask, as for ``open``. The caller fsyncs the
    folder (once for many files, when it batches).
    """
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def writable_folder(folder: Path) -> tuple[bool, str]:
    """(ok, detail): can this user write ``folder``, or create it? Creates nothing."""
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return False, f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return False, f"{existing} is not writable by this user"
    return True, "writable" if existing == folder else "can be created"


class InstanceHeld(Exception):
    """Another process holds the instance lock of this state dir."""


#: where the lock byte sits on Windows: past any pid text, which other processes must read.
_LOCK_OFFSET = 1 << 20


class InstanceLock:
    """An exclusive lock on a file that lives as long as the process holds it open.

    One daemon per state dir: a second one (or a ``run --once`` beside the service) would
    delete the first one's in-progress outbox files and send packages twice. The lock is
    released by the operating system when the process ends, however it ends, so a crash
    never leaves a stale lock behind. The file holds the owner's pid, for the message.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``InstanceHeld`` naming the process that has it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
        try:
            _lock(fd)
        except OSError:
            os.lseek(fd, 0, os.SEEK_SET)
            owner = os.read(fd, 64)
            os.close(fd)
            pid = owner.decode("ascii", errors="replace").strip() or "unknown"
            raise InstanceHeld(
                f"another acqharvest process (pid {pid}) is running with this state dir "
                f"(it holds {self.path}); stop it first, or give this one its own state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None


if sys.platform == "win32":
    import msvcrt

    def _lock(fd: int) -> None:
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
