"""Work that reads instrument files, run in worker processes (or in-process with workers: 0).

Probing (head bytes, adapter claim, checksum) and extraction are CPU-bound Python, so the
runtime spreads them over processes to use every core. Each worker loads the adapter
registry once; the functions here take and return only picklable model objects.

Budgets. A worker process caps its own address space (``WorkerSetup.memory_limit_bytes``,
``RLIMIT_AS`` on POSIX systems that enforce it: an adapter that allocates beyond it gets a
``MemoryError``), and publishes on a shared ``Progress`` board which item it is reading
and when it last made progress, so the parent can terminate a worker stuck in one item
for longer than the time budget: a hung adapter cannot be interrupted from inside its own
process. Checksums count every chunk read as progress: a file of any size is hashed.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any, TextIO, cast

from acqharvest import logs, polite, sidecar
from acqharvest.adapter_api import HEAD_BYTES, ORIGINAL_METADATA_MAX_BYTES, FileProbe
from acqharvest.extract import extract
from acqharvest.model import (
    Acquisition,
    Extraction,
    ExtractionFailure,
    FileSettled,
    LogSettings,
    ProbedFile,
)
from acqharvest.polite import ReadRate
from acqharvest.readonly import FileReader
from acqharvest.registry import Registry, load_registry
from acqharvest.worker_logs import DatagramLines


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What every worker needs to know: logging, and which adapters each folder allows."""

    log: LogSettings | None = None
    #: watch root -> adapter names allowed there (empty: all).
    adapters_by_root: Mapping[Path, tuple[str, ...]] | None = None
    #: address-space cap of a worker process; None: no cap.
    memory_limit_bytes: int | None = None
    #: ``Settings.sidecar_names``: the sidecars read for each acquisition extracted.
    sidecar_names: tuple[str, ...] = ()
    #: the ``original_metadata_max_bytes`` setting, handed to every extraction.
    original_metadata_max_bytes: int = ORIGINAL_METADATA_MAX_BYTES
    #: run below the acquisition software (see ``polite``)
    lower_priority: bool = False
    #: this worker's share of the cap on checksum reads; None: no cap.
    read_bytes_per_second: float | None = None
    #: the daemon's loopback port for log lines (``worker_logs``); None: stderr only.
    log_port: int | None = None


@dataclass(frozen=True, slots=True)
class Overdue:
    """A worker that made no progress on one item for longer than the time budget."""

    row: int
    pid: int
    token: int
    index: int
    #: stalled while computing the file's checksum (a slow or dead share), not in an
    #: adapter: nothing says the file is bad, so its failure is not final
    hashing: bool


class Progress:
    """Shared memory where each worker process says which item it reads, and how it fares.

    One row per worker: (pid, task token, index in the batch, hashing flag, last progress
    and start on the monotonic clock, start 0 when idle). The budget runs from the last
    progress: the start of the item, the end of its checksum, and every chunk the checksum
    reads, so a huge file that keeps being read is never overdue while an adapter gets its
    whole budget after the checksum. Lock-free, so a terminated worker can never leave a
    lock held: the worker writes the start last and clears it first, and the parent reads
    the start before and after the rest of a row and trusts the row only if it held still.
    """

    _FIELDS = 6
    _HASHING, _PROGRESSED, _STARTED = 3, 4, 5

    def __init__(self, context: BaseContext, workers: int) -> None:
        self._rows = workers
        self._cells = context.RawArray("d", self._FIELDS * workers)
        self._claimed = context.RawValue("i", 0)
        self._claim_lock = context.Lock()

    def claim_row(self) -> int:
        """Called once by each worker process as it starts."""
        with self._claim_lock:
            row = int(self._claimed.value)
            self._claimed.value = row + 1
        if row >= self._rows:
            raise RuntimeError(f"more worker processes than the {self._rows} rows of the board")
        return row

    def begin(self, row: int, token: int, index: int) -> None:
        base = row * self._FIELDS
        self._cells[base + self._STARTED] = 0.0
        self._cells[base] = float(os.getpid())
        self._cells[base + 1] = float(token)
        self._cells[base + 2] = float(index)
        self._cells[base + self._HASHING] = 0.0
        now = time.monotonic()
        self._cells[base + self._PROGRESSED] = now
        self._cells[base + self._STARTED] = now

    def hashing(self, row: int, active: bool) -> None:
        """The checksum starts (True) or ends (False): the budget starts again either way."""
        base = row * self._FIELDS
        self._cells[base + self._PROGRESSED] = time.monotonic()
        self._cells[base + self._HASHING] = 1.0 if active else 0.0

    def progressed(self, row: int) -> None:
        """Another chunk of the checksum was read."""
        self._cells[row * self._FIELDS + self._PROGRESSED] = time.monotonic()

    def end(self, row: int) -> None:
        self._cells[row * self._FIELDS + self._STARTED] = 0.0

    def overdue(self, budget: float, now: float) -> list[Overdue]:
        """Every item that made no progress for longer than ``budget`` seconds."""
        late: list[Overdue] = []
        for row in range(self._rows):
            base = row * self._FIELDS
            started = self._cells[base + self._STARTED]
            pid, token, index = (int(self._cells[base + k]) for k in range(3))
            hashing = bool(self._cells[base + self._HASHING])
            progressed = self._cells[base + self._PROGRESSED]
            held_still = started == self._cells[base + self._STARTED]
            if started and held_still and now - progressed > budget:
                late.append(Overdue(row, pid, token, index, hashing))
        return late


