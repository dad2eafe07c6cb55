"""Watchdog observers per watch folder (native or polling) and reconciliation scans.

Turns OS events and directory scans into FileSeen / FileGone by ``os.stat``; never opens a
file. Events are hints; scans are the truth. The only module that touches watchdog.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import os
import re
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from acqharvest.model import FileGone, FileSeen, WatchSettings

log = structlog.get_logger(__name__)

Emit = Callable[[FileSeen | FileGone], None]

#: seconds a stopping observer may take to join before we give up on it.
_JOIN_SECONDS = 5.0
_VANISHED = (FileNotFoundError, NotADirectoryError)


def file_identity(st: os.stat_result) -> str:
    """Stable identity across renames: device and inode (on Windows, the file index)."""
    return f"{st.st_dev}:{st.st_ino}"


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


def stat_file(
    path: Path, root: Path, source: Literal["event", "scan", "closed"]
) -> FileSeen | None:
    """FileSeen for a regular file, None for anything else or a file already gone."""
    try:
        st = os.stat(path)
    except _VANISHED:
        return None
    except OSError as exc:
        log.warning("watch_stat_failed", path=str(path), error=str(exc))
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return FileSeen(
        path=path,
        root=root,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        file_id=file_identity(st),
        seen_at=time.time(),
        source=source,
    )


class _Handler(FileSystemEventHandler):
    def __init__(self, ws: WatchSettings, emit: Emit) -> None:
        self._ws = ws
        self._emit = emit
        # Observers watch the resolved root (and FSEvents reports resolved paths anyway):
        # map their paths back under the root as configured.
        self._real_root = Path(os.path.realpath(ws.path))

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._handle(event)
        except Exception:  # an exception escaping here would kill the observer thread
            log.exception("watch_event_failed", folder=str(self._ws.path), fs_event=repr(event))

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
        if target is not None:
            seen = stat_file(target, self._ws.path, source)
            if seen is not None:
                self._emit(seen)

    def _gone(self, path: bytes | str) -> None:
        target = self._watched(path)
        if target is not None:
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


class Watcher:
    """One observer per watch folder, plus on-demand reconciliation scans."""

    def __init__(
        self,
        folders: Sequence[WatchSettings],
        emit: Emit,
        *,
        poll_interval: float = 2.0,
        native: Callable[[], BaseObserver] = Observer,
    ) -> None:
        self._folders = tuple(folders)
        self._emit = emit
        self._poll_interval = poll_interval
        self._native = native
        self._observers: dict[Path, BaseObserver] = {}
        #: folders already reported unavailable, so a long outage is logged once.
        self._down: set[Path] = set()
        self._running = False

    def start(self) -> None:
        """Start an observer per folder; a folder that cannot be watched is left for restart."""
        self._running = True
        for ws in self._folders:
            self._start_folder(ws)

    def stop(self) -> None:
        """Stop every observer and join its threads."""
        self._running = False
        observers = list(self._observers.values())
        self._observers.clear()
        for observer in observers:
            observer.stop()
        for observer in observers:
            _join(observer)

    def alive(self) -> list[str]:
        """Names of the folders whose observer died (or never started); empty when all live."""
        if not self._running:
            return []
        return [str(ws.path) for ws in self._folders if not self._is_live(ws.path)]

    def restart_dead(self) -> list[Path]:
        """Restart dead observers; returns the folders now watched again (rescan them)."""
        if not self._running:
            return []
        restarted: list[Path] = []
        for ws in self._folders:
            if self._is_live(ws.path):
                continue
            old = self._observers.pop(ws.path, None)
            if old is not None:
                old.stop()
                _join(old)
            if self._start_folder(ws):
                log.info("watch_folder_restarted", folder=str(ws.path))
                restarted.append(ws.path)
        return restarted

    def scan(self) -> Iterator[FileSeen]:
        """Every watched file in every folder, as FileSeen with ``source="scan"``."""
        for ws in self._folders:
            yield from self.scan_folder(ws)

    def scan_folder(self, ws: WatchSettings) -> Iterator[FileSeen]:
        """Every watched file under one folder; never follows symlinks into directories."""
        root = ws.path
        if not _is_folder(root):
            log.warning("watch_folder_unavailable", folder=str(root), reason="missing")
            return
        pending: list[tuple[str, str]] = [(str(root), "")]
        while pending:
            directory, prefix = pending.pop()
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        rel = prefix + entry.name
                        try:
                            is_dir = entry.is_dir(follow_symlinks=False)
                        except OSError:
                            continue
                        if is_dir:
                            if ws.recursive and matches(rel, ("*",), ws.exclude):
                                pending.append((entry.path, rel + "/"))
                        elif matches(rel, ws.include, ws.exclude):
                            seen = stat_file(Path(entry.path), root, "scan")
                            if seen is not None:
                                yield seen
            except OSError as exc:
                log.warning("watch_scan_failed", folder=str(root), path=directory, error=str(exc))

    def _is_live(self, path: Path) -> bool:
        observer = self._observers.get(path)
        if observer is None or not observer.is_alive():
            return False
        # An emitter stops by itself when its folder disappears; the observer thread lives on.
        return bool(observer.emitters) and all(e.is_alive() for e in observer.emitters)

    def _start_folder(self, ws: WatchSettings) -> bool:
        if not _is_folder(ws.path):
            if ws.path not in self._down:
                log.warning("watch_folder_unavailable", folder=str(ws.path), reason="missing")
            self._down.add(ws.path)
            return False
        observer: BaseObserver | None = None
        if ws.mode in ("auto", "native"):
            observer = self._try_start(ws, self._native, "native")
            if observer is None and ws.mode == "auto":
                log.warning("watch_falling_back_to_polling", folder=str(ws.path))
        if observer is None and ws.mode in ("auto", "polling"):
            observer = self._try_start(
                ws, lambda: PollingObserver(timeout=self._poll_interval), "polling"
            )
        if observer is None:
            self._down.add(ws.path)
            return False
        self._down.discard(ws.path)
        self._observers[ws.path] = observer
        return True

    def _try_start(
        self, ws: WatchSettings, factory: Callable[[], BaseObserver], kind: str
    ) -> BaseObserver | None:
        observer: BaseObserver | None = None
        try:
            observer = factory()
            # The resolved root: inotify would otherwise watch a symlinked root as a link.
            real = os.path.realpath(ws.path)
            observer.schedule(_Handler(ws, self._emit), real, recursive=ws.recursive)
            observer.start()
        except Exception as exc:  # noqa: BLE001 - e.g. inotify limits; the caller falls back
            if ws.path not in self._down:
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
        return observer


def _join(observer: BaseObserver) -> None:
    if observer.ident is None:
        return
    observer.join(_JOIN_SECONDS)
    if observer.is_alive():
        log.warning("watch_observer_stuck", observer=repr(observer))
