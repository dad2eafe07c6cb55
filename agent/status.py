"""What the daemon shows of itself: the status board and its snapshots.

- ``StatusBoard``, the holder the runtime tells what happens (a file seen, settled, failed,
  an acquisition packaged, a package delivered or refused, the watch health) from the
  harvest and delivery threads. It keeps the latest acquisitions per folder and counts
  into the daemon's ``Metrics``. Thread-safe; every call is a few dictionary operations.
- ``StatusSnapshot``, plain data: what the board holds, completed by the runtime with what
  only it can read (the outbox, the state dir), built afresh for each request of the
  status server (``statusserver``), which answers from snapshots only.

Healthy (``/healthz`` 200, else 503) means: every watch folder is watched as configured
(an observer that died and could not be restarted makes it unhealthy; a folder left to
scans after the inotify budget ran out is watched, on purpose), and the state dir is
writable with free space. An endpoint that is down is not unhealthy: packages wait in the
outbox, which the snapshot shows.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acqharvest.metrics import Metrics
from acqharvest.package import rfc3339
from acqharvest.pathtext import escape

#: acquisitions kept per folder for the page (the most recently seen)
ROWS_PER_FOLDER = 20

_WAITING = "waiting for the file to settle"
_READING = "complete on disk; being read"


# --------------------------------------------------------------------------- snapshot


@dataclass(frozen=True, slots=True)
class AcquisitionRow:
    """One acquisition (or a file not yet grouped into one) as the page shows it."""

    #: the main file's path below the watch folder (percent form when not UTF-8)
    name: str
    #: waiting, packaged, delivered, failed, or another outbox state (held)
    state: str
    reason: str
    files: int
    #: Unix time the file was first seen
    seen_at: float


@dataclass(frozen=True, slots=True)
class FolderStatus:
    path: str
    #: why the folder is not watched as configured; None while it is
    watch_problem: str | None
    #: the latest failure in this folder: (Unix time, message)
    last_error: tuple[float, str] | None
    #: newest first
    acquisitions: tuple[AcquisitionRow, ...]


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    instrument: str
    folders: tuple[FolderStatus, ...]
    #: packages per outbox state (every count the outbox reports)
    outbox: Mapping[str, int]
    oldest_pending_age: float | None
    last_delivery_at: float | None
    state_dir_problems: tuple[str, ...]
    taken_at: float = field(default_factory=time.time)

    @property
    def problems(self) -> list[str]:
        """What makes the daemon unhealthy (see the module docstring); empty when healthy."""
        unwatched = [
            f"{folder.path} is not watched: {folder.watch_problem}"
            for folder in self.folders
            if folder.watch_problem is not None
        ]
        return unwatched + list(self.state_dir_problems)

    def health(self) -> dict[str, Any]:
        """The ``/healthz`` document."""
        return {
            "healthy": not self.problems,
            "problems": self.problems,
            "watchers": {
                f.path: {"alive": f.watch_problem is None, "problem": f.watch_problem}
                for f in self.folders
            },
            "outbox": dict(self.outbox),
            "oldest_pending_age_seconds": self.oldest_pending_age,
            "last_delivery": _stamp(self.last_delivery_at),
            "last_error": {
                f.path: None
                if f.last_error is None
                else {"at": _stamp(f.last_error[0]), "error": f.last_error[1]}
                for f in self.folders
            },
            "state_dir": {
                "healthy": not self.state_dir_problems,
                "problems": list(self.state_dir_problems),
            },
        }


def _stamp(seconds: float | None) -> str | None:
    return None if seconds is None else rfc3339(round(seconds, 3))


#: what the outbox knows of a package: (state, failed attempts, last error)
PackageState = tuple[str, int, str | None]


def _outbox_row(state: PackageState) -> tuple[str, str]:
    """The page's state and reason for a package in this outbox state."""
    name, attempts, error = state
    if name == "pending":
        if attempts:
            return "packaged", f"sending failed {attempts}x, retrying: {error or 'unknown'}"
        return "packaged", "waiting to be sent"
    if name == "delivered":
        return "delivered", ""
    if name == "rejected":
        return "failed", f"refused by the endpoint: {error or 'reason unknown'}"
    return name, error or f"{name} in the outbox; the admin can say why"


