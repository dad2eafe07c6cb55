"""Out of the acquisition's way, with a real daemon: the priority of the daemon and of its
worker processes, and a finished file held back while the camera writes the next one."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from tests.integration.conftest import Harness, _process_tree

pytestmark = pytest.mark.integration

TIFF = "tiff-vendor/zeiss-lsm/test.lsm"


def priorities(harness: Harness) -> list[tuple[int, int, int]]:
    """(nice, I/O class, I/O level) of the daemon and every process below it."""
    assert harness.process is not None
    found = []
    for pid in _process_tree(harness.process.pid):
        process = psutil.Process(pid)
        io = process.ionice()
        found.append((process.nice(), int(io.ioclass), io.value))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="I/O classes are Linux's")
def test_the_daemon_and_its_workers_run_below_the_acquisition(
    harness: Harness, corpus: Path
) -> None:
    harness.write_config(harness.tmp / "token")  # priority: low is the default
    harness.start()
    shutil.copyfile(corpus / TIFF, harness.watch / "scan.lsm")
    harness.mark()
    assert harness.endpoint.wait_for(1, timeout=120), harness.output()
    found = priorities(harness)
    assert len(found) >= 3, f"the daemon and its two workers, found {found}"
    assert set(found) == {(10, psutil.IOPRIO_CLASS_BE, 7)}, found
    (lowered,) = [e for e in harness.events() if e.get("event") == "priority_lowered"]
    assert lowered["changes"] == ["cpu: nice 10", "io: best effort 7"]
    assert harness.stop() == 0


def test_priority_normal_leaves_the_priority_alone(harness: Harness, corpus: Path) -> None:
    harness.write_config(harness.tmp / "token", top_options={"priority": "normal"})
    harness.start()
    shutil.copyfile(corpus / TIFF, harness.watch / "scan.lsm")
    harness.mark()
    assert harness.endpoint.wait_for(1, timeout=120), harness.output()
    # as started (the test's own priority): nothing lowered it
    own = psutil.Process().nice()
    assert own < 10, "the test process runs lowered already: this test would prove nothing"
    assert {nice for nice, _, _ in priorities(harness)} == {own}
    assert not [e for e in harness.events() if e.get("event") == "priority_lowered"]
    assert harness.stop() == 0


def test_a_finished_file_waits_until_the_camera_stops_writing_beside_it(
    harness: Harness, corpus: Path
) -> None:
    harness.write_config(
        harness.tmp / "token", watch_options={"defer_while_writing": True}, rescan_seconds=60
    )
    run = harness.watch / "run1"
    run.mkdir()
    stream = run / "stream.raw"
    stopped_writing: list[float] = []

    def camera() -> None:
        """Appends a frame every 0.2 s for 6 s, as a camera streaming to disk does."""
        with stream.open("ab") as handle:
            for _ in range(30):
                handle.write(b"\x07" * 65536)
                handle.flush()
                time.sleep(0.2)
        stopped_writing.append(time.time())

    harness.start()
    writer = threading.Thread(target=camera)
    writer.start()
    time.sleep(0.5)  # the stream is being written
    shutil.copyfile(corpus / TIFF, run / "done.lsm")
    writer.join()
    harness.mark()

    assert harness.endpoint.wait_for(2, timeout=120), harness.output()
    deferred = [e for e in harness.events() if e.get("event") == "file_deferred"]
    assert [(e["path"], e["writing"]) for e in deferred][:1] == [
        (str(run / "done.lsm"), str(stream))
    ]
    settled = {
        Path(str(e["path"])).name: datetime.fromisoformat(str(e["timestamp"])).timestamp()
        for e in harness.events()
        if e.get("event") == "file_settled"
    }
    # held back: it settled (and was read) only after the camera had stopped writing
    assert settled["done.lsm"] >= stopped_writing[0], (settled, stopped_writing)
    assert harness.stop() == 0
