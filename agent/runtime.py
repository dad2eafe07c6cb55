"""The imperative shell: threads, queues, start/stop order. The only module that knows every stage.

One harvest loop thread drives the pure state machines (settle, group) with the wall
clock, hands file reading to a worker pool, and spools packages; one delivery thread
drains the outbox; watchdog's observer threads feed events through a bounded queue.

This module is the wiring and the loop; the parts it wires each have a room of their own,
testable without a daemon: ``pool`` (worker processes, and recovery when one crashes or
hangs), ``decisions`` (what follows an extraction, as values), ``enrich`` (the package
chain, shared with ``acqharvest extract``), ``statedir`` (the state dir's layout and
health) and ``commands`` (``extract``, ``check``, ``status``). What stays here is what
needs the running daemon's state: the events queue, files in progress, the scan feed,
the registry and outbox it holds open, and their start and stop order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from acqharvest import logs, polite, workers
from acqharvest.adapter_api import HEAD_BYTES
from acqharvest.commands import endpoint_label
from acqharvest.decisions import (
    Fail,
    SettleAgain,
    after_extraction,
    failed,
    with_earlier_members,
)
from acqharvest.deidentify import Deidentifier
from acqharvest.deliver import Deliverer, build_sender
from acqharvest.durable import InstanceLock, StorageError
from acqharvest.enrich import enrich
from acqharvest.group import Grouper
from acqharvest.identity import instrument_block
from acqharvest.metrics import Metrics
from acqharvest.model import (
    Acquisition,
    Extraction,
    ExtractionFailure,
    FileGone,
    FileRefused,
    FileSeen,
    Package,
    ProbedFile,
    Receipt,
    Settings,
    Sidecar,
    WatchSettings,
)
from acqharvest.outbox import Outbox, OutboxError
from acqharvest.package import relative_path
from acqharvest.people import Attribution, PeopleFile
from acqharvest.pool import Workbench
from acqharvest.readonly import FileReader
from acqharvest.service import ServiceNotifier
from acqharvest.settle import ScanFeed, Settler
from acqharvest.sidecar import excluding_sidecars
from acqharvest.state import State
from acqharvest.statedir import (
    StorageHealth,
    installation_secret,
    instance_lock_path,
    own_paths,
    recreate,
    state_dir_problems,
    state_paths,
)
from acqharvest.status import PackageState, StatusBoard, StatusSnapshot
from acqharvest.statusserver import status_server
from acqharvest.watch import Watcher, examine, stat_file
from acqharvest.worker_logs import WorkerLogs

log = logs.get_logger("acqharvest.runtime")

T = TypeVar("T")
#: watch events queued for the harvest loop; beyond that a rescan stands in for them
_EVENT_QUEUE_SIZE = 100_000
#: overrides ``_EVENT_QUEUE_SIZE`` (read once, at start): less memory on a small machine,
#: and a storm tests can provoke with hundreds of files instead of a hundred thousand
EVENT_QUEUE_ENV = "ACQHARVEST_EVENT_QUEUE_SIZE"
#: seconds between watch health checks (dead, stalled or stale observers, inotify budget)
_HEALTH_SECONDS = 10.0
_IDLE_WAIT = 0.5
_RECEIPT_RETENTION_SECONDS = 90 * 24 * 3600
#: how long a stop waits for a send in progress before leaving it to the next start
_STOP_DELIVERY_SECONDS = 5.0
#: packages spooled with one fsync round; small enough that delivery starts early.
_SPOOL_BATCH = 16
#: files per probe task and acquisitions per extraction task sent to a worker
_PROBE_BATCH = 32
_EXTRACT_BATCH = 4


def _event_queue_size() -> int:
    raw = os.environ.get(EVENT_QUEUE_ENV)
    if raw is None:
        return _EVENT_QUEUE_SIZE
    if raw.strip().isdigit() and int(raw) > 0:
        return int(raw)
    log.warning("event_queue_size_ignored", value=raw, reason="not a positive whole number")
    return _EVENT_QUEUE_SIZE


def _batches(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class RunReport:
    """What a run did; ``run --once`` turns it into the exit code."""

    packaged: int = 0
    #: distinct failures (a set: a file failing again at every rescan of a daemon running
    #: for months counts, and is kept, once)
    failures: set[str] = field(default_factory=set)
    undelivered: int = 0
    #: packages the endpoint refused during this run (kept in outbox/rejected/)
    rejected: int = 0
    #: packages waiting in outbox/held/ for a person (``acqharvest outbox release``)
    held: int = 0


class Daemon:
    """Watches, settles, groups, extracts, packages and delivers until told to stop.

    With ``once``, it harvests what is in the folders now, delivers, and returns.
    """

    def __init__(self, settings: Settings, *, once: bool = False) -> None:
        self.settings = settings
        self.once = once
        # First: a broken people file (PeopleError) and an endpoint that cannot be set up
        # (DeliveryConfigError) are config errors, reported before anything is written.
        self._people = None if settings.people is None else PeopleFile(settings.people)
        self._unknown_operators: set[str] = set()
        #: where the worker processes' log lines arrive (``run`` opens it)
        self._worker_logs: WorkerLogs | None = None
        self._sender = build_sender(settings.endpoint)
        #: what the status server shows, and the metrics, told by the harvest as it goes
        self.board = StatusBoard(
            [ws.path for ws in settings.watch],
            Metrics(endpoint_label(settings), [str(ws.path) for ws in settings.watch]),
            instrument=settings.instrument.name or settings.instrument.id,
        )
        # its token is read now: a missing one is a config error, as the endpoint's
        self._status_server = status_server(
            settings.status_server, self._status_snapshot, self.board.metrics
        )
        outbox_dir, db_path, secret_path = state_paths(settings)
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        # Before the outbox recovery, which deletes the tmp files of whoever holds it.
        self._instance = InstanceLock(instance_lock_path(settings))
        self._instance.acquire()
        self.outbox = Outbox.open(outbox_dir)
        self.state = State.open(db_path)
        self._secret = installation_secret(secret_path)
        self.deidentifier = Deidentifier(settings.deidentify, self._secret)
        #: the registry file this daemon writes; another (or none) there means it was deleted
        self._state_file = self.state.file_id
        self._storage = StorageHealth()
        self.instrument = instrument_block(settings.instrument)
        self._host = socket.gethostname()
        self._folders = {ws.path: ws for ws in settings.watch}
        #: watch events, plus None as a wake-up when work comes back from a worker
        self._events: queue.Queue[FileSeen | FileGone | FileRefused | None] = queue.Queue(
            _event_queue_size()
        )
        self.settler = Settler(self._folder, head_is_blank=_head_is_blank)
        self.grouper = Grouper(
            # In a one-shot run nothing more will arrive: groups wait for the end instead.
            (lambda _: math.inf) if once else self._quiet_seconds,
            (lambda _: math.inf) if once else self._group_timeout,
            harvested=self._harvested_names,
            busy=self._on_the_way,
        )
        #: set when events were lost (our queue was full, the kernel's overflowed): the
        #: next loop turn rescans instead.
        self._rescan_now = threading.Event()
        self.watcher = Watcher(
            # a sidecar is read for the acquisitions below it, never harvested as one
            tuple(excluding_sidecars(ws, settings.sidecar_names) for ws in settings.watch),
            self._enqueue,
            on_lost=self._rescan_now.set,
            own=own_paths(settings),
        )
        self.report = RunReport()
        self._wake_delivery = threading.Event()
        self._work = Workbench(settings.extract_timeout_seconds, self._wake)
        #: settled files not yet packaged or failed, so rescans don't feed them in again
        self._in_progress: dict[Path, tuple[int, int]] = {}
        #: the scan under way, handed to the settle stage a bounded number of files at a time
        self._scan_feed = ScanFeed()
        self._service = ServiceNotifier()

    # ------------------------------------------------------------------ configuration views
    def _folder(self, root: Path) -> WatchSettings:
        return self._folders[root]

    def _quiet_seconds(self, root: Path) -> float:
        folder = self._folder(root)
        quiet = folder.group_quiet_seconds
        return folder.settle_seconds if quiet is None else quiet

    def _group_timeout(self, root: Path) -> float:
        return self._folder(root).group_timeout_seconds

    @staticmethod
    def _lower_priority() -> None:
        try:
            log.info("priority_lowered", changes=polite.lower_priority())
        except OSError as exc:
            log.warning("priority_not_lowered", reason=str(exc), effect="runs at its priority")

    # ------------------------------------------------------------------ entry point
    @staticmethod
    def _receive_worker_logs() -> WorkerLogs | None:
        try:
            return WorkerLogs()
        except OSError as error:  # no loopback: the workers log to stderr alone, as before
            log.warning("worker_logs_unavailable", reason=str(error), effect="stderr only")
            return None

    def run(self, stop: threading.Event) -> RunReport:
        """Run until ``stop`` is set (or, with ``once``, until what is there now is done)."""
        memory_mb = self.settings.extract_memory_mb
        lower = self.settings.priority == "low"
        if lower:
            self._lower_priority()  # before the workers start: POSIX children inherit it
        self._worker_logs = self._receive_worker_logs() if self.settings.workers else None
        read_cap = self.settings.checksum_max_mb_per_s
        setup = workers.WorkerSetup(
            log=self.settings.log,
            adapters_by_root={ws.path: ws.adapters for ws in self.settings.watch},
            memory_limit_bytes=None if memory_mb is None else memory_mb * 2**20,
            sidecar_names=self.settings.sidecar_names,
            original_metadata_max_bytes=self.settings.original_metadata_max_bytes,
            lower_priority=lower,
            # the cap is for all workers together: each reads at its share
            read_bytes_per_second=None
            if read_cap is None
            else read_cap * 1e6 / max(1, self.settings.workers),
            log_port=None if self._worker_logs is None else self._worker_logs.port,
        )
        self._work.start(self.settings.workers, setup)
        sender = self._sender
        deliverer = Deliverer(
            self.outbox,
            sender,
            max_backoff=self.settings.endpoint.max_backoff_seconds,
            on_answer=self._answered,
        )
        # A daemon thread: a POST hanging on a dead endpoint must not hold up a stop; the
        # package it carried stays pending and is sent again at the next start.
        delivery = threading.Thread(
            target=self._deliver_loop,
            args=(deliverer, stop),
            name="acqharvest-deliver",
            daemon=True,
        )
        rejected_before = len(self.outbox.rejected())
        log.info(
            "daemon_started",
            config=self.settings.source,
            folders=[str(ws.path) for ws in self.settings.watch],
            endpoint=endpoint_label(self.settings),
            state_dir=str(self.settings.state_dir),
            once=self.once,
        )
        try:
            if not self.once:
                self.watcher.start()
                self.board.watch_health(self.watcher.unwatched())
                if self._status_server is not None:
                    self._status_server.serve()
            delivery.start()
            self._scan(self.watcher.scan())
            if self.once:
                self._harvest_until_idle(stop)
                self._wait_for_attempts(deliverer, stop)
            else:
                folders = len(self.settings.watch)
                self._service.ready(f"watching {folders} folder{'s' if folders != 1 else ''}")
                self._harvest_loop(stop)
        finally:
            if not self.once:
                self._service.stopping()
            stop.set()
            self._wake_delivery.set()
            if self._status_server is not None:
                self._status_server.stop()
            self.watcher.stop()
            if delivery.is_alive():
                delivery.join(timeout=_STOP_DELIVERY_SECONDS)
            if not delivery.is_alive():
                sender.close()
            self._work.shutdown()
            if self._worker_logs is not None:
                self._worker_logs.close()  # after the workers: their last lines are in
            self.report.undelivered = len(self.outbox.pending())
            self.report.rejected = len(self.outbox.rejected()) - rejected_before
            self.report.held = len(self.outbox.held())
            self.state.close()
            self._instance.release()
            log.info(
                "daemon_stopped",
                packaged=self.report.packaged,
                failures=len(self.report.failures),
                undelivered=self.report.undelivered,
                rejected=self.report.rejected,
                held=self.report.held,
            )
        return self.report

    def _enqueue(self, event: FileSeen | FileGone | FileRefused) -> None:
        """Called on watchdog threads; never blocks them, never loses a file.

        In an event storm (a remount, a copy of a whole tree) the queue fills; from then on
        events are dropped, not held: the rescan they trigger starts after them, so it sees
        everything they said. Memory stays bounded by the queue size.
        """
        if self._rescan_now.is_set():
            return
        try:
            self._events.put_nowait(event)
        except queue.Full:
            log.warning("event_queue_full", path=str(event.path), action="rescan")
            self._rescan_now.set()

    def _wake(self, _: object) -> None:
        with contextlib.suppress(queue.Full):
            self._events.put_nowait(None)

    # ------------------------------------------------------------------ harvest loop
    def _harvest_loop(self, stop: threading.Event) -> None:
        next_rescan = time.monotonic() + self.settings.rescan_seconds
        next_health = time.monotonic() + _HEALTH_SECONDS
        while not stop.is_set():
            self._service.alive()
            self._drain_events(self._wait_time())
            self._turn(stop, self._step, time.time())
            self._turn(stop, self._check_state_dir)
            if time.monotonic() >= next_health:
                self._turn(stop, self._check_watch)
                next_health = time.monotonic() + _HEALTH_SECONDS
            if time.monotonic() >= next_rescan or self._rescan_now.is_set():
                self._rescan_now.clear()
                self._turn(stop, self._rescan)
                next_rescan = time.monotonic() + self.settings.rescan_seconds

    def _turn(self, stop: threading.Event, action: Callable[..., None], *args: Any) -> None:
        """One unit of harvest work; the daemon outlives any one that fails."""
        try:
            action(*args)
        except StorageError as error:
            # The state dir is full, read-only or gone: the files are harvested again
            # by the next regular rescan, without hammering the disk meanwhile.
            self._storage.failed(error)
            self._in_progress.clear()
            stop.wait(_IDLE_WAIT)
        except Exception as error:
            # Nothing is lost: files are marked done only after their package is on disk,
            # so a rescan picks up whatever this turn dropped.
            log.exception("harvest_step_failed", error=str(error))
            self.report.failures.add(f"harvest step failed: {error}")
            self._in_progress.clear()
            self._rescan_now.set()
            stop.wait(_IDLE_WAIT)

    def _check_watch(self) -> None:
        restarted = self.watcher.check_health()
        self.board.watch_health(self.watcher.unwatched(), restarted)
        if restarted:
            self._rescan_now.set()  # what its events missed while it was down

    def _rescan(self) -> None:
        self._scan(self.watcher.scan())

    def _harvest_until_idle(self, stop: threading.Event) -> None:
        # Files still changing after two full windows are left for the next run; files the
        # scan hands on later get their two windows from then.
        longest = max(ws.settle_seconds for ws in self.settings.watch)
        deadline = time.monotonic() + 2 * longest + _IDLE_WAIT
        fed = self._scan_feed.passed
        while not stop.is_set():
            self._turn(stop, self._step, time.time())
            if self._scan_feed.passed != fed:
                fed = self._scan_feed.passed
                deadline = time.monotonic() + 2 * longest + _IDLE_WAIT
            pending = self.settler.tracked or self._scan_feed.active
            settling = pending and time.monotonic() < deadline
            if not settling and not self._work.busy("probe"):
                break
            self._drain_events(self._wait_time())
        if self.settler.tracked or self._scan_feed.active:
            log.warning(
                "files_not_settled",
                count=self.settler.tracked,
                scan_unfinished=self._scan_feed.active,
                action="next run",
            )
        # Nothing else is coming in this run: release every group, complete or not, and
        # again whatever a failed acquisition put back (each round fails one file more).
        while not stop.is_set():
            self._turn(stop, self._extract, self.grouper.ready(math.inf))
            if not self._work.busy("extract"):
                break
            self._drain_events(_IDLE_WAIT)
            self._turn(stop, self._collect, time.time())

    def _wait_time(self) -> float:
        now = time.time()
        waits = [
            w for w in (self.settler.next_due(now), self.grouper.next_due(now)) if w is not None
        ]
        return max(0.0, min([_IDLE_WAIT, *waits]))

    def _drain_events(self, timeout: float) -> None:
        try:
            event = self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait()
        except queue.Empty:
            return
        self._take(event)
        for _ in range(self._events.maxsize):
            try:
                self._take(self._events.get_nowait())
            except queue.Empty:
                return

    def _take(self, event: FileSeen | FileGone | FileRefused | None) -> None:
        if event is None:
            return  # a wake-up: finished work is collected by the next step
        if not isinstance(event, FileSeen):
            self.settler.forget(event.path)
            self.grouper.remove(event.path)
            self._in_progress.pop(event.path, None)
            self._work.forget(event.path)
            if isinstance(event, FileRefused):
                # watch logged it once; this makes it one line of ``acqharvest status``
                self.report.failures.add(f"{event.path}: {event.reason}")
                self.state.record_failure(event.path, 0, 0, event.reason)
                self.board.file_failed(event.root, event.path, event.reason)
            else:
                self.board.file_left(event.root, event.path)
            return
        if self._in_progress.get(event.path) == (event.size, event.mtime_ns):
            return  # settled already; its package is on the way
        if self._work.held_back(event):
            return  # a later scan sees it again
        done = self.state.is_done(event.path, event.size, event.mtime_ns, event.file_id)
        if not done and self.settler.observe(event):
            self.board.file_seen(event.root, event.path)

    def _scan(self, seen: Iterable[FileSeen]) -> None:
        """Start a scan (replacing one under way: the new one sees every file again)."""
        self._scan_feed.start(seen)
        self._feed_scan()

    def _feed_scan(self) -> None:
        """Take files from the scan under way while few are settling or being probed."""
        probing = self._work.probing()
        self._scan_feed.feed(self._take, lambda: self.settler.tracked + probing)

    def _step(self, now: float) -> None:
        """Hand settled files to the workers, collect what they finished, release groups."""
        self._feed_scan()
        settled = self.settler.tick(now, _stat)
        for file in settled:
            self._in_progress[file.path] = (file.size, file.mtime_ns)
            self.board.file_settled(file.root, file.path)
        for batch in _batches(settled, _PROBE_BATCH):
            self._work.submit("probe", batch)
        self._collect(now)
        self._extract(self.grouper.ready(now))

    def _extract(self, ready: list[Acquisition]) -> None:
        merged = [
            with_earlier_members(acquisition, self.state.members_of(acquisition.key), _stat)
            for acquisition in ready
        ]
        for batch in _batches(merged, _EXTRACT_BATCH):
            self._work.submit("extract", batch)

    def _collect(self, now: float) -> None:
        """Take every finished worker task, then act on probes first, extractions second."""
        finished = self._work.collect()
        for kind, results in finished:
            if kind == "probe":
                for result in results:
                    self._probed(result, now)
        packages: list[tuple[Package, Acquisition]] = []
        for kind, results in finished:
            if kind == "extract":
                for extraction in results:
                    package = self._package(extraction, now)
                    if package is not None:
                        packages.append((package, extraction.acquisition))
        for batch in _batches(packages, _SPOOL_BATCH):
            self._spool(batch)

    def _package(self, extraction: workers.ExtractOutcome, now: float) -> Package | None:
        """The package of one extraction, or None after recording why there is none."""
        members = extraction.acquisition.members
        seen_now = [examine(m.settled.path, m.settled.root, "scan") for m in members]
        decision = after_extraction(extraction, seen_now, self._in_progress)
        if isinstance(decision, SettleAgain):
            self._settle_again(extraction.acquisition, decision, seen_now)
            return None
        if isinstance(decision, Fail):
            self._apply_failure(decision, now)
            return None
        try:
            package = self._build(decision.extraction)
        except Exception as error:  # noqa: BLE001 - one bad acquisition must not stop the rest
            primary = extraction.acquisition.primary.settled.path
            self._fail(
                ExtractionFailure(
                    extraction.acquisition,
                    extraction.adapter,
                    primary,
                    f"{primary}: cannot build the package: {type(error).__name__}: {error}",
                ),
                now,
            )
            return None
        self._note_sidecars(decision.extraction.sidecars)
        return package

    def _note_sidecars(self, sidecars: Iterable[Sidecar]) -> None:
        """A sidecar not applied is a problem ``status`` lists, logged once per cause (its
        packages still go out, marked); once applied again, it is no longer one."""
        for sidecar in sidecars:
            if sidecar.error is None:
                self.state.clear_failure(sidecar.path)
                continue
            reason = f"sidecar not applied, packages go out without its values: {sidecar.error}"
            if self.state.failed_already(sidecar.path, reason):
                continue
            log.warning("sidecar_not_applied", path=str(sidecar.path), reason=sidecar.error)
            self.state.record_failure(
                sidecar.path, sidecar.size or 0, sidecar.mtime_ns or 0, reason, final=False
            )

    def _settle_again(
        self,
        acquisition: Acquisition,
        decision: SettleAgain,
        seen_now: list[FileSeen | FileRefused | None],
    ) -> None:
        """Members changed after settling: each is observed again as it is now.

        One refused now is recorded as refused, never packaged.
        """
        log.info(
            "acquisition_changed_while_read",
            path=str(decision.changed[0]),
            changed=len(decision.changed),
            action="settle again",
        )
        self._release([acquisition])
        for seen in seen_now:
            if isinstance(seen, FileRefused):
                log.warning("file_refused_after_read", path=str(seen.path), reason=seen.reason)
            if seen is not None:
                self._take(seen)

    def _probed(self, result: workers.ProbeOutcome, now: float) -> None:
        if isinstance(result, ProbedFile):
            self._work.forget(result.settled.path)
            if self.state.refresh_unchanged(result):
                # Looked changed (touched, replaced by a copy, remounted); the content is not.
                self._in_progress.pop(result.settled.path, None)
                self.board.file_left(result.settled.root, result.settled.path)
                log.debug("file_unchanged", path=str(result.settled.path))
            else:
                self.grouper.add(result, now)
            return
        path = result.settled.path
        self._in_progress.pop(path, None)
        if result.changed:
            seen = _stat(path, result.settled.root)
            if seen is not None:
                self.settler.observe(seen)
            return
        self._log_failure("file_unreadable", path, result.reason, retried=not result.final)
        self.board.file_failed(result.settled.root, path, result.reason)
        self.report.failures.add(result.reason)
        settled = result.settled
        self.state.record_failure(
            path, settled.size, settled.mtime_ns, result.reason, final=result.final
        )

    def _spool(self, batch: list[tuple[Package, Acquisition]]) -> None:
        """One fsync round for many packages; delivery starts on them at once."""
        try:
            self.outbox.spool([package for package, _ in batch])
        except OutboxError as error:
            # Not recorded as harvested, so the files are packaged again on a later scan.
            self._storage.failed(error, packages=len(batch))
            self.report.failures.add(str(error))
            self._release(acquisition for _, acquisition in batch)
            return
        self.state.record_packages(
            (package.acquisition_key, package.package_id, acquisition.adapter, acquisition.members)
            for package, acquisition in batch
        )
        self._storage.ok()
        self._release(acquisition for _, acquisition in batch)
        self.board.built(len(batch))
        for package, acquisition in batch:
            self.board.packaged(
                acquisition.root,
                acquisition.primary.settled.path,
                [member.settled.path for member in acquisition.members],
                package.package_id,
            )
            log.info(
                "acquisition_packaged",
                package_id=package.package_id,
                adapter=acquisition.adapter,
                path=relative_path(acquisition.primary.settled.path, acquisition.root),
                files=len(acquisition.members),
                # the package's verdict: the grouper's on the files and the adapter's on
                # what they hold (a header without its pixel data)
                complete=package.body["acquisition"]["complete"],
            )
            if package.burned_in_risk:
                # pixels are never cleaned: a person must look before the images go on
                log.warning(
                    "burned_in_annotation",
                    package_id=package.package_id,
                    reason=package.burned_in_risk,
                    held=package.held,
                    release=f"acqharvest outbox release {package.package_id}"
                    if package.held
                    else None,
                )
        self.report.packaged += len(batch)
        self._wake_delivery.set()
        self._note_identities(batch)

    def _note_identities(self, batch: list[tuple[Package, Acquisition]]) -> None:
        """Keep the packages' identity mismatches for ``status``; each is logged once per
        acquisition (its later packages with the same mismatch are not logged again)."""
        checked = [
            (
                package,
                acquisition,
                package.body["provenance"]["identity_check"].get("mismatches", []),
            )
            for package, acquisition in batch
        ]
        new = self.state.record_identities(
            (acquisition.key, package.package_id, acquisition.primary.settled.path, mismatches)
            for package, acquisition, mismatches in checked
        )
        for package, acquisition, mismatches in checked:
            if acquisition.key not in new:
                continue
            for mismatch in mismatches:
                log.warning(
                    "instrument_identity_mismatch",
                    package_id=package.package_id,
                    path=relative_path(acquisition.primary.settled.path, acquisition.root),
                    field=mismatch["field"],
                    configured=mismatch["configured"],
                    reported=mismatch["reported"],
                    key=f"instrument.{mismatch['field']}",
                )

    def _check_state_dir(self) -> None:
        """Recreate the state dir when it was deleted under the running daemon.

        Its registry and outbox are gone with it: every file is harvested and sent again
        (the endpoint deduplicates by Idempotency-Key), with the same de-identification key.
        """
        if self._state_file is not None and self.state.file_id == self._state_file:
            return
        _, db_path, _ = state_paths(self.settings)
        log.error(
            "state_dir_lost",
            path=str(self.settings.state_dir),
            missing=str(db_path),
            action="recreated; files already harvested are harvested and sent again",
        )
        recreate(self.settings, self._instance, self._secret)
        self.outbox.ensure_folders()
        self.state.close()
        self.state = State.open(db_path)
        self._state_file = self.state.file_id
        self._in_progress.clear()
        self._rescan_now.set()

    def _harvested_names(self, root: Path, key: str) -> list[str]:
        """Root-relative names of the files packaged under ``key`` in ``root`` (see Grouper)."""
        return [
            record.path.relative_to(root).as_posix()
            for record in self.state.members_of(key)
            if record.root == root
        ]

    def _on_the_way(self, folder: Path) -> bool:
        """Whether a file under ``folder`` may still join its tree group (see Grouper).

        It may while it settles or is probed, and while a scan is under way (its files
        not yet fed are under some folder too). One being extracted with an earlier
        package of the tree counts as well: the next package then lists it.
        """
        if self._scan_feed.active or self.settler.tracks_under(folder):
            return True
        return any(
            path.is_relative_to(folder) and not self.grouper.holds(path)
            for path in self._in_progress
        )

    def _build(self, extraction: Extraction) -> Package:
        acquisition = extraction.acquisition
        package = enrich(
            extraction,
            self.deidentifier,
            instrument=self.instrument,
            path_template=self._folder(acquisition.root).path_template,
            previous=self.state.package_of(acquisition.key),
            host=self._host,
            attribution=Attribution.of(
                self.settings, None if self._people is None else self._people.current()
            ),
        )
        unknown = package.unknown_operator
        if unknown is not None and unknown not in self._unknown_operators:
            # once per name and daemon: every package of the operator carries the warning
            self._unknown_operators.add(unknown)
            log.warning(
                "operator_not_in_people_file",
                operator=unknown,
                people=str(self.settings.people),
                action="add a row for them; later packages name them",
            )
        return package

    def _log_failure(self, event: str, path: Path, reason: str, **context: Any) -> None:
        """Log a failure once per file and cause: a file failing again for the same reason
        (an unreadable file at every rescan) is only a debug line, ``failure_repeated``."""
        if self.state.failed_already(path, reason):
            log.debug("failure_repeated", logged_as=event, path=str(path), reason=reason)
        else:
            log.error(event, path=str(path), reason=reason, **context)

    def _fail(self, failure: ExtractionFailure, now: float) -> None:
        self._apply_failure(failed(failure, self._in_progress), now)

    def _apply_failure(self, decision: Fail, now: float) -> None:
        """Record the failure for the members it fails; group the others again (``failed``)."""
        failure = decision.failure
        self._log_failure(
            "extraction_failed", failure.path, failure.reason, adapter=failure.adapter
        )
        self.report.failures.add(failure.reason)
        self.board.acquisition_failed(
            failure.adapter,
            failure.acquisition.root,
            failure.acquisition.primary.settled.path,
            [member.settled.path for member in decision.failed],
            failure.reason,
        )
        for member in decision.failed:
            settled = member.settled
            self.state.record_failure(
                settled.path, settled.size, settled.mtime_ns, failure.reason, final=True
            )
        self._release([failure.acquisition])
        for member in decision.regroup:
            self._in_progress[member.settled.path] = (member.settled.size, member.settled.mtime_ns)
            self.grouper.add(member, now)

    def _release(self, acquisitions: Iterable[Acquisition]) -> None:
        """Files that left the pipeline (packaged or failed) may be seen by scans again."""
        for acquisition in acquisitions:
            for member in acquisition.members:
                self._in_progress.pop(member.settled.path, None)

    # ------------------------------------------------------------------ status server
    def _status_snapshot(self) -> StatusSnapshot:
        """The board completed with what the outbox and the state dir say now (any thread)."""
        summary = self.outbox.summary(limit=100)
        problems = {problem.package_id: problem for problem in summary.problems}

        def package_state(package_id: str) -> PackageState | None:
            state = self.outbox.state_of(package_id)
            problem = problems.get(package_id)
            if state is None:
                return None
            return (
                state,
                problem.attempts if problem else 0,
                problem.last_error if problem else None,
            )

        oldest = self.outbox.oldest_pending_at()
        storage = [self._storage.problem] if self._storage.problem else []
        return self.board.snapshot(
            outbox={
                f.name: value
                for f in dataclasses.fields(summary)
                if isinstance(value := getattr(summary, f.name), int)
            },
            package_state=package_state,
            oldest_pending_age=None if oldest is None else max(0.0, time.time() - oldest),
            state_dir_problems=state_dir_problems(self.settings.state_dir) + storage,
        )

    def _answered(self, receipt: Receipt) -> None:
        """The endpoint confirmed or refused a package (on the delivery thread)."""
        if receipt.outcome == "confirmed":
            self.board.delivered(receipt.package_id)
        else:
            self.board.rejected(receipt.package_id, receipt.detail)

    # ------------------------------------------------------------------ delivery
    def _deliver_loop(self, deliverer: Deliverer, stop: threading.Event) -> None:
        next_prune = time.monotonic()
        while not stop.is_set():
            try:
                wait = deliverer.step(stop.is_set)
                if time.monotonic() >= next_prune:
                    # Receipts only answer "was it sent?"; old ones need not pile up.
                    self.outbox.prune_delivered(_RECEIPT_RETENTION_SECONDS)
                    next_prune = time.monotonic() + 3600
            except Exception as error:
                log.exception("delivery_loop_error", error=str(error))
                wait = _IDLE_WAIT
            self._wake_delivery.wait(wait)
            self._wake_delivery.clear()

    def _wait_for_attempts(self, deliverer: Deliverer, stop: threading.Event) -> None:
        """``run --once``: wait until every pending package was tried at least once.

        Or until the endpoint fails: it then pauses (see ``Deliverer``) and the untried
        packages would meet the same failure; the next run sends them.
        """
        self._wake_delivery.set()
        while not stop.is_set():
            untried = [pid for pid in self.outbox.pending() if pid not in deliverer.attempted]
            if not untried or deliverer.endpoint_failing:
                return
            stop.wait(0.05)


def _stat(path: Path, root: Path) -> FileSeen | None:
    return stat_file(path, root, "scan")


def _head_is_blank(path: Path) -> bool:
    """Whether the bytes adapters would see first are all zero: reserved, not yet written."""
    try:
        head = FileReader().head(path, HEAD_BYTES)
    except OSError:
        return False  # the probe reports a file it cannot read
    return bool(head) and not head.strip(b"\0")
