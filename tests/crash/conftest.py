"""Kill -9 a real daemon at chosen points of the harvest and delivery path, then restart it.

The kill points act on the real process from outside: the outbox folder and the JSON log
(after spooling), and the loopback endpoint's hooks, which run on its handler thread
(mid-POST: the body arrived, no answer yet; after accept: the endpoint stored the package,
its answer is not sent yet; after reject: the endpoint refused a package with 400 and the
daemon is moving it to ``rejected/``, after which ``acqharvest retry --all`` queues it
again). Nothing in the daemon knows it is being tested.
"""

from __future__ import annotations

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
from tests.integration.conftest import SMALL_TIFFS, TOKEN, Harness

POINTS = ("after_spool", "mid_post", "after_accept", "after_reject", "random")
#: kill points fired by the endpoint's hooks, armed before the daemon starts
_ENDPOINT_POINTS = ("mid_post", "after_accept", "after_reject")
#: how long one kill point may take to come; generous, the machine is shared
POINT_TIMEOUT = 60.0


class CrashRun:
    """Waves of acquisitions, a daemon started and killed at one point per cycle."""

    def __init__(self, harness: Harness, endpoint: LoopbackEndpoint, corpus: Path) -> None:
        self.harness = harness
        self.endpoint = endpoint
        self.corpus = corpus
        self.expected: set[str] = set()
        self.kills: Counter[str] = Counter()
        self._rng = random.Random(os.environ.get("ACQHARVEST_CRASH_SEED", "kill-9"))  # noqa: S311 - test schedule
        self._armed: str | None = None
        self._fired = threading.Event()
        self._lock = threading.Lock()
        endpoint.on_receive = self._on_receive
        endpoint.on_accept = self._on_accept

    # ------------------------------------------------------------------ acquisitions
    def add_wave(self, files: int) -> None:
        """Copy ``files`` corpus files, each under a new path, into the watched folder."""
        wave = self.harness.watch / f"wave{len(self.expected):04d}"
        wave.mkdir()
        for index in range(files):
            # each copy, under its own path, is its own package
            source = self.corpus / SMALL_TIFFS[len(self.expected) % len(SMALL_TIFFS)]
            target = wave / f"{index}_{source.name}"
            shutil.copyfile(source, target)
            self.expected.add(target.relative_to(self.harness.watch).as_posix())

    # ------------------------------------------------------------------ killing
    def _disarm(self, point: str) -> subprocess.Popen[bytes] | None:
        """The daemon to kill when ``point`` is armed (disarming it), else None."""
        with self._lock:
            if self._armed != point or self.harness.process is None:
                return None
            self._armed = None
            return self.harness.process

    def _kill(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        self._fired.set()

    def _kill_from_endpoint(self, point: str) -> bool:
        process = self._disarm(point)
        if process is not None:
            self._kill(process)
        return process is not None

    def _on_receive(self, _: RecordedRequest) -> str | None:
        # Killed with the body received and no answer: the endpoint does not keep it.
        if self._kill_from_endpoint("mid_post"):
            return "drop"
        process = self._disarm("after_reject")
        if process is None:
            return None
        # Refused with a 400, killed while the daemon moves it to rejected/ (or just after).
        threading.Timer(self._rng.uniform(0.0, 0.05), self._kill, (process,)).start()
        return "reject"

    def _on_accept(self, _: RecordedRequest) -> None:
        self._kill_from_endpoint("after_accept")

    def _spooled(self) -> int:
        log = self.harness.log_file
        return log.read_text(errors="replace").count('"package_spooled"') if log.exists() else 0

    def cycle(self, point: str) -> bool:
        """Start the daemon, kill it at ``point``; False if the point never came."""
        self._fired.clear()
        spooled_before = self._spooled()
        pending_before = {path.name for path in self.harness.pending()}
        if point in _ENDPOINT_POINTS:
            with self._lock:
                self._armed = point  # before the start: the first POST may come at once
        self.harness.start()
        if point in _ENDPOINT_POINTS:
            reached = self._fired.wait(POINT_TIMEOUT)
            with self._lock:
                self._armed = None
            if not reached and self._fired.is_set():
                reached = True  # fired between the timeout and the disarm
        elif point == "after_spool":
            reached = wait_until(
                lambda: (
                    {path.name for path in self.harness.pending()} - pending_before
                    or self._spooled() > spooled_before
                ),
                timeout=POINT_TIMEOUT,
                interval=0.005,
            )
        else:
            time.sleep(self._rng.uniform(0.0, 2.5))
            reached = True
        self.harness.kill()
        if point == "after_reject":
            # what an admin does once the endpoint is fixed; the next start sends them
            retried = self.harness.command("retry", "--all")
            assert retried.returncode == 0, retried.stdout + retried.stderr
        if reached:
            self.kills[point] += 1
        return reached

    def kill_repeatedly(self, kills: int, files_per_wave: int) -> None:
        """Cycle through the kill points until ``kills`` kills happened."""
        turn = 0
        while sum(self.kills.values()) < kills:
            point = POINTS[turn % len(POINTS)]
            if point in ("after_spool", "after_reject"):
                self.add_wave(files_per_wave)
            turn += 1
            self.cycle(point)
            assert turn <= 3 * kills, f"kill points not reached: {dict(self.kills)}"

    def finish(self, timeout: float) -> None:
        """Run undisturbed until everything is delivered, then stop cleanly."""
        self.endpoint.on_receive = None
        self.endpoint.on_accept = None
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

    def delivered_paths(self) -> set[str]:
        return {
            entry["path"]
            for request in list(self.endpoint.unique.values())
            for entry in request.json["files"]
        }


@pytest.fixture
def crash_run(tmp_path: Path, endpoint: LoopbackEndpoint, corpus: Path) -> Iterator[CrashRun]:
    os.environ.pop("ACQHARVEST_CONFIG", None)
    harness = Harness(tmp_path, endpoint)
    harness.settle = 0.3
    harness.write_config(tmp_path / "token", group_quiet_seconds=0.3, rescan_seconds=1)
    run = CrashRun(harness, endpoint, corpus)
    yield run
    if harness.process is not None:
        harness.kill()
    assert TOKEN not in harness.output(), "the bearer token leaked into the log"