_registry: Registry | None = None
#: the sidecars this process read, kept while unchanged
_sidecars = sidecar.Cache()
_setup = WorkerSetup()
_progress: Progress | None = None
_row = -1
_read_rate: ReadRate | None = None


def init_worker(setup: WorkerSetup, progress: Progress | None = None) -> None:
    """Process initializer (also called in-process when workers is 0)."""
    global _registry, _setup, _progress, _row, _read_rate  # per-process, set once at start
    _setup = setup
    if progress is not None:
        _progress, _row = progress, progress.claim_row()
    if setup.memory_limit_bytes is not None:
        _limit_memory(setup.memory_limit_bytes)
    if setup.read_bytes_per_second is not None:
        _read_rate = ReadRate(setup.read_bytes_per_second)
    if setup.log is not None:
        # A worker process: Ctrl-C and SIGTERM are for the parent, which stops the pool.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _exit_with_parent()
        # JSON lines to the daemon, which logs them again (``worker_logs``): only it
        # writes the log file, so that its rotation stays safe. Without its port, on the
        # inherited stderr (the service's journal).
        # Start-up notices are the parent's to give: workers speak only of problems.
        level = "debug" if setup.log.level == "debug" else "warning"
        stream = sys.stderr if setup.log_port is None else DatagramLines(setup.log_port)
        logs.configure(level, "json", None, stream=cast(TextIO, stream))
    if setup.lower_priority:
        # Inherited on POSIX; Windows passes the priority class on but not the I/O priority.
        try:
            polite.lower_priority()
        except OSError as exc:
            logs.get_logger().warning("priority_not_lowered", reason=str(exc))
    _registry = load_registry()
    if _row <= 0:  # one worker says it (each loads the registry), or the in-process one
        for name in _registry.missing:
            logs.get_logger().warning(
                "adapter_unavailable", adapter=name, reason=_registry.unavailable(name)
            )
    for root, names in (setup.adapters_by_root or {}).items():
        unknown = [name for name in names if name not in _registry.adapters]
        if unknown:
            logs.get_logger().warning(
                "watch_adapters_unknown", folder=str(root), adapters=unknown, effect="ignored"
            )


