"""Worker processes, and what becomes of the work they hold when one crashes or hangs.

Reading a file runs third-party code (vendor adapters, native readers), so it runs in
worker processes (``workers``): an adapter that crashes or hangs costs the file it was
reading, never the daemon and never the other files. Two classes:

- ``Pool`` wraps a ``ProcessPoolExecutor`` (spawned, not forked: watchdog threads hold
  locks) or, with ``workers: 0``, runs each task in the calling thread. It terminates a
  worker stuck on one item beyond the time budget (``extract_timeout_seconds``, read from
  the ``workers.Progress`` board) and starts a fresh executor when one broke.
- ``Workbench`` is what the harvest loop hands work to and collects it from. A worker
  death breaks every batch in its executor, and which item killed it is unknown, so:

  1. a batch broken because ``expire`` terminated a *hung* worker (a bystander) is
     submitted again as it was, less the item that timed out;
  2. a batch broken by a *crash* makes each of its items a suspect, re-run one at a time
     in a quarantine pool of one worker: a crash there names its file, which fails with
     "a worker process died", and the innocent items come back as usual;
  3. an item past the budget fails for good, except when its checksum stalled (no byte
     read: a share that stopped answering). That says nothing against the file: it is
     held back and read again after ``extract_timeout_seconds`` times 2^n (at most an hour).

Outcomes are returned as they are (``ProbedFile``/``ProbeFailure``,
``Extraction``/``ExtractionFailure``): what they mean for the harvest is the daemon's.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from acqharvest import logs, workers
from acqharvest.model import ExtractionFailure, FileSeen, FileSettled

log = logs.get_logger("acqharvest.pool")

Kind = Literal["probe", "extract"]


_TASKS: dict[Kind, Callable[[int, list[Any]], list[Any]]] = {
    "probe": workers.probe_many,
    "extract": workers.extract_many,
}


#: how long a stop waits for workers to finish the file they are reading
_STOP_WORKERS_SECONDS = 5.0


#: longest wait before a file whose checksum stalled (a dead share) is read again
_STALL_RETRY_MAX_SECONDS = 3600.0


class Pool:
    """Worker processes for probing and extraction, or the calling thread when workers is 0.

    Each item a worker reads may take at most ``time_budget`` seconds (see ``expire``).
    In-process (workers 0) nothing can interrupt a hung adapter and no budget applies.
    """

    def __init__(self, count: int, setup: workers.WorkerSetup, time_budget: float) -> None:
        self._count = count
        self._setup = setup
        self._time_budget = time_budget
        self._executor: cf.ProcessPoolExecutor | None = None
        self._progress: workers.Progress | None = None
        self._tokens = itertools.count(1)
        #: work in the workers by token: what an overdue worker was reading
        self._running: dict[int, tuple[Future[list[Any]], Kind, list[Any]]] = {}
        #: futures broken only because ``expire`` terminated a worker of their pool
        self._bystanders: set[Future[list[Any]]] = set()
        if count == 0:
            # The memory cap is a worker process's own: here it would cap the daemon itself,
            # its watch and delivery threads and every program it starts (the setting says
            # it needs workers >= 1).
            workers.init_worker(replace(setup, log=None, memory_limit_bytes=None))
        else:
            self._start()

    def _start(self) -> None:
        # spawn, not fork: watchdog threads are running and fork would copy their locks.
        context = multiprocessing.get_context("spawn")
        self._progress = workers.Progress(context, self._count)
        self._executor = cf.ProcessPoolExecutor(
            max_workers=self._count,
            mp_context=context,
            initializer=workers.init_worker,
            initargs=(self._setup, self._progress),
        )
        # Start the workers now: their imports then overlap the start-up scan.
        for _ in range(self._count):
            self._executor.submit(os.getpid)

    def submit(self, kind: Kind, batch: list[Any]) -> Future[list[Any]]:
        token = next(self._tokens)
        function = _TASKS[kind]
        if self._executor is None:
            future: Future[list[Any]] = Future()
            future.set_result(function(token, batch))
            return future
        try:
            future = self._executor.submit(function, token, batch)
        except BrokenProcessPool:
            # A worker died (a crashing adapter): a fresh pool for the work that remains.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._start()
            future = self._executor.submit(function, token, batch)
        self._running[token] = (future, kind, batch)
        future.add_done_callback(lambda _: self._running.pop(token, None))
        return future

    def expire(self) -> list[tuple[Kind, Any, bool]]:
        """Terminate every worker stuck on one item beyond the time budget; those items.

        Each with whether it stalled while hashing (see ``workers.Overdue``). The pool is
        then broken: the other work it held fails with ``BrokenProcessPool`` and
        ``bystander`` tells it apart from the work of a crashed worker.
        """
        if self._executor is None or self._progress is None:
            return []
        expired: list[tuple[Kind, Any, bool]] = []
        for late in self._progress.overdue(self._time_budget, time.monotonic()):
            process = getattr(self._executor, "_processes", {}).get(late.pid)
            running = self._running.get(late.token)
            if process is None or running is None:
                continue
            _, kind, batch = running
            what = "reading no byte of its file" if late.hashing else "on one item"
            log.error(
                "worker_terminated",
                pid=late.pid,
                reason=f"{what} for longer than {self._time_budget:g} s",
            )
            process.kill()
            self._progress.end(late.row)
            expired.append((kind, batch[late.index], late.hashing))
            self._bystanders.update(future for future, _, _ in list(self._running.values()))
        return expired

    def bystander(self, future: Future[list[Any]]) -> bool:
        """True when ``future`` broke only because ``expire`` terminated its pool's worker."""
        if future in self._bystanders:
            self._bystanders.discard(future)
            return True
        return False

    def shutdown(self, grace: float = _STOP_WORKERS_SECONDS) -> None:
        """Stop the workers; one stuck in a hung adapter is terminated after ``grace``.

        Its file was not recorded as harvested, so it is read again at the next start.
        """
        if self._executor is None:
            return
        # Private but stable since 3.2 (3.14 adds terminate_workers() for this).
        processes = list(getattr(self._executor, "_processes", {}).values())
        self._executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + grace
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            # Its sentinel fires a moment before an exiting worker can be reaped: only one
            # still alive at the deadline is stuck.
            while process.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            if process.is_alive():
                log.warning("worker_terminated", pid=process.pid, reason="still busy at stop")
                process.terminate()
                process.join(1.0)


