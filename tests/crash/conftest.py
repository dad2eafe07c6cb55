"""Kill -9 a real daemon at chosen points of the harvest and delivery path, then restart it.

The kill points act on the real process from outside, and a kill counts at its point only
when the state the daemon left on disk and at the endpoint shows it really was there:

- ``after_spool``: the endpoint holds every request unread for the whole cycle; the daemon
  is killed once a new package is in ``pending/``. Counted when that package is pending,
  not delivered, and never received by the endpoint.
- ``mid_post``: killed from the endpoint's ``on_receive`` hook (the body arrived, no answer,
  nothing stored). Counted when the package is still pending and has no receipt.
- ``after_accept``: killed from ``on_accept`` (the endpoint stored the package, its answer
  is not sent). Counted when the endpoint holds it and the outbox still has it pending.

Two more points vary the crash: ``after_reject`` (the endpoint refused a package with 400,
the daemon is moving it to ``rejected/``, after which ``acqharvest retry --all`` queues it
again) and ``random`` moments. Nothing in the daemon knows it is being tested.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.endpoint import LoopbackEndpoint, RecordedRequest
from tests.helpers import wait_until
from tests.integration.conftest import (
    SMALL_TIFFS,
    TOKEN,
    Entry,
    Harness,
    entry_of,
    tree_changes,
    tree_snapshot,
)
from tests.simulator import write_then_rename

#: the points the issue names; a campaign reaches each of them many times
NAMED_POINTS = ("after_spool", "mid_post", "after_accept")
#: points that vary the crash, visited once every few rounds of the named ones
EXTRA_POINTS = ("after_reject", "random")
POINTS = NAMED_POINTS + EXTRA_POINTS
#: kill points fired by the endpoint's hooks, armed before the daemon starts
_ENDPOINT_POINTS = ("mid_post", "after_accept", "after_reject")
#: rounds of the named points between two visits to an extra point
_ROUNDS_PER_EXTRA = 3
#: how long one kill point may take to come; generous, the machine is shared
POINT_TIMEOUT = 60.0
#: temporary names acquisition software writes under before renaming: all excluded by the
#: default ``exclude`` list, so none may ever be named in a package
TEMP_NAMES = ("{}.tmp", "~${}", ".{}.part")


class CrashRun:
    """Waves of acquisitions, a daemon started and killed at one point per cycle."""

    def __init__(self, harness: Harness, endpoint: LoopbackEndpoint, corpus: Path) -> None:
        self.harness = harness
        self.endpoint = endpoint
        self.corpus = corpus
        self.expected: set[str] = set()
        #: kills whose point the state after the kill confirmed
        self.kills: Counter[str] = Counter()
        #: cycles whose point never came, or whose kill the state showed to be elsewhere
        self.misses: Counter[str] = Counter()
        #: packages the endpoint stored while its daemon was killed before hearing so
        self.accepted_unheard: set[str] = set()
        self._rng = random.Random(os.environ.get("ACQHARVEST_CRASH_SEED", "kill-9"))  # noqa: S311 - test schedule
        self._writers: list[threading.Thread] = []
        #: the watched folder as the test's own writes left it, entry by entry: the writers
        #: go on across kills, so no single daemon run has a before and after of its own
        self._as_written: dict[str, Entry] = {".": entry_of(harness.watch)}
        self._as_written_lock = threading.Lock()
        self._armed: str | None = None
        #: requests the armed point lets through before it kills
        self._skip = 0
        #: Idempotency-Key of the request whose hook killed the daemon
        self._victim: str | None = None
        self._fired = threading.Event()
        self._lock = threading.Lock()
        endpoint.on_receive = self._on_receive
        endpoint.on_accept = self._on_accept

    # ------------------------------------------------------------------ acquisitions
    def add_wave(self, files: int) -> None:
        """``files`` corpus files, each under a new path, into the watched folder.

        Even ones are copied straight to their final name; odd ones are written under a
        temporary name then renamed, by a thread that goes on across the next kill.
        """
        wave = self.harness.watch / f"wave{len(self.expected):04d}"
        wave.mkdir()
        self._note_written(wave)
        for index in range(files):
            # each copy, under its own path, is its own package
            source = self.corpus / SMALL_TIFFS[len(self.expected) % len(SMALL_TIFFS)]
            target = wave / f"{index}_{source.name}"
            self.expected.add(target.relative_to(self.harness.watch).as_posix())
            if index % 2 == 0:
                shutil.copyfile(source, target)
                self._note_written(target)
                continue
            temp = TEMP_NAMES[len(self._writers) % len(TEMP_NAMES)].format(target.name)
            writer = threading.Thread(target=self._write_then_rename, args=(source, target, temp))
            writer.start()
            self._writers.append(writer)

    def _write_then_rename(self, source: Path, target: Path, temp: str) -> None:
        data = source.read_bytes()
        write_then_rename(data, target, temp_name=temp, chunk_size=len(data) // 3 + 1, pause=0.15)
        self._note_written(target)

    def _note_written(self, path: Path) -> None:
        """Record ``path`` and its folder (which the write changed too) as the test left them.

        Writers to one folder may record in any order: whichever records last saw every
        write before its own, so the folder's last record is its final state.
        """
        watch = self.harness.watch
        with self._as_written_lock:
            for written in (path, path.parent):
                self._as_written[written.relative_to(watch).as_posix()] = entry_of(written)

    # ------------------------------------------------------------------ killing
    def _take_aim(self, point: str, request: RecordedRequest) -> subprocess.Popen[bytes] | None:
        """The daemon to kill when ``point`` is armed and its turn came (disarming it)."""
        with self._lock:
            if self._armed != point or self.harness.process is None:
                return None
            if self._skip:
                self._skip -= 1
                return None
            self._armed = None
            self._victim = request.headers.get("idempotency-key")
            return self.harness.process

    def _kill(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        self._fired.set()

    def _on_receive(self, request: RecordedRequest) -> str | None:
        process = self._take_aim("mid_post", request)
        if process is not None:
            # Killed with the body received and no answer: the endpoint does not keep it.
            self._kill(process)
            return "drop"
        process = self._take_aim("after_reject", request)
        if process is None:
            return None
        # Refused with a 400, killed while the daemon moves it to rejected/ (or just after).
        threading.Timer(self._rng.uniform(0.0, 0.05), self._kill, (process,)).start()
        return "reject"

    def _on_accept(self, request: RecordedRequest) -> None:
        process = self._take_aim("after_accept", request)
        if process is not None:
            self._kill(process)

    # ------------------------------------------------------------------ the state on disk
    def _pending_keys(self) -> set[str]:
        return {path.stem for path in self.harness.pending()}

    def _confirmed(self, key: str) -> bool:
        return (self.harness.state / "outbox" / "delivered" / f"{key}.json").exists()

    def _received_keys(self) -> set[str]:
        return {request.headers.get("idempotency-key", "") for request in self.endpoint.received}

    def _was_at(self, point: str, pending_before: set[str]) -> bool:
        """Whether the state the killed daemon left shows it was killed at ``point``."""
        if point == "after_spool":
            received = self._received_keys()
            spooled = self._pending_keys() - pending_before
            return any(key not in received and not self._confirmed(key) for key in spooled)
        key = self._victim
        if key is None or key not in self._pending_keys() or self._confirmed(key):
            return False
        if point == "after_accept":
            if key not in self.endpoint.unique:
                return False
            self.accepted_unheard.add(key)
        return True

    def cycle(self, point: str) -> bool:
        """Start the daemon, kill it at ``point``; False if it was not killed there."""
        self._fired.clear()
        self._victim = None
        pending_before = self._pending_keys()
        if point == "after_spool":
            self.endpoint.hold()
        if point in _ENDPOINT_POINTS:
            with self._lock:
                # before the start: the first POST may come at once. Letting a few through
                # varies the package hit and lets the campaign deliver some on the way.
                self._skip = self._rng.randrange(min(3, max(1, len(pending_before))))
                self._armed = point
        self.harness.start()
        if point in _ENDPOINT_POINTS:
            reached = self._fired.wait(POINT_TIMEOUT)
            with self._lock:
                self._armed = None
            reached = reached or self._fired.is_set()  # fired between the timeout and disarm
        elif point == "after_spool":
            reached = wait_until(
                lambda: self._pending_keys() - pending_before,
                timeout=POINT_TIMEOUT,
                interval=0.005,
            )
        else:
            time.sleep(self._rng.uniform(0.0, 2.5))
            reached = True
        self.harness.kill()
        # the daemon is dead: what is on disk and at the endpoint now is what it left
        reached = reached and (point in EXTRA_POINTS or self._was_at(point, pending_before))
        self.endpoint.release()
        if point == "after_reject":
            # what an admin does once the endpoint is fixed; the next start sends them
            retried = self.harness.command("retry", "--all")
            assert retried.returncode == 0, retried.stdout + retried.stderr
        (self.kills if reached else self.misses)[point] += 1
        return reached

    def schedule(self) -> Iterator[str]:
        """Rounds of the named points, with an extra point after every few rounds."""
        extras = 0
        for round_ in itertools.count(1):
            yield from NAMED_POINTS
            if round_ % _ROUNDS_PER_EXTRA == 0:
                yield EXTRA_POINTS[extras % len(EXTRA_POINTS)]
                extras += 1

    def kill_repeatedly(self, kills_per_point: int, files_per_wave: int) -> None:
        """Cycle until every named point was reached ``kills_per_point`` times."""
        for turn, point in enumerate(self.schedule(), start=1):
            if min(self.kills[p] for p in NAMED_POINTS) >= kills_per_point:
                return
            if point in ("after_spool", "after_reject"):
                self.add_wave(files_per_wave)
            self.cycle(point)
            limit = 2 * (len(NAMED_POINTS) + 1) * kills_per_point
            assert turn <= limit, f"kill points not reached: {self.kills}, missed {self.misses}"

    def finish(self, timeout: float) -> None:
        """Run undisturbed until everything is delivered, then stop cleanly."""
        self.endpoint.on_receive = None
        self.endpoint.on_accept = None
        for writer in self._writers:
            writer.join()
        self.harness.start()
        delivered = wait_until(
            lambda: self.delivered_paths() >= self.expected and not self.harness.pending(),
            timeout=timeout,
            interval=0.2,
        )
        assert delivered, (
            f"missing {sorted(self.expected - self.delivered_paths())}, "
            f"pending {self.harness.pending()}\n{self.harness.output()[-5000:]}"
        )
        assert self.harness.stop() == 0
        changes = tree_changes(self._as_written, tree_snapshot(self.harness.watch))
        assert not changes, "the daemons changed the watched folder:\n" + "\n".join(changes[:50])

    def delivered_paths(self) -> set[str]:
        return {
            entry["path"]
            for request in list(self.endpoint.unique.values())
            for entry in request.json["files"]
        }


@pytest.fixture
def crash_run(
    request: pytest.FixtureRequest, tmp_path: Path, endpoint: LoopbackEndpoint, corpus: Path
) -> Iterator[CrashRun]:
    """A campaign; parametrise it indirectly with the number of worker processes (0)."""
    os.environ.pop("ACQHARVEST_CONFIG", None)
    harness = Harness(tmp_path, endpoint)
    harness.settle = 0.3
    harness.write_config(
        tmp_path / "token",
        group_quiet_seconds=0.3,
        rescan_seconds=1,
        workers=getattr(request, "param", 0),
    )
    run = CrashRun(harness, endpoint, corpus)
    yield run
    endpoint.release()
    if harness.process is not None:
        harness.kill()
    assert TOKEN not in harness.output(), "the bearer token leaked into the log"
