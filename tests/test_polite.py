"""Priority and read rate: a real child process lowered, the pacing with an injected clock,
and a real worker reading a real file under a cap."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from acqharvest import workers
from acqharvest.model import FileSettled
from acqharvest.polite import BEST_EFFORT_LOWEST, NICE, ReadRate
from acqharvest.watch import file_identity


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_reads_are_paced_to_the_rate() -> None:
    clock = Clock()
    rate = ReadRate(1e6, clock=clock.time, sleep=clock.sleep)
    for _ in range(10):
        rate.consumed(1_000_000)  # read at once: the disk is faster than the cap
    # the first read is free, each further one waits its second
    assert clock.slept == pytest.approx([1.0] * 9)
    assert clock.now == pytest.approx(109.0)


def test_a_pause_in_reading_saves_no_burst() -> None:
    clock = Clock()
    rate = ReadRate(1e6, clock=clock.time, sleep=clock.sleep)
    rate.consumed(500_000)
    clock.now += 60  # the next file comes a minute later
    rate.consumed(500_000)
    rate.consumed(500_000)
    rate.consumed(500_000)
    assert clock.slept == pytest.approx([0.5, 0.5])


def test_a_slow_reader_is_never_held_back() -> None:
    clock = Clock()
    rate = ReadRate(1e6, clock=clock.time, sleep=clock.sleep)
    for _ in range(5):
        clock.now += 2.0  # a share slower than the cap
        rate.consumed(1_000_000)
    assert clock.slept == []


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ReadRate(0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ionice classes are Linux's")
def test_lower_priority_lowers_cpu_and_io_priority_of_a_real_process() -> None:
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, psutil; from acqharvest.polite import lower_priority; "
            "changes = lower_priority(); p = psutil.Process(); "
            "print(json.dumps([changes, p.nice(), list(p.ionice())]))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    changes, nice, (io_class, io_level) = json.loads(child.stdout)
    assert nice == NICE
    assert io_class == psutil.IOPRIO_CLASS_BE
    assert io_level == BEST_EFFORT_LOWEST
    assert changes == [f"cpu: nice {NICE}", f"io: best effort {BEST_EFFORT_LOWEST}"]


def test_lower_priority_never_raises_a_priority_set_lower_already() -> None:
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, psutil; from acqharvest.polite import lower_priority; "
            "os.nice(15); lower_priority(); print(psutil.Process().nice())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(child.stdout) == 15


def test_a_worker_under_a_cap_reads_no_faster_than_it(tmp_path: Path) -> None:
    """A real checksum of a 3 MiB file at 1 MB/s takes at least 2 s (each 1 MiB chunk after
    the first waits about a second): a floor, never a ceiling, so a slow machine cannot fail
    it."""
    path = tmp_path / "stack.bin"
    path.write_bytes(b"\x01" * (3 * 2**20))
    st = path.stat()
    settled = FileSettled(path, tmp_path, st.st_size, st.st_mtime_ns, file_identity(st))
    workers.init_worker(workers.WorkerSetup(read_bytes_per_second=1e6))
    try:
        started = time.monotonic()
        probed = workers.probe(settled)
        elapsed = time.monotonic() - started
    finally:
        workers.init_worker(workers.WorkerSetup())
    assert not isinstance(probed, workers.ProbeFailure), probed
    assert elapsed >= 2.0, f"read 3 MiB in {elapsed:.2f} s under a 1 MB/s cap"
