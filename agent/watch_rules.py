"""What a watch folder reports about a path: its identity, whether it matches the include and
exclude patterns, and whether it is harvested, skipped or refused (each refusal reported once).

File identity (``file_identity``) is ``device:inode:ctime_ns``. Neither the inode (reused
after a delete; unstable on some SMB mounts) nor a fingerprint of the first bytes (many
files share headers) tells two versions apart. The state registry treats a file as the
version it harvested when path, size and mtime match and the ctime matches too, and also
the inode when the device is the same (a remount changes the device number and may
renumber inodes). Anything else is read again, and the content sha256 computed then
decides: the same digest only refreshes the record, a different one gives a new package
with ``replaces``. So inode reuse, a same-size same-mtime rewrite in place, and a file
swapped for another with an identical header are all harvested again, and a remount
re-reads but never re-sends.

What is watched and what is refused. Only regular files are reported. Nothing is ever
followed through a symbolic link below the root (the root itself may be a link): a link
that resolves inside the root is skipped quietly (its target is harvested under its own
name), a link leading outside the root or into a loop is refused. FIFOs, sockets and
device files are refused without being opened (opening a FIFO blocks). A folder that
cannot be listed is refused until it can. Each refusal is a FileRefused, logged once as
``watch_refused`` naming the path and the reason. A scan enters a folder only through its
parent's open descriptor (``watch_scan``): a folder swapped for a link after it was listed,
while the scan was busy elsewhere, is not entered either.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import functools
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import structlog

from acqharvest.model import FileGone, FileRefused, FileSeen

log = structlog.get_logger("acqharvest.watch")

Emit = Callable[[FileSeen | FileGone | FileRefused], None]
Source = Literal["event", "scan", "closed"]

_VANISHED = (FileNotFoundError, NotADirectoryError)


def _path_max() -> int | None:
    """Bytes a path given to the system may hold, its final NUL included; None if unknown."""
    pathconf = getattr(os, "pathconf", None)  # Windows has none
    if pathconf is None:
        return None
    try:
        return int(pathconf("/", "PC_PATH_MAX"))
    except (OSError, ValueError):
        return None


#: a scan reaches deeper than this through open folders, but no reader can open such a path
_PATH_MAX = _path_max()


def too_long(path: str) -> str | None:
    """Why nothing can open ``path`` by its name (longer than PATH_MAX), or None."""
    length = len(os.fsencode(path))
    if _PATH_MAX is None or length < _PATH_MAX:
        return None
    return (
        f"its path is {length} bytes long, longer than the system allows (PATH_MAX "
        f"{_PATH_MAX}, the final NUL included): it cannot be opened by name; shorten its "
        "folder names"
    )


def file_identity(st: os.stat_result) -> str:
    """``device:inode:ctime_ns``: changes whenever the file is replaced or its inode changed.

    On Windows the inode is the file index and the ctime the creation time.
    """
    return f"{st.st_dev}:{st.st_ino}:{st.st_ctime_ns}"


def matches(relpath: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Whether a posix path relative to the watch root is watched.

    A pattern matches the basename or the whole relative path (``*`` also crosses ``/``), so
    ``*.tmp`` works at any depth and ``cache/*`` names one folder. Exclude patterns also
    match any parent folder, by name or by path, so excluding ``.git`` excludes its files.
    """
    name = relpath.rsplit("/", 1)[-1]
    included = _compiled(tuple(include))
    if not (included.match(name) or included.match(relpath)):
        return False
    if not exclude:
        return True
    excluded = _compiled(tuple(exclude))
    parts = relpath.split("/")
    candidates = {name, relpath, *parts[:-1]}
    candidates.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return not any(excluded.match(candidate) for candidate in candidates)