def _exit_with_parent() -> None:
    """Exit as soon as the daemon is gone, however it died.

    A daemon killed with SIGKILL (or a crashed service) cannot stop its pool, and worker
    processes would otherwise live on as orphans after every restart. The parent's
    sentinel becomes ready when it exits, on every platform.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)  # the parent is gone: nothing is left to report to, or to flush

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _limit_memory(limit: int) -> None:
    # Windows has no rlimits: only the time budget applies there
    if sys.platform != "win32":
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        except (ValueError, OSError) as error:  # e.g. macOS, which does not enforce it anyway
            logs.get_logger().warning("worker_memory_limit_unsupported", error=str(error))


def _current_registry() -> Registry:
    global _registry  # loaded lazily for one-shot commands
    if _registry is None:
        _registry = load_registry()
    return _registry


@dataclass(frozen=True, slots=True)
class ProbeFailure:
    """A settled file that could not be probed (vanished, unreadable, or changed meanwhile)."""

    settled: FileSettled
    reason: str
    #: True when the file changed while being read: observe it again rather than fail it.
    changed: bool = False
    #: False for errors that may pass (permissions, sharing violations): retried on rescan.
    final: bool = True


def probe(settled: FileSettled) -> ProbedFile | ProbeFailure:
    """Head bytes, adapter claim, sha256 and any digests adapters ask for, of one settled file.

    Only the file that settled is read (see ``readonly``): a path swapped for another
    file since is observed again, one swapped for a link or a FIFO is a failure naming it.
    """
    reader = FileReader({settled.path: settled.file_id})
    path = settled.path
    allowed = (_setup.adapters_by_root or {}).get(settled.root, ())
    registry = _current_registry()
    try:
        with logs.reading(path):
            head, digest, digests = _hashed(reader, path, registry.digests_for(path, allowed))
            found = registry.claim(FileProbe(path, settled.size, head), reader, allowed)
        after = os.lstat(path)
    except OSError as error:
        if reader.refused is None:
            reason = f"cannot read {path}: {error.strerror or error}"
            return ProbeFailure(settled, reason, final=False)
    if reader.refused is not None:
        # Also when the adapter's claim swallowed it: what it saw was not the settled file.
        refused = reader.refused
        return ProbeFailure(settled, str(refused), changed=refused.replaced, final=False)
    if after.st_size != settled.size or after.st_mtime_ns != settled.mtime_ns:
        return ProbeFailure(settled, f"{path} changed while it was read", changed=True)
    if found is None:
        return ProbedFile(settled, digest, None, f"file:{path}")
    name, claim = found
    # Claims name expected files relative to the file's folder; groups think in root terms.
    folder = path.parent.relative_to(settled.root)
    expects = tuple((folder / name).as_posix() for name in claim.expects)
    return ProbedFile(
        settled,
        digest,
        name,
        claim.group_key,
        role=claim.role,
        expects=expects,
        collects=claim.collects,
        expected_instances=claim.expected_instances,
        tree=None if claim.tree is None else Path(os.path.normpath(path.parent / claim.tree)),
        digests=digests,
    )


def _hashed(
    reader: FileReader, path: Path, extra: tuple[str, ...]
) -> tuple[bytes, str, dict[str, str]]:
    """Head, sha256 and ``extra`` digests of ``path``, each chunk read shown as progress.

    Hashing a 100 GB file takes minutes even on a fast share: it is bounded by progress,
    not by total time, and the adapter's claim then gets its whole budget. Under a read
    cap the worker sleeps between chunks; a chunk's wait counts as progress after it.
    """
    progress, row, rate = _progress, _row, _read_rate

    def chunk_read(count: int) -> None:
        if rate is not None:
            rate.consumed(count)
        if progress is not None:
            progress.progressed(row)

    if progress is None and rate is None:
        return reader.head_and_digests(path, HEAD_BYTES, extra)
    if progress is not None:
        progress.hashing(row, True)
    try:
        return reader.head_and_digests(path, HEAD_BYTES, extra, chunk_read)
    finally:
        if progress is not None:
            progress.hashing(row, False)


def extract_acquisition(
    acquisition: Acquisition,
    *,
    sidecar_names: Sequence[str] | None = None,
    original_metadata_max_bytes: int | None = None,
) -> Extraction | ExtractionFailure:
    """Run the claiming adapter over one acquisition, and read the sidecars above it;
    never raises. ``sidecar_names`` and ``original_metadata_max_bytes`` override the
    worker setup's (a one-shot command's)."""
    registry = _current_registry()
    adapter = registry.adapters.get(acquisition.adapter) if acquisition.adapter else None
    if acquisition.adapter and adapter is None:
        return ExtractionFailure(
            acquisition,
            acquisition.adapter,
            acquisition.primary.settled.path,
            f"adapter {acquisition.adapter} is not loaded in this process",
        )
    reader = FileReader({m.settled.path: m.settled.file_id for m in acquisition.members})
    with logs.reading(acquisition.primary.settled.path):
        result = extract(
            acquisition,
            adapter,
            reader,
            memory_limit=_setup.memory_limit_bytes,
            unavailable=registry.unavailable(acquisition.adapter) if acquisition.adapter else None,
            original_metadata_max_bytes=original_metadata_max_bytes
            or _setup.original_metadata_max_bytes,
        )
    if reader.refused is not None:
        # Whatever the adapter made of it, it did not read (only) the files that settled.
        name = result.adapter
        return ExtractionFailure(acquisition, name, reader.refused.path, str(reader.refused))
    names = _setup.sidecar_names if sidecar_names is None else sidecar_names
    if isinstance(result, ExtractionFailure) or not names:
        return result
    root = acquisition.root
    found = sidecar.find(acquisition.primary.settled.path, root, names)
    return dataclasses.replace(result, sidecars=tuple(_sidecars.read_all(found, root)))


ProbeOutcome = ProbedFile | ProbeFailure
ExtractOutcome = Extraction | ExtractionFailure


def _tracked(function: Callable[[Any], Any], token: int, batch: list[Any]) -> list[Any]:
    """``function`` over a batch (one round trip for many items), each item on the board."""
    results: list[Any] = []
    for index, item in enumerate(batch):
        if _progress is not None:
            _progress.begin(_row, token, index)
        try:
            results.append(function(item))
        finally:
            if _progress is not None:
                _progress.end(_row)
    return results


def probe_many(token: int, batch: list[FileSettled]) -> list[ProbeOutcome]:
    """``probe`` over a batch; ``token`` names the batch on the progress board."""
    return _tracked(probe, token, batch)


def extract_many(token: int, batch: list[Acquisition]) -> list[ExtractOutcome]:
    """``extract_acquisition`` over a batch; ``token`` names the batch on the progress board."""
    return _tracked(extract_acquisition, token, batch)