# --------------------------------------------------------------------------- board


@dataclass(slots=True)
class _Row:
    state: str
    reason: str
    seen_at: float
    files: int = 1
    package_id: str | None = None


class StatusBoard:
    """What the daemon tells the status server; see the module docstring."""

    def __init__(self, folders: Sequence[Path], metrics: Metrics, *, instrument: str) -> None:
        self.metrics = metrics
        self._instrument = instrument
        self._lock = threading.Lock()
        self._rows: dict[Path, OrderedDict[str, _Row]] = {f: OrderedDict() for f in folders}
        self._package_rows: dict[str, tuple[Path, str]] = {}
        #: monotonic time each package was spooled, for the delivery latency
        self._spooled_at: dict[str, float] = {}
        self._watch: dict[Path, str | None] = dict.fromkeys(folders)
        self._errors: dict[Path, tuple[float, str]] = {}
        self._last_delivery: float | None = None

    # ------------------------------------------------------------------ events
    def file_seen(self, root: Path, path: Path) -> None:
        """A new file version started settling."""
        self.metrics.file_seen(str(root))
        with self._lock:
            self._put(root, _name(path, root), _Row("waiting", _WAITING, time.time()))

    def file_settled(self, root: Path, path: Path) -> None:
        self.metrics.file_settled(str(root))
        with self._lock:
            row = self._rows[root].get(_name(path, root))
            if row is not None and row.state == "waiting":
                row.reason = _READING

    def file_left(self, root: Path, path: Path) -> None:
        """A file deleted before it was packaged, or found harvested already unchanged."""
        with self._lock:
            rows = self._rows[root]
            name = _name(path, root)
            row = rows.get(name)
            if row is not None and row.state == "waiting":
                del rows[name]

    def file_failed(self, root: Path, path: Path, reason: str) -> None:
        """A file refused or unreadable (before any adapter read it)."""
        self._finished(root, path, [path], _Row("failed", escape(reason), time.time()))

    def acquisition_failed(
        self, adapter: str | None, root: Path, primary: Path, failed: Sequence[Path], reason: str
    ) -> None:
        self.metrics.adapter_failed(adapter)
        main = primary if primary in failed or not failed else failed[0]
        row = _Row("failed", escape(reason), time.time(), len(failed))
        self._finished(root, main, failed, row)

    def packaged(self, root: Path, primary: Path, members: Sequence[Path], package_id: str) -> None:
        """An acquisition's package is in the outbox (counted once per batch by the caller)."""
        row = _Row("packaged", "waiting to be sent", time.time(), len(members), package_id)
        self._finished(root, primary, members, row)
        with self._lock:
            self._spooled_at[package_id] = time.monotonic()

    def built(self, count: int) -> None:
        self.metrics.packages_built(count)

    def delivered(self, package_id: str) -> None:
        with self._lock:
            spooled = self._spooled_at.pop(package_id, None)
            self._last_delivery = time.time()
            self._set_package_state(package_id, "delivered", "")
        self.metrics.package_delivered(None if spooled is None else time.monotonic() - spooled)

    def rejected(self, package_id: str, reason: str) -> None:
        reason = escape(reason)
        with self._lock:
            self._spooled_at.pop(package_id, None)
            self._set_package_state(package_id, "failed", f"refused by the endpoint: {reason}")
            where = self._package_rows.get(package_id)
            if where is not None:
                self._errors[where[0]] = (time.time(), f"{where[1]}: refused: {reason}")
        self.metrics.package_rejected()

    def watch_health(self, problems: Mapping[Path, str], restarted: Iterable[Path] = ()) -> None:
        """The folders not watched as configured now, after restarting those in ``restarted``."""
        for folder in restarted:
            self.metrics.watch_restarted(str(folder))
        with self._lock:
            for folder in self._watch:
                problem = problems.get(folder)
                if problem is not None and self._watch[folder] != problem:
                    self._errors[folder] = (time.time(), f"not watched: {problem}")
                self._watch[folder] = problem

    # ------------------------------------------------------------------ reading
    def snapshot(
        self,
        *,
        outbox: Mapping[str, int],
        package_state: Callable[[str], PackageState | None],
        oldest_pending_age: float | None,
        state_dir_problems: Sequence[str],
    ) -> StatusSnapshot:
        """The board as it is now, rows of packages in the state the outbox has them in."""
        with self._lock:
            copied = {
                root: [
                    (name, _Row(r.state, r.reason, r.seen_at, r.files, r.package_id))
                    for name, r in rows.items()
                ]
                for root, rows in self._rows.items()
            }
            watch, errors = dict(self._watch), dict(self._errors)
            last_delivery = self._last_delivery
        folders = []
        for root, rows in copied.items():
            shown = []
            # newest acquisition first (kept in order of latest news, for eviction); ties
            # (a coarse clock) in the order they came
            ordered = sorted(enumerate(rows), key=lambda item: (item[1][1].seen_at, item[0]))
            for _, (name, row) in reversed(ordered):
                state, reason = row.state, row.reason
                if row.package_id is not None:
                    # the outbox is the truth: held, rejected, released or retried since
                    found = package_state(row.package_id)
                    if found is not None:
                        state, reason = _outbox_row(found)
                shown.append(AcquisitionRow(name, state, reason, row.files, row.seen_at))
            folders.append(FolderStatus(str(root), watch[root], errors.get(root), tuple(shown)))
        return StatusSnapshot(
            self._instrument,
            tuple(folders),
            dict(outbox),
            oldest_pending_age,
            last_delivery,
            tuple(state_dir_problems),
        )

    # ------------------------------------------------------------------ helpers
    def _finished(self, root: Path, main: Path, members: Iterable[Path], row: _Row) -> None:
        """One row for an acquisition in place of its members' rows."""
        if row.state == "failed":
            self._errors_note(root, main, row.reason)
        with self._lock:
            rows = self._rows[root]
            name = _name(main, root)
            earlier = rows.get(name)
            if earlier is not None:
                row.seen_at = earlier.seen_at
            for member in members:
                self._drop(rows, _name(member, root))
            self._put(root, name, row)

    def _errors_note(self, root: Path, path: Path, reason: str) -> None:
        with self._lock:
            self._errors[root] = (time.time(), f"{_name(path, root)}: {reason}")

    def _put(self, root: Path, name: str, row: _Row) -> None:
        rows = self._rows[root]
        self._drop(rows, name)
        rows[name] = row
        if row.package_id is not None:
            self._package_rows[row.package_id] = (root, name)
        while len(rows) > ROWS_PER_FOLDER:
            self._drop(rows, next(iter(rows)))

    def _drop(self, rows: OrderedDict[str, _Row], name: str) -> None:
        row = rows.pop(name, None)
        if row is not None and row.package_id is not None:
            self._package_rows.pop(row.package_id, None)

    def _set_package_state(self, package_id: str, state: str, reason: str) -> None:
        where = self._package_rows.get(package_id)
        if where is None:
            return
        row = self._rows[where[0]].get(where[1])
        if row is not None:
            row.state, row.reason = state, reason


def _name(path: Path, root: Path) -> str:
    """The path below the watch folder, as the page shows it."""
    # string slicing, not relative_to: this runs for every file an event storm brings
    text, prefix = str(path), os.path.join(root, "")
    relative = text[len(prefix) :] if text.startswith(prefix) else text
    return escape(relative.replace(os.sep, "/"))
