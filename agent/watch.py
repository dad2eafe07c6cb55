"""Watchdog observers per watch folder (native or polling) and reconciliation scans.

Turns OS events and directory scans into FileSeen / FileGone / FileRefused by ``lstat``;
never opens a file. The only module that touches watchdog.

Events are hints; scans are the truth. Watching fails silently in the field in known ways,
and each has a check here or in the runtime:

- an observer or emitter thread dies (its folder vanished, a share dropped): ``check_health``
  sees it and restarts the observer; the runtime rescans that folder;
- the watch root is remounted, or deleted and created again: the observer still watches the
  old inode and hears nothing. ``check_health`` compares the root's device, inode and
  resolved path with those at start and restarts on a change;
- an observer thread stalls (a handler blocked in ``stat`` on a hung share): after
  ``stall_seconds`` it is abandoned and replaced;
- the kernel event queue overflows (``IN_Q_OVERFLOW``): watchdog reports it only as a
  warning on its ``watchdog.observers.inotify_c`` logger, which we intercept and turn into
  ``on_lost`` (the runtime rescans at once); the runtime's own event queue is bounded and,
  when full, also turns into a rescan, so an event storm on remount costs one scan, not memory;
- the inotify watch budget (``fs.inotify.max_user_watches``) runs out: watchdog before 7
  skips the subfolders it could not watch without a word, watchdog 7 fails to start the
  observer (``ENOSPC``). We probe the budget after starting and at every health check;
  when it is exhausted a folder in ``auto`` mode drops its native observer and is covered
  by reconciliation scans alone (not polling: the polling observer keeps a stat of every
  file in memory and re-reads the whole tree every interval); a ``native`` folder keeps
  its partial observer where watchdog started one, and is otherwise left to scans too.
  Both log ``watch_limit_reached`` once;
- native events do not see writes made by another host on a network share (SMB, NFS):
  nothing can detect that from here without writing in the folder, which we never do.
  The periodic reconciliation scan (``rescan_seconds``) finds those files; use ``polling``
  mode for such folders when that delay is too long.

Only creation, modification, attribute, move, delete and close-after-write events are
subscribed: open and close-without-write events are left out, since our own scans and
reads would otherwise flood the queue and overflow it.

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
parent's open descriptor (``_Folder``): a folder swapped for a link after it was listed,
while the scan was busy elsewhere, is not entered either.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import functools
import logging
import os
import re
import stat
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog
from watchdog.events import (
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

from acqharvest.model import FileGone, FileRefused, FileSeen, WatchSettings

log = structlog.get_logger(__name__)

Emit = Callable[[FileSeen | FileGone | FileRefused], None]
Source = Literal["event", "scan", "closed"]

#: seconds a stopping observer may take to join before we give up on it.
_JOIN_SECONDS = 5.0
#: a handler busy this long is taken for stalled (a stat hanging on a dead share).
_STALL_SECONDS = 60.0
_VANISHED = (FileNotFoundError, NotADirectoryError)
#: a folder listed a moment ago that is no folder now (ENOTDIR: opened with O_DIRECTORY
#: and O_NOFOLLOW, a symbolic link fails so on Linux; ELOOP or EMLINK elsewhere)
_SWAPPED = (errno.ENOTDIR, errno.ELOOP, errno.EMLINK)
#: what the observers report; open and close-without-write are left out on purpose.
_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
]
#: the message watchdog logs (and acts on internally) when the kernel queue overflowed.
_OVERFLOW_LOGGER = "watchdog.observers.inotify_c"
_OVERFLOW_MESSAGE = "Inotify queue overflowed"
_IN_ONLYDIR = 0x01000000
_IN_DONT_FOLLOW = 0x02000000
_IN_ATTRIB = 0x00000004


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


def _is_folder(path: Path) -> bool:
    """False for a missing folder and for one that cannot be reached right now.

    ``Path.is_dir`` raises on EACCES, ESTALE or EIO (a share that dropped); here any of
    those means "unavailable for now", never a reason to stop.
    """
    try:
        return os.path.isdir(path)
    except OSError:
        return False


def _relpath(path: str, root: Path) -> str | None:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return None


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
    st = _lstat(path, functools.partial(os.lstat, path))
    if st is None:
        return None
    real_root = os.path.realpath(root)
    if stat.S_ISREG(st.st_mode) and not _inside(os.path.realpath(path.parent), real_root):
        return FileRefused(path, root, "reached through a link that leads outside the folder")
    return _classified(path, root, source, st, real_root)


def _lstat(path: Path, lstat: Callable[[], os.stat_result]) -> os.stat_result | None:
    """``lstat()`` of ``path``; None when the file is gone or cannot be stat'ed (logged)."""
    try:
        return lstat()
    except _VANISHED:
        return None
    except OSError as exc:
        log.warning("watch_stat_failed", path=str(path), error=str(exc))
        return None