@functools.lru_cache(maxsize=256)
def _compiled(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """All patterns as one regex: scans test every file, so this runs millions of times."""
    if not patterns:
        return re.compile(r"(?!)")
    # Windows file names are case-insensitive, as fnmatch.fnmatch treats them there.
    flags = re.IGNORECASE if os.name == "nt" else 0
    return re.compile("|".join(fnmatch.translate(p) for p in patterns), flags)


def is_folder(path: Path) -> bool:
    """False for a missing folder and for one that cannot be reached right now.

    ``Path.is_dir`` raises on EACCES, ESTALE or EIO (a share that dropped); here any of
    those means "unavailable for now", never a reason to stop.
    """
    try:
        return os.path.isdir(path)
    except OSError:
        return False


def _inside(path: str, real_root: str) -> bool:
    return path == real_root or path.startswith(real_root.rstrip(os.sep) + os.sep)


def _refusal(path: Path, st: os.stat_result, real_root: str) -> str | None:
    """Why a non-regular file is refused, or None when it is skipped without a word."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        try:
            os.stat(path)
        except OSError as error:
            if error.errno == errno.ELOOP:
                return "a symbolic link loop: never followed"
            # A dangling link: nothing to read.
            return None
        target = os.path.realpath(path)
        if _inside(target, real_root):
            return None  # harvested under its own name
        return f"a symbolic link to {target}, outside the watch folder: never followed"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO): never opened"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file: never opened"
    if stat.S_ISSOCK(mode):
        return "a socket: never opened"
    return None


def examine(path: Path, root: Path, source: Source) -> FileSeen | FileRefused | None:
    """FileSeen for a regular file below the root, FileRefused for what must not be read.

    None for a directory, a file already gone, or a link whose target is harvested anyway.
    The folder holding ``path`` must also resolve inside the root, so a folder swapped for
    a link to elsewhere cannot lead a read outside it.
    """
    if (reason := too_long(str(path))) is not None:
        return FileRefused(path, root, reason)
    st = lstat_or_none(path, functools.partial(os.lstat, path))
    if st is None:
        return None
    real_root = os.path.realpath(root)
    if stat.S_ISREG(st.st_mode) and not _inside(os.path.realpath(path.parent), real_root):
        return FileRefused(path, root, "reached through a link that leads outside the folder")
    return classified(path, root, source, st, real_root)


def lstat_or_none(path: Path, lstat: Callable[[], os.stat_result]) -> os.stat_result | None:
    """``lstat()`` of ``path``; None when the file is gone or cannot be stat'ed (logged)."""
    try:
        return lstat()
    except _VANISHED:
        return None
    except OSError as exc:
        log.warning("watch_stat_failed", path=str(path), error=str(exc))
        return None


def classified(
    path: Path, root: Path, source: Source, st: os.stat_result, real_root: str
) -> FileSeen | FileRefused | None:
    """What ``examine`` reports for ``path`` with this ``lstat``, its folder known inside."""
    if not stat.S_ISREG(st.st_mode):
        reason = _refusal(path, st, real_root)
        return None if reason is None else FileRefused(path, root, reason)
    if (reason := too_long(str(path))) is not None:
        return FileRefused(path, root, reason)
    return FileSeen(
        path=path,
        root=root,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        file_id=file_identity(st),
        seen_at=time.time(),
        source=source,
    )


def stat_file(path: Path, root: Path, source: Source) -> FileSeen | None:
    """FileSeen for a regular file inside the root, None for anything else or a file gone."""
    seen = examine(path, root, source)
    return seen if isinstance(seen, FileSeen) else None


class OwnPaths:
    """The daemon's own folders and files (state dir, log file, endpoint folder), known by
    device and inode: never harvested, whatever path leads there.

    The config refuses them inside a watched folder, but a path it cannot see may lead
    there still: a watch root that is a link retargeted after start, a bind mount. Harvested,
    they would package the daemon's secret and registry, and its own output over and over.
    Their identities are taken again at every scan (a folder recreated, a log rotated).
    """

    def __init__(self, paths: Sequence[tuple[str, Path]]) -> None:
        #: (config key, path) of each
        self._paths = tuple(paths)
        self._known: dict[tuple[int, int], str] = {}
        #: ``within`` of each watch folder, by its real path
        self._roots: dict[str, str | None] = {}

    def refresh(self) -> None:
        known: dict[tuple[int, int], str] = {}
        for key, path in self._paths:
            with contextlib.suppress(OSError, ValueError):
                st = os.stat(path)
                known[(st.st_dev, st.st_ino)] = f"acqharvest's own {key} ({path}): never harvested"
        # each one assignment: observer threads read them meanwhile
        self._known = known
        self._roots = {}

    def refusal(self, st: os.stat_result) -> str | None:
        """Why the file or folder with this stat is not harvested; None when it is not ours."""
        return self._known.get((st.st_dev, st.st_ino)) if self._known else None

    def within(self, path: str) -> str | None:
        """``refusal`` of ``path`` or of the first folder above it that is ours."""
        return self._walk(path, "") if self._known else None

    def holding(self, path: str, root: str) -> str | None:
        """``within`` for a path below the watch folder ``root``: the folders from ``root``
        up are looked at once per refresh, not for every event."""
        if not self._known:
            return None
        if reason := self._walk(path, root):
            return reason
        if root not in self._roots:
            self._roots[root] = self._walk(root, "")
        return self._roots[root]

    def _walk(self, path: str, stop: str) -> str | None:
        """``refusal`` of ``path`` or of a folder above it, up to (not including) ``stop``."""
        while path != stop:
            with contextlib.suppress(OSError, ValueError):
                if reason := self.refusal(os.stat(path)):
                    return reason
            parent = os.path.dirname(path)
            if parent == path:
                return None
            path = parent
        return None


class Refusals:
    """Paths refused so far, so each is reported once (again only after it was fine)."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._lock = threading.Lock()
        self._reasons: dict[Path, str] = {}

    def report(self, found: FileSeen | FileRefused | None) -> None:
        if found is None:
            return
        if isinstance(found, FileSeen):
            if self._reasons:
                with self._lock:
                    self._reasons.pop(found.path, None)
            self._emit(found)
            return
        with self._lock:
            if self._reasons.get(found.path) == found.reason:
                return
            self._reasons[found.path] = found.reason
        log.warning("watch_refused", path=str(found.path), reason=found.reason)
        self._emit(found)

    def cleared(self, path: Path) -> None:
        if self._reasons:
            with self._lock:
                self._reasons.pop(path, None)
