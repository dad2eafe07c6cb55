"""When is a file complete: a pure state machine from FileSeen hints to FileSettled.

No threads, sleeps or I/O of its own: the caller passes the clock (``now``), the stat
function and, optionally, a check of the file's first bytes.

The signals, strongest first:

- **Quiescence.** A file is complete when its size, mtime_ns and file identity held still
  from one observation to a confirming stat a whole quiet window later (``settle_seconds``
  of its watch folder), and it is not empty. Any change restarts the window, so a
  preallocated file (final size first, content later) stays unsettled while its mtime moves.
- **Close-after-write** (inotify, Linux) and **an mtime already older than the window** at
  first sight (written while the daemon was down) shorten the window to
  ``min(confirm_seconds, settle_seconds)``; one confirming stat must still agree. A file
  written again after a close-write event is a writer that reopens per chunk: from then on
  its close events are ignored. ``settle_on_close: false`` ignores them from the start.
- **Blank head.** A file whose first bytes are all zero is very likely preallocated and not
  written yet; it waits for content up to ``blank_head_wait_seconds``, then settles anyway
  (raw data can legitimately start with zeros).
- **Neighbours being written** (``defer_while_writing``): a file that held still is held
  back, for at most ``defer_max_seconds``, while another file in its folder changed or was
  modified within its quiet window, so its checksum never competes with the acquisition's
  writes (a camera streaming the next file). It is looked at again a window later.
- **Format check** (not here): the extract stage's adapters refuse truncated DICOM and TIFF
  files, and the runtime observes a file again, instead of packaging it, when it changed
  between settling and packaging.

What stays undecidable, and the config for it:

- a writer that pauses longer than ``settle_seconds`` mid-file while the content looks
  complete (a multi-page TIFF between pages, a format without a length) settles early and
  is harvested again, with ``replaces``, when it grows: raise ``settle_seconds`` for
  instruments that flush in long bursts;
- a writer that reopens the file for every chunk and pauses longer than
  ``confirm_seconds`` after its first close: set ``settle_on_close: false``;
- a temporary name that is not excluded and sits still longer than the window: add its
  pattern to ``exclude`` (the defaults cover ``*.tmp``, ``*.part``, ``~$*``, ...);
- a preallocated file filled head last, or whose head stays blank past
  ``blank_head_wait_seconds``, that pauses longer than the window;
- a same-size overwrite within the filesystem's mtime granularity (FAT: 2 s);
- multi-file acquisitions whose files arrive further apart than ``group_quiet_seconds``
  (see the group stage; a late file gives a new package with ``replaces``);
- an empty file is never settled (nothing to read); it is not tracked once it has held still
  for a whole window (or was already older than that when seen), so that empty marker
  files cannot pile up: the write that fills it brings it back (its event, or the next scan).

Memory. A record costs about 400 bytes (the path kept as a string, not a ``Path`` with its
parsed parts). A cold start over a tree of new files would track every file at once (a
million files: several hundred MiB), so scans reach the settler through ``ScanFeed``,
which lets at most ``SCAN_BATCH`` files from a scan be settling (and, as the caller counts,
further down the pipeline) at a time; the rest wait in the lazy scan, which holds only its
folder stack. Events from the watchers are not held back: their number is bounded by the
runtime's event queue.

An mtime in the future (clock skew) counts as fresh. Not thread-safe: one owner drives it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from acqharvest.model import FileSeen, FileSettled, WatchSettings

log = structlog.get_logger(__name__)

StatFn = Callable[[Path, Path], FileSeen | None]
#: True when the file's first bytes are all zero (reserved space, not yet written).
BlankHeadFn = Callable[[Path], bool]
#: files from a scan that may be settling (or further down the pipeline) at once
SCAN_BATCH = 20_000


@dataclass(slots=True)
class _Tracked:
    root: Path
    size: int
    mtime_ns: int
    file_id: str
    since: float
    settle: float
    #: a hint (close-write, old mtime) allows the short confirming window.
    fast: bool
    trust_close: bool
    blank_wait: float
    #: a close-write event arrived for this file while it was tracked
    closed: bool = False
    #: it changed after a close-write event: its writer reopens it, so closes say nothing
    reopens: bool = False
    #: when its head was first found blank; None while it was not
    blank_since: float | None = None
    #: hold it back while a neighbour is being written, for at most this long (0: never)
    defer_max: float = 0.0
    #: when it was first held back for a neighbour; None while it was not
    deferred_since: float | None = None

    def same(self, seen: FileSeen) -> bool:
        return (seen.size, seen.mtime_ns, seen.file_id) == (self.size, self.mtime_ns, self.file_id)

    def changed(self, seen: FileSeen, since: float, *, closed: bool) -> None:
        """Written since we last looked: an old mtime no longer says anything."""
        self.size, self.mtime_ns, self.file_id = seen.size, seen.mtime_ns, seen.file_id
        self.since = since
        if self.closed:
            self.reopens = True
        self.closed = self.closed or closed
        self.fast = closed and self._close_counts()

    def close_seen(self) -> None:
        self.closed = True
        self.fast = self.fast or self._close_counts()

    def _close_counts(self) -> bool:
        return self.trust_close and not self.reopens


class Settler:
    """Tracks files until their size, mtime and identity hold still for the quiet window."""

    def __init__(
        self,
        folder: Callable[[Path], WatchSettings],
        *,
        confirm_seconds: float = 1.0,
        head_is_blank: BlankHeadFn | None = None,
    ) -> None:
        self._folder = folder
        self._confirm = confirm_seconds
        self._head_is_blank = head_is_blank
        #: by the path as a string: a Path keeps its parsed parts too, twice the memory
        self._files: dict[str, _Tracked] = {}

    @property
    def tracked(self) -> int:
        return len(self._files)

    def tracks_under(self, folder: Path) -> bool:
        """Whether a file under ``folder`` is still settling (a scan over every record)."""
        prefix = os.path.join(folder, "")
        return any(key.startswith(prefix) for key in self._files)

    def observe(self, seen: FileSeen) -> bool:
        """Start tracking ``seen.path``, or restart its window if it changed since.

        True when tracking started: a file version new to the settle stage.
        """
        key = str(seen.path)
        record = self._files.get(key)
        closed = seen.source == "closed"
        if record is None:
            folder = self._folder(seen.root)
            settle = folder.settle_seconds
            age = seen.seen_at - seen.mtime_ns / 1e9
            if seen.size == 0 and age >= settle:
                return False  # empty and still: the write that fills it brings it back
            self._files[key] = _Tracked(
                root=seen.root,
                size=seen.size,
                mtime_ns=seen.mtime_ns,
                file_id=seen.file_id,
                since=seen.seen_at,
                settle=settle,
                fast=(closed and folder.settle_on_close) or age >= settle,
                trust_close=folder.settle_on_close,
                blank_wait=folder.blank_head_wait_seconds,
                closed=closed,
                defer_max=folder.defer_max_seconds if folder.defer_while_writing else 0.0,
            )
            return True
        if not record.same(seen):
            record.changed(seen, seen.seen_at, closed=closed)
        elif closed:
            record.close_seen()
        return False

    def forget(self, path: Path) -> None:
        """Stop tracking a file that was deleted or renamed away before settling."""
        self._files.pop(str(path), None)

    def _window(self, record: _Tracked) -> float:
        return min(self._confirm, record.settle) if record.fast else record.settle

    def tick(self, now: float, stat: StatFn) -> list[FileSettled]:
        """Confirm every file whose window has elapsed; return the ones that held still."""
        settled: list[FileSettled] = []
        writing = self._being_written(now)
        for key, record in list(self._files.items()):
            if now - record.since < self._window(record):
                continue
            path = Path(key)
            current = stat(path, record.root)
            if current is None:
                del self._files[key]
                log.debug("file_gone_before_settling", path=key)
            elif not record.same(current):
                record.changed(current, now, closed=False)
            elif record.size == 0:
                # Created before its data, and nothing came for a window: the write that
                # fills it is an event or shows in the next scan.
                del self._files[key]
            elif self._unwritten(path, record, now):
                # Reserved before the data arrives: keep waiting.
                record.since = now
            elif record.defer_max > 0 and self._deferred(key, record, now, writing):
                record.since = now  # looked at again a window later, still held still
            else:
                del self._files[key]
                settled.append(
                    FileSettled(
                        path=path,
                        root=record.root,
                        size=record.size,
                        mtime_ns=record.mtime_ns,
                        file_id=record.file_id,
                    )
                )
                log.debug("file_settled", path=key, size=record.size)
        return settled

    def _being_written(self, now: float) -> dict[str, str]:
        """Folders where a file is being written now: one that changed, or was modified,
        within its quiet window (a file that only waits for its confirming look is not)."""
        writing: dict[str, str] = {}
        for key, record in self._files.items():
            modified_lately = now - record.mtime_ns / 1e9 < record.settle
            if now - record.since < self._window(record) and modified_lately:
                writing.setdefault(os.path.dirname(key), key)
        return writing

    def _deferred(self, key: str, record: _Tracked, now: float, writing: dict[str, str]) -> bool:
        """Whether a settled file waits for a neighbour still being written (see ``polite``):
        reading it now would compete with the acquisition's writes."""
        neighbour = writing.get(os.path.dirname(key))
        if neighbour is None or neighbour == key:
            if record.deferred_since is not None:
                log.debug("file_released", path=key, reason="no file is being written beside it")
            return False
        if record.deferred_since is None:
            record.deferred_since = now
            log.info("file_deferred", path=key, writing=neighbour, most_seconds=record.defer_max)
            return True
        if now - record.deferred_since < record.defer_max:
            return True
        log.info(
            "file_released",
            path=key,
            reason=f"held back for defer_max_seconds ({record.defer_max:g} s) while {neighbour} "
            "was being written",
        )
        return False

    def _unwritten(self, path: Path, record: _Tracked, now: float) -> bool:
        """A blank head within its wait: the space is reserved but the data is not there."""
        if record.blank_wait <= 0 or self._head_is_blank is None:
            return False
        if not self._head_is_blank(path):
            record.blank_since = None
            return False
        if record.blank_since is None:
            record.blank_since = now
            log.info("file_head_blank", path=str(path), wait_seconds=record.blank_wait)
        if now - record.blank_since < record.blank_wait:
            return True
        log.warning(
            "file_settled_with_blank_head",
            path=str(path),
            waited_seconds=round(now - record.blank_since, 1),
        )
        return False

    def next_due(self, now: float) -> float | None:
        """Seconds until the earliest tracked file is due for a confirming stat."""
        if not self._files:
            return None
        due = min(r.since + self._window(r) for r in self._files.values())
        return max(0.0, due - now)


class ScanFeed:
    """A scan handed to the settle stage a bounded number of files at a time.

    ``feed`` takes files from the scan under way only while ``busy()`` (what the caller
    counts as in the pipeline: at least ``Settler.tracked``) is below ``limit``; a tree
    smaller than that goes in at once. A scan started while another is under way replaces
    it: the new one visits every file again, so none is skipped.
    """

    def __init__(self, limit: int = SCAN_BATCH) -> None:
        self.limit = limit
        #: files passed on since this feed was made
        self.passed = 0
        self._scan: Iterator[FileSeen] | None = None

    @property
    def active(self) -> bool:
        """A scan is under way: some of its files were not passed on yet."""
        return self._scan is not None

    def start(self, scan: Iterable[FileSeen]) -> None:
        self._scan = iter(scan)

    def feed(self, take: Callable[[FileSeen], object], busy: Callable[[], int]) -> None:
        """Pass files from the scan under way to ``take`` while ``busy()`` is below the limit."""
        while self._scan is not None and busy() < self.limit:
            seen = next(self._scan, None)
            if seen is None:
                self._scan = None
                return
            take(seen)
            self.passed += 1
