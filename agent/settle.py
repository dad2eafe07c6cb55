"""When is a file complete: a pure state machine from FileSeen hints to FileSettled.

No threads, sleeps or I/O: the caller passes the clock (``now``) and the stat function.

What is decidable and what is not. A file is called complete when its size, mtime_ns and
file identity held still from one observation to a confirming stat a whole quiet window
later (``settle_seconds`` of its watch folder), and it is not empty. This cannot tell:

- a writer that pauses for longer than ``settle_seconds`` mid-file (the file settles early
  and is settled again, as a new version, when it grows); raise ``settle_seconds`` for
  instruments that flush in long bursts;
- a preallocated file whose size is final before its content is (ftruncate then fill),
  or a same-size overwrite within the filesystem's mtime granularity (FAT: 2 s); only a
  longer ``settle_seconds`` narrows that window;
- a file that stays empty forever (it is tracked but never settles, by design).

Two hints shorten the window to ``min(confirm_seconds, settle_seconds)``: the OS reported
that the writer closed the file (inotify close-write), or the file's mtime was already
older than the window when first seen (written while the daemon was down). Even then one
confirming stat, ``confirm_seconds`` after the observation, must agree. An mtime in the
future (clock skew) counts as fresh. Not thread-safe: one owner drives it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from acqharvest.model import FileSeen, FileSettled

log = structlog.get_logger(__name__)

StatFn = Callable[[Path, Path], FileSeen | None]


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

    def same(self, seen: FileSeen) -> bool:
        return (seen.size, seen.mtime_ns, seen.file_id) == (self.size, self.mtime_ns, self.file_id)

    def update(self, seen: FileSeen, since: float, *, fast: bool) -> None:
        self.size, self.mtime_ns, self.file_id = seen.size, seen.mtime_ns, seen.file_id
        self.since = since
        self.fast = fast


class Settler:
    """Tracks files until their size, mtime and identity hold still for the quiet window."""

    def __init__(
        self, settle_seconds: Callable[[Path], float], *, confirm_seconds: float = 1.0
    ) -> None:
        self._settle_seconds = settle_seconds
        self._confirm = confirm_seconds
        self._files: dict[Path, _Tracked] = {}

    @property
    def tracked(self) -> int:
        return len(self._files)

    def observe(self, seen: FileSeen) -> None:
        """Start tracking ``seen.path``, or restart its window if it changed since."""
        record = self._files.get(seen.path)
        closed = seen.source == "closed"
        if record is None:
            settle = self._settle_seconds(seen.root)
            age = seen.seen_at - seen.mtime_ns / 1e9
            self._files[seen.path] = _Tracked(
                root=seen.root,
                size=seen.size,
                mtime_ns=seen.mtime_ns,
                file_id=seen.file_id,
                since=seen.seen_at,
                settle=settle,
                fast=closed or age >= settle,
            )
        elif not record.same(seen):
            # Written since we last looked: an old mtime no longer says anything.
            record.update(seen, seen.seen_at, fast=closed)
        elif closed:
            record.fast = True

    def forget(self, path: Path) -> None:
        """Stop tracking a file that was deleted or renamed away before settling."""
        self._files.pop(path, None)

    def _window(self, record: _Tracked) -> float:
        return min(self._confirm, record.settle) if record.fast else record.settle

    def tick(self, now: float, stat: StatFn) -> list[FileSettled]:
        """Confirm every file whose window has elapsed; return the ones that held still."""
        settled: list[FileSettled] = []
        for path, record in list(self._files.items()):
            if now - record.since < self._window(record):
                continue
            current = stat(path, record.root)
            if current is None:
                del self._files[path]
                log.debug("file_gone_before_settling", path=str(path))
            elif not record.same(current):
                record.update(current, now, fast=False)
            elif record.size == 0:
                # Empty files are usually created before the data arrives: keep waiting.
                record.since = now
            else:
                del self._files[path]
                settled.append(
                    FileSettled(
                        path=path,
                        root=record.root,
                        size=record.size,
                        mtime_ns=record.mtime_ns,
                        file_id=record.file_id,
                    )
                )
                log.debug("file_settled", path=str(path), size=record.size)
        return settled

    def next_due(self, now: float) -> float | None:
        """Seconds until the earliest tracked file is due for a confirming stat."""
        if not self._files:
            return None
        due = min(r.since + self._window(r) for r in self._files.values())
        return max(0.0, due - now)