def _classified(
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


class _Own:
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


class _Refusals:
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


class _Handler(FileSystemEventHandler):
    def __init__(self, ws: WatchSettings, emit: Emit, refusals: _Refusals, own: _Own) -> None:
        self._ws = ws
        self._emit = emit
        self._refusals = refusals
        self._own = own
        # Observers watch the resolved root (and FSEvents reports resolved paths anyway):
        # map their paths back under the root as configured.
        self._real_root = Path(os.path.realpath(ws.path))
        self._real_text = str(self._real_root)
        #: monotonic time the dispatch in progress began; None when idle.
        self.busy_since: float | None = None

    def dispatch(self, event: FileSystemEvent) -> None:
        self.busy_since = time.monotonic()
        try:
            self._handle(event)
        except Exception:  # an exception escaping here would kill the observer thread
            log.exception("watch_event_failed", folder=str(self._ws.path), fs_event=repr(event))
        finally:
            self.busy_since = None

    def _watched(self, path: bytes | str) -> Path | None:
        if not path:
            return None
        text = os.fsdecode(path)
        rel = _relpath(text, self._ws.path)
        if rel is None:
            rel = _relpath(text, self._real_root)
        if rel is None or rel == "." or not matches(rel, self._ws.include, self._ws.exclude):
            return None
        return self._ws.path / rel

    def _seen(self, path: bytes | str, source: Literal["event", "closed"]) -> None:
        target = self._watched(path)
        # Quietly: the daemon writes there all the time; the next scan reports it once.
        if target is not None and self._own.holding(os.fsdecode(path), self._real_text) is None:
            self._refusals.report(examine(target, self._ws.path, source))

    def _gone(self, path: bytes | str) -> None:
        target = self._watched(path)
        if target is not None:
            self._refusals.cleared(target)
            self._emit(FileGone(path=target, root=self._ws.path))

    def _handle(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        kind = event.event_type
        if kind in ("created", "modified", "attrib"):
            self._seen(event.src_path, "event")
        elif kind == "closed":
            self._seen(event.src_path, "closed")
        elif kind == "deleted":
            self._gone(event.src_path)
        elif kind == "moved":
            self._gone(event.src_path)
            self._seen(event.dest_path, "event")


class _OverflowListener(logging.Filter):
    """Turns watchdog's overflow warning into a call; watchdog offers no other signal."""

    def __init__(self) -> None:
        super().__init__()
        self.watchers: set[Callable[[], None]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(_OVERFLOW_MESSAGE):
            return True
        for notify in list(self.watchers):
            notify()
        return False  # reported as our own structured event instead


_overflow = _OverflowListener()
logging.getLogger(_OVERFLOW_LOGGER).addFilter(_overflow)


def _root_identity(real_root: str) -> tuple[int, int] | None:
    try:
        st = os.stat(real_root)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def watch_limit() -> int | None:
    """The inotify watch limit for this user (``fs.inotify.max_user_watches``), if known."""
    for source in ("/proc/sys/user/max_inotify_watches", "/proc/sys/fs/inotify/max_user_watches"):
        with contextlib.suppress(OSError, ValueError):
            return int(Path(source).read_text())
    return None


def watch_budget_exhausted(folder: str) -> bool:
    """True when the kernel refuses this user one more inotify watch (ENOSPC).

    Watchdog skips subfolders it cannot watch silently; asking for one watch of our own
    (then closing it) is the one way to know. Linux only; elsewhere always False.
    """
    if not sys.platform.startswith("linux"):
        return False
    else:  # an else, not code after the return: mypy then checks it as Linux-only
        libc = ctypes.CDLL(None, use_errno=True)
        descriptor = libc.inotify_init1(os.O_CLOEXEC)
        if descriptor < 0:
            return False  # out of inotify instances: that says nothing about watches
        try:
            mask = _IN_ATTRIB | _IN_ONLYDIR | _IN_DONT_FOLLOW
            if libc.inotify_add_watch(descriptor, os.fsencode(folder), mask) >= 0:
                return False
            return ctypes.get_errno() == errno.ENOSPC
        finally:
            os.close(descriptor)


if sys.platform == "win32":
    _FILE_ATTRIBUTE_REPARSE_POINT = 0x400

    class _Folder:
        """A folder of a scan, by its path: Windows lists a folder by name only.

        Just before it is listed a folder must still be a folder and no reparse point (a
        symbolic link or junction put in its place since its parent was listed). A swap
        between that check and the listing, or of a parent folder meanwhile, goes unseen:
        Windows offers no listing relative to an open folder.
        """

        def __init__(self, path: str) -> None:
            st = os.lstat(path)
            if st.st_file_attributes & _FILE_ATTRIBUTE_REPARSE_POINT:
                raise OSError(errno.ELOOP, "a link or junction: never followed", path)
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", path)
            self._path = path
            self._st = st

        @classmethod
        def open_root(cls, real_root: str) -> _Folder:
            return cls(real_root)

        def child(self, name: str) -> _Folder:
            return _Folder(os.path.join(self._path, name))

        def entries(self) -> contextlib.AbstractContextManager[Iterator[os.DirEntry[str]]]:
            return os.scandir(self._path)

        def lstat(self, entry: os.DirEntry[str]) -> os.stat_result:
            # DirEntry.stat leaves the device and the file index zero on Windows.
            return os.lstat(entry.path)

        def stat(self) -> os.stat_result:
            """The folder's own stat, as checked when it was entered."""
            return self._st

        def close(self) -> None:
            """Nothing is held open."""

else:
    _FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

    class _Folder:
        """A folder of a scan, held open: what is below it is reached through it.

        Its subfolders are opened relative to its descriptor with ``O_NOFOLLOW`` and its
        files stat'ed relative to it. A subfolder swapped for a symbolic link after this
        folder was listed is not entered (``O_NOFOLLOW`` with ``O_DIRECTORY`` fails), and a
        parent swapped for one cannot lead the scan elsewhere: no path is resolved again.
        A scan holds one per level of the folder it is in.
        """

        def __init__(self, fd: int) -> None:
            self._fd = fd
            try:
                self._st = os.fstat(fd)
            except OSError:
                os.close(fd)
                raise

        @classmethod
        def open_root(cls, real_root: str) -> _Folder:
            return cls(os.open(real_root, _FOLDER_FLAGS))

        def child(self, name: str) -> _Folder:
            return _Folder(os.open(name, _FOLDER_FLAGS, dir_fd=self._fd))

        def entries(self) -> contextlib.AbstractContextManager[Iterator[os.DirEntry[str]]]:
            return os.scandir(self._fd)

        def lstat(self, entry: os.DirEntry[str]) -> os.stat_result:
            return entry.stat(follow_symlinks=False)  # fstatat, relative to this folder

        def stat(self) -> os.stat_result:
            """The folder's own stat, taken when it was opened."""
            return self._st

        def close(self) -> None:
            os.close(self._fd)


@dataclass
class _Level:
    """A folder on the scan's current path, with the subfolders it has yet to visit."""

    folder: _Folder
    #: the folder's path under the root as configured (as files are reported)
    path: str
    #: its path relative to the root: "" or ending in "/"
    prefix: str
    subfolders: list[str]


@dataclass
class _Live:
    """A running observer and what it was started on."""

    observer: BaseObserver
    handler: _Handler
    kind: Literal["native", "polling"]
    real_root: str
    root_identity: tuple[int, int] | None


class Watcher:
    """One observer per watch folder, health checks, and reconciliation scans."""

    def __init__(
        self,
        folders: Sequence[WatchSettings],
        emit: Emit,
        *,
        poll_interval: float = 2.0,
        native: Callable[[], BaseObserver] = Observer,
        on_lost: Callable[[], None] | None = None,
        stall_seconds: float = _STALL_SECONDS,
        own: Sequence[tuple[str, Path]] = (),
    ) -> None:
        """``own``: (config key, path) of what the daemon writes, never harvested."""
        self._folders = tuple(folders)
        self._own = _Own(own)
        self._emit = emit
        self._refusals = _Refusals(emit)
        self._poll_interval = poll_interval
        self._native = native
        self._on_lost = on_lost
        self._stall_seconds = stall_seconds
        self._live: dict[Path, _Live] = {}
        #: folders already reported unavailable, so a long outage is logged once.
        self._down: set[Path] = set()
        #: folders left to reconciliation scans after the watch budget ran out, with the
        #: limit then: they try native watching again only once the limit was raised.
        self._scan_only: dict[Path, int | None] = {}
        #: folders whose exhausted budget was already reported.
        self._limited: set[Path] = set()
        self._running = False

    def start(self) -> None:
        """Start an observer per folder; a folder that cannot be watched is left for later."""
        self._running = True
        self._own.refresh()
        _overflow.watchers.add(self._events_lost)
        for ws in self._folders:
            self._start_folder(ws)

    def stop(self) -> None:
        """Stop every observer and join its threads."""
        self._running = False
        _overflow.watchers.discard(self._events_lost)
        live = list(self._live.values())
        self._live.clear()
        for entry in live:
            entry.observer.stop()
        for entry in live:
            _join(entry.observer)

    def unwatched(self) -> dict[Path, str]:
        """Folders not watched as configured, and why: observer dead, stalled, stale or
        never started. What ``check_health`` acts on.

        A folder left to reconciliation scans after the watch budget ran out is not listed:
        it is watched, by scans, on purpose.
        """
        if not self._running:
            return {}
        return {
            ws.path: problem
            for ws in self._folders
            if ws.path not in self._scan_only and (problem := self._problem(ws.path)) is not None
        }

    def check_health(self) -> list[Path]:
        """Restart observers that died, stalled or watch a stale root; handle the budget.

        Returns the folders whose events may have been missed (the caller rescans them).
        """
        if not self._running:
            return []
        unwatched = self.unwatched()
        restarted: list[Path] = []
        for ws in self._folders:
            if ws.path in self._scan_only:
                if watch_limit() != self._scan_only[ws.path] and self._retry_native(ws):
                    restarted.append(ws.path)
                continue
            problem = unwatched.get(ws.path)
            if problem is None:
                self._check_budget(ws)
                continue
            old = self._live.pop(ws.path, None)
            if old is not None:
                log.warning("watch_observer_unhealthy", folder=str(ws.path), problem=problem)
                old.observer.stop()
                _join(old.observer)
            if self._start_folder(ws):
                log.info("watch_folder_restarted", folder=str(ws.path))
                restarted.append(ws.path)
        return restarted

    def scan(self) -> Iterator[FileSeen]:
        """Every watched file in every folder, as FileSeen with ``source="scan"``."""
        for ws in self._folders:
            yield from self.scan_folder(ws)

    def scan_folder(self, ws: WatchSettings) -> Iterator[FileSeen]:
        """Every watched file under one folder, lazily; never follows a symbolic link.

        Holds only the folders still to visit, never the files: memory grows with the
        breadth of the tree, not with the number of files. Refusals go to ``emit``.
        The folders on the path to the one being listed stay open and each is entered
        through its parent (``_Folder``): a folder swapped for a link to elsewhere while
        the scan was busy (hours, on a huge tree) cannot lead it out of the root.
        """
        root = ws.path
        if not _is_folder(root):
            log.warning("watch_folder_unavailable", folder=str(root), reason="missing")
            return
        started = time.monotonic()
        real_root = os.path.realpath(root)
        self._own.refresh()
        if reason := self._own.within(real_root):
            self._refusals.report(FileRefused(root, root, reason))
            return
        try:
            top = _Folder.open_root(real_root)
        except OSError as exc:
            log.warning("watch_scan_failed", folder=str(root), path=str(root), error=str(exc))
            return
        levels = [_Level(top, str(root), "", [])]
        files = 0
        try:
            files += yield from self._listed(ws, real_root, levels[-1])
            while levels:
                level = levels[-1]
                if not level.subfolders:
                    levels.pop().folder.close()
                    continue
                name = level.subfolders.pop()
                path = os.path.join(level.path, name)
                if (reason := too_long(path)) is not None:
                    # reachable through its parent, but nothing below it could be read
                    self._refusals.report(FileRefused(Path(path), root, reason))
                    continue
                try:
                    folder = level.folder.child(name)
                except OSError as exc:
                    self._unlistable(ws, path, exc)
                    continue
                if (reason := self._own.refusal(folder.stat())) is not None:
                    folder.close()
                    self._refusals.report(FileRefused(Path(path), root, reason))
                    continue
                levels.append(_Level(folder, path, f"{level.prefix}{name}/", []))
                files += yield from self._listed(ws, real_root, levels[-1])
        finally:
            for level in levels:
                level.folder.close()
        log.debug(
            "watch_scan_finished",
            folder=str(root),
            files=files,
            seconds=round(time.monotonic() - started, 3),
        )

    def _listed(
        self, ws: WatchSettings, real_root: str, level: _Level
    ) -> Generator[FileSeen, None, int]:
        """The watched files of one folder; its subfolders to visit go to the level."""
        count = 0
        try:
            with level.folder.entries() as entries:
                for entry in entries:
                    rel = level.prefix + entry.name
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        continue
                    if is_dir:
                        if ws.recursive and matches(rel, ("*",), ws.exclude):
                            level.subfolders.append(entry.name)
                    elif matches(rel, ws.include, ws.exclude):
                        path = Path(os.path.join(level.path, entry.name))
                        st = _lstat(path, functools.partial(level.folder.lstat, entry))
                        if st is None:
                            continue
                        reason = self._own.refusal(st)
                        found = (
                            _classified(path, ws.path, "scan", st, real_root)
                            if reason is None
                            else FileRefused(path, ws.path, reason)
                        )
                        if isinstance(found, FileSeen):
                            self._refusals.cleared(found.path)
                            count += 1
                            yield found
                        else:
                            self._refusals.report(found)
        except OSError as exc:
            self._unlistable(ws, level.path, exc)
        return count

    def _unlistable(self, ws: WatchSettings, path: str, exc: OSError) -> None:
        if exc.errno in _SWAPPED and path != str(ws.path):
            # Listed as a folder, now a link or a file: not entered. Its own event and
            # the next scan report what it is now.
            log.warning("watch_folder_swapped", folder=str(ws.path), path=path, error=str(exc))
        elif path == str(ws.path) or isinstance(exc, FileNotFoundError):
            log.warning("watch_scan_failed", folder=str(ws.path), path=path, error=str(exc))
        else:
            reason = f"cannot list this folder: {exc.strerror or exc}"
            self._refusals.report(FileRefused(Path(path), ws.path, reason))

    def _events_lost(self) -> None:
        log.warning("watch_events_lost", reason="kernel event queue overflowed", action="rescan")
        if self._on_lost is not None:
            self._on_lost()

    def _problem(self, path: Path) -> str | None:
        entry = self._live.get(path)
        if entry is None:
            return "not running"
        observer = entry.observer
        if not observer.is_alive():
            return "observer thread died"
        # An emitter stops by itself when its folder disappears; the observer thread lives on.
        if not observer.emitters or not all(e.is_alive() for e in observer.emitters):
            return "emitter thread died"
        busy = entry.handler.busy_since
        if busy is not None and time.monotonic() - busy > self._stall_seconds:
            return f"handler stalled for {time.monotonic() - busy:.0f} s"
        if os.path.realpath(path) != entry.real_root:
            return "the folder now resolves elsewhere"
        if _root_identity(entry.real_root) != entry.root_identity:
            return "the folder was replaced or remounted"
        return None

    def _check_budget(self, ws: WatchSettings) -> None:
        """Native recursive watching silently misses subfolders once the budget runs out."""
        entry = self._live.get(ws.path)
        if entry is None or entry.kind != "native" or not ws.recursive:
            return
        if not watch_budget_exhausted(entry.real_root):
            self._limited.discard(ws.path)
            return
        if ws.mode == "auto":
            del self._live[ws.path]
            entry.observer.stop()
            _join(entry.observer)
            self._leave_to_scans(ws)
        else:
            self._report_limit(
                ws, "subfolders beyond the limit are covered by reconciliation scans only"
            )

    def _report_limit(self, ws: WatchSettings, effect: str) -> int | None:
        """Log, once per episode, that the inotify watch budget ran out; the limit then."""
        limit = watch_limit()
        if ws.path not in self._limited:
            self._limited.add(ws.path)
            log.warning(
                "watch_limit_reached",
                folder=str(ws.path),
                limit=limit,
                effect=effect,
                fix="raise fs.inotify.max_user_watches (sysctl) and restart",
            )
        return limit

    def _leave_to_scans(self, ws: WatchSettings) -> None:
        self._scan_only[ws.path] = self._report_limit(ws, "covered by reconciliation scans only")

    def _retry_native(self, ws: WatchSettings) -> bool:
        del self._scan_only[ws.path]
        self._limited.discard(ws.path)
        return self._start_folder(ws)

    def _start_folder(self, ws: WatchSettings) -> bool:
        if not _is_folder(ws.path):
            if ws.path not in self._down:
                log.warning("watch_folder_unavailable", folder=str(ws.path), reason="missing")
            self._down.add(ws.path)
            return False
        entry: _Live | None = None
        if ws.mode in ("auto", "native"):
            entry = self._try_start(ws, self._native, "native")
            if ws.path in self._scan_only:
                return True  # out of watch budget: polling would hold every file's stat
            if entry is None and ws.mode == "auto":
                log.warning("watch_falling_back_to_polling", folder=str(ws.path))
        if entry is None and ws.mode in ("auto", "polling"):
            entry = self._try_start(ws, self._polling, "polling")
        if entry is None:
            self._down.add(ws.path)
            return False
        self._down.discard(ws.path)
        self._live[ws.path] = entry
        self._check_budget(ws)
        return ws.path in self._live or ws.path in self._scan_only

    def _polling(self) -> BaseObserver:
        # lstat, not stat: the default follows links into folders, even out of the root.
        return PollingObserverVFS(os.lstat, os.scandir, polling_interval=self._poll_interval)

    def _try_start(
        self, ws: WatchSettings, factory: Callable[[], BaseObserver], kind: str
    ) -> _Live | None:
        observer: BaseObserver | None = None
        # The resolved root: inotify would otherwise watch a symlinked root as a link.
        real = os.path.realpath(ws.path)
        handler = _Handler(ws, self._emit, self._refusals, self._own)
        try:
            observer = factory()
            observer.schedule(handler, real, recursive=ws.recursive, event_filter=_EVENTS)
            observer.start()
        except Exception as exc:  # noqa: BLE001 - e.g. inotify limits; the caller falls back
            if kind == "native" and isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                # watchdog 7 refuses the whole observer once the watch budget runs out
                # (older releases skipped the subfolders it could not watch)
                self._leave_to_scans(ws)
            elif ws.path not in self._down:
                log.warning(
                    "watch_observer_failed",
                    folder=str(ws.path),
                    observer=kind,
                    error=repr(exc),
                )
            if observer is not None:
                # Releases what the observer's constructor started (the inotify reader thread).
                with contextlib.suppress(Exception):
                    observer.stop()
                _join(observer)
            return None
        return _Live(
            observer,
            handler,
            "native" if kind == "native" else "polling",
            real,
            _root_identity(real),
        )


def _join(observer: BaseObserver) -> None:
    if observer.ident is None:
        return
    observer.join(_JOIN_SECONDS)
    if observer.is_alive():
        log.warning("watch_observer_stuck", observer=repr(observer))
