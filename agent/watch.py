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
  ``network_filesystem`` tells such a share by its file system type (``acqharvest
  doctor`` reports it). The periodic reconciliation scan (``rescan_seconds``) finds those
  files; use ``polling`` mode for such folders when that delay is too long.

Only creation, modification, attribute, move, delete and close-after-write events are
subscribed: open and close-without-write events are left out, since our own scans and
reads would otherwise flood the queue and overflow it.

File identity, and what is watched and what is refused: see ``acqharvest.watch_rules``;
how a scan walks a folder: ``acqharvest.watch_scan``; the kernel's watch budget and network
file systems: ``acqharvest.watch_limits``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
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

from acqharvest.model import FileGone, FileSeen, WatchSettings
from acqharvest.watch_limits import mount_fstype as mount_fstype
from acqharvest.watch_limits import network_filesystem as network_filesystem
from acqharvest.watch_limits import watch_budget_exhausted, watch_limit
from acqharvest.watch_rules import (
    Emit,
    OwnPaths,
    Refusals,
    examine,
    file_identity,
    is_folder,
    matches,
    stat_file,
)
from acqharvest.watch_scan import Scanner

# the stage's one import for the runtime and the tests; the rules and scans live apart
__all__ = [
    "Emit",
    "Watcher",
    "examine",
    "file_identity",
    "matches",
    "network_filesystem",
    "stat_file",
    "watch_budget_exhausted",
    "watch_limit",
]

log = structlog.get_logger(__name__)

#: seconds a stopping observer may take to join before we give up on it.
_JOIN_SECONDS = 5.0
#: a handler busy this long is taken for stalled (a stat hanging on a dead share).
_STALL_SECONDS = 60.0
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


def _relpath(path: str, root: Path) -> str | None:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return None


class _Handler(FileSystemEventHandler):
    def __init__(self, ws: WatchSettings, emit: Emit, refusals: Refusals, own: OwnPaths) -> None:
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
        self._own = OwnPaths(own)
        self._emit = emit
        self._refusals = Refusals(emit)
        self._scanner = Scanner(self._own, self._refusals)
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
        """Every watched file under one folder, lazily (see ``watch_scan.Scanner``)."""
        return self._scanner.scan_folder(ws)

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
        if not is_folder(ws.path):
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