class Workbench:
    """The worker tasks in flight, and their recovery when a worker crashes or hangs."""

    def __init__(self, time_budget: float, wake: Callable[[object], None]) -> None:
        self._budget = time_budget
        #: called (on a pool thread) whenever a task finishes: time to ``collect``
        self._wake = wake
        self._setup = workers.WorkerSetup()
        self._pool: Pool | None = None
        self._in_flight: list[tuple[Future[list[Any]], Kind, list[Any]]] = []
        #: items of batches whose worker died, re-run one at a time to find the culprit
        self._suspects: deque[tuple[Kind, Any]] = deque()
        self._quarantine: tuple[Future[list[Any]], Kind, Any] | None = None
        self._quarantine_pool: Pool | None = None
        #: id() of items whose worker exceeded the time budget; their failure is recorded
        self._timed_out: set[int] = set()
        #: files whose checksum stalled: path -> ((size, mtime_ns), stalls, monotonic time
        #: before which scans pass them by). Kept in memory only: a restart reads them at once.
        self._stalled: dict[Path, tuple[tuple[int, int], int, float]] = {}

    def start(self, count: int, setup: workers.WorkerSetup) -> None:
        """Start ``count`` workers (none: work runs in the calling thread)."""
        self._setup = setup
        self._pool = Pool(count, setup, self._budget)

    def shutdown(self) -> None:
        for pool in (self._pool, self._quarantine_pool):
            if pool is not None:
                pool.shutdown()

    def probing(self) -> int:
        """Files handed to the workers for probing and not collected yet."""
        return sum(len(batch) for _, kind, batch in self._in_flight if kind == "probe")

    def forget(self, path: Path) -> None:
        """A file gone or probed fine: no longer held back for a stalled checksum."""
        self._stalled.pop(path, None)

    def collect(self) -> list[tuple[Kind, list[Any]]]:
        """The outcomes of every finished task, failures for lost items included.

        Batches broken by a worker's death are submitted again or become suspects (see
        the module docstring); their outcomes come with a later ``collect``.
        """
        finished = self._expire_overdue()
        running: list[tuple[Future[list[Any]], Kind, list[Any]]] = []
        resubmit: list[tuple[Kind, list[Any]]] = []
        for future, kind, batch in self._in_flight:
            if not future.done():
                running.append((future, kind, batch))
                continue
            try:
                results = future.result()
            except (BrokenProcessPool, CancelledError):
                left = [item for item in batch if id(item) not in self._timed_out]
                self._timed_out.difference_update(id(item) for item in batch)
                if self._pool is not None and self._pool.bystander(future):
                    resubmit.append((kind, left))  # innocent: their worker was terminated
                else:
                    # Which item killed the worker is unknown: each is re-run on its own.
                    self._suspects.extend((kind, item) for item in left)
            else:
                if self._timed_out:
                    # finished just as its worker was terminated: it already failed
                    results = [
                        r
                        for r, i in zip(results, batch, strict=True)
                        if id(i) not in self._timed_out
                    ]
                    self._timed_out.difference_update(id(item) for item in batch)
                finished.append((kind, results))
        self._in_flight = running
        for kind, batch in resubmit:
            if batch:
                self.submit(kind, batch)
        finished.extend(self._run_suspects())
        return finished

    def busy(self, kind: Kind) -> bool:
        quarantined = self._quarantine is not None and self._quarantine[1] == kind
        return (
            quarantined
            or any(k == kind for _, k, _ in self._in_flight)
            or any(k == kind for k, _ in self._suspects)
        )

    def submit(self, kind: Kind, batch: list[Any]) -> None:
        """Hand a batch to the workers; ``collect`` returns its outcomes once done."""
        assert self._pool is not None, "submit before start"
        future = self._pool.submit(kind, batch)
        future.add_done_callback(self._wake)
        self._in_flight.append((future, kind, batch))

    def _expire_overdue(self) -> list[tuple[Kind, list[Any]]]:
        """Failures for the items whose worker exceeded the time budget and was terminated.

        One stuck in an adapter fails its file for good. One whose checksum stopped
        progressing (a share that stopped answering) says nothing against the file: it
        is read again later, with backoff, and never failed for good.
        """
        budget = self._budget
        reason = (
            f"reading it took longer than the time budget of {budget:g} s "
            "(extract_timeout_seconds); its worker process was terminated"
        )
        expired: list[tuple[Kind, list[Any]]] = []
        for source in (self._pool, self._quarantine_pool):
            for kind, item, hashing in source.expire() if source is not None else ():
                self._timed_out.add(id(item))
                if hashing:
                    delay = self.hold_back(item)
                    stalled = (
                        f"no byte of it could be read for {budget:g} s while computing its "
                        "checksum (extract_timeout_seconds; a slow or unreachable share?); its "
                        f"worker process was terminated; read again in {delay:g} s at the earliest"
                    )
                    expired.append((kind, [_crashed(kind, item, stalled, final=False)]))
                else:
                    expired.append((kind, [_crashed(kind, item, reason)]))
        return expired

    def hold_back(self, settled: FileSettled) -> float:
        """Hold back a file whose checksum stalled; the seconds until it is read again."""
        version = (settled.size, settled.mtime_ns)
        earlier = self._stalled.get(settled.path)
        attempts = earlier[1] if earlier is not None and earlier[0] == version else 0
        delay = min(_STALL_RETRY_MAX_SECONDS, self._budget * 2.0**attempts)
        self._stalled[settled.path] = (version, attempts + 1, time.monotonic() + delay)
        return delay

    def held_back(self, seen: FileSeen) -> bool:
        """Whether this version of the file stalled while hashed and still waits."""
        stalled = self._stalled.get(seen.path)
        if stalled is None:
            return False
        if stalled[0] != (seen.size, seen.mtime_ns):
            del self._stalled[seen.path]  # another version: read it as any new file
            return False
        return time.monotonic() < stalled[2]

    def _run_suspects(self) -> list[tuple[Kind, list[Any]]]:
        """Re-run suspects one at a time in their own worker: a crash then names its file."""
        finished: list[tuple[Kind, list[Any]]] = []
        if self._quarantine is not None and self._quarantine[0].done():
            future, kind, item = self._quarantine
            self._quarantine = None
            try:
                finished.append((kind, future.result()))
            except (BrokenProcessPool, CancelledError):
                if id(item) in self._timed_out:
                    self._timed_out.discard(id(item))  # its failure is recorded already
                else:
                    finished.append((kind, [_crashed(kind, item, _DIED)]))
        if self._quarantine is None and self._suspects:
            kind, item = self._suspects.popleft()
            if self._quarantine_pool is None:
                self._quarantine_pool = Pool(1, self._setup, self._budget)
            future = self._quarantine_pool.submit(kind, [item])
            future.add_done_callback(self._wake)
            self._quarantine = (future, kind, item)
        return finished


_DIED = "a worker process died while reading this file"


def _crashed(
    kind: Kind, item: Any, reason: str, *, final: bool = True
) -> workers.ProbeOutcome | workers.ExtractOutcome:
    """The outcome for the one item a worker process was lost on: a failure naming it."""
    if kind == "probe":
        return workers.ProbeFailure(item, f"{item.path}: {reason}", final=final)
    primary = item.primary.settled.path
    return ExtractionFailure(item, item.adapter, primary, f"{primary}: {reason}")
