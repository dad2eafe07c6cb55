"""The worker pool and its recovery, without a daemon: real worker processes, a real
crashing and a real hanging adapter (``tests/integration/crashy.py``)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from acqharvest import workers
from acqharvest.model import (
    Acquisition,
    Extraction,
    ExtractionFailure,
    FileSeen,
    FileSettled,
    ProbedFile,
)
from acqharvest.pool import Kind, Workbench
from acqharvest.watch import stat_file
from tests.helpers import probed
from tests.integration.crashy import crashy_on_path  # noqa: F401 - a fixture


def _drain(bench: Workbench, kind: Kind, timeout: float = 60.0) -> list[Any]:
    """Collect until nothing of ``kind`` is left with the workers; every outcome."""
    outcomes: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        outcomes += [o for k, results in bench.collect() if k == kind for o in results]
        if not bench.busy(kind):
            return outcomes
        assert time.monotonic() < deadline, f"{kind} work still with the workers"
        time.sleep(0.05)


def _crashy_files(folder: Path, bodies: dict[str, bytes]) -> list[Path]:
    folder.mkdir()
    for name, body in bodies.items():
        (folder / f"{name}.crashy").write_bytes(b"CRASHY " + body)
    return sorted(folder.iterdir())


def _acquisitions(bench: Workbench, files: list[Path]) -> list[Acquisition]:
    """The files probed by the workers (which load the crashy adapter), one acquisition each."""
    settled = []
    for path in files:
        seen = stat_file(path, path.parent, "scan")
        assert seen is not None
        settled.append(FileSettled(path, path.parent, seen.size, seen.mtime_ns, seen.file_id))
    bench.submit("probe", settled)
    members = _drain(bench, "probe")
    assert all(isinstance(m, ProbedFile) for m in members), members
    return [Acquisition(m.group_key, m.adapter, m.settled.root, (m,)) for m in members]


def test_without_workers_the_work_runs_in_the_calling_thread(tmp_path: Path, corpus: Path) -> None:
    source = tmp_path / "mr.dcm"
    shutil.copyfile(corpus / "dicom/mr-siemens/MR-SIEMENS-DICOM-WithOverlays.dcm", source)
    woken: list[object] = []
    bench = Workbench(30.0, woken.append)
    bench.start(0, workers.WorkerSetup())
    try:
        settled = probed(source, tmp_path).settled
        bench.submit("probe", [settled])
        assert bench.probing() == 1
        assert woken, "a finished task wakes the harvest loop"
        [(kind, [result])] = bench.collect()
        assert kind == "probe"
        assert isinstance(result, ProbedFile)
        assert result.settled == settled
        assert not bench.busy("probe")
        assert bench.probing() == 0
    finally:
        bench.shutdown()


def test_without_workers_the_memory_cap_never_caps_the_daemon() -> None:
    import resource

    before = resource.getrlimit(resource.RLIMIT_AS)
    bench = Workbench(30.0, lambda _: None)
    bench.start(0, workers.WorkerSetup(memory_limit_bytes=2**31))
    try:
        assert resource.getrlimit(resource.RLIMIT_AS) == before
    finally:
        bench.shutdown()


@pytest.mark.usefixtures("crashy_on_path")
def test_a_crash_fails_the_one_file_that_caused_it(tmp_path: Path) -> None:
    files = _crashy_files(tmp_path / "in", {"a": b"fine", "b": b"BOOM", "c": b"fine"})
    bench = Workbench(60.0, lambda _: None)
    bench.start(2, workers.WorkerSetup())
    try:
        acquisitions = _acquisitions(bench, files)
        bench.submit("extract", acquisitions)  # one batch: the crash breaks all three
        outcomes = _drain(bench, "extract")
    finally:
        bench.shutdown()

    extracted = sorted(
        o.acquisition.primary.settled.path.name for o in outcomes if isinstance(o, Extraction)
    )
    assert extracted == ["a.crashy", "c.crashy"]
    [failure] = [o for o in outcomes if isinstance(o, ExtractionFailure)]
    assert failure.path == tmp_path / "in" / "b.crashy"
    assert "a worker process died while reading this file" in failure.reason


@pytest.mark.usefixtures("crashy_on_path")
def test_a_hung_file_fails_on_the_budget_and_its_batch_is_read_again(tmp_path: Path) -> None:
    files = _crashy_files(tmp_path / "in", {"a": b"fine", "z": b"HANG"})
    bench = Workbench(2.0, lambda _: None)
    bench.start(1, workers.WorkerSetup())
    try:
        acquisitions = _acquisitions(bench, files)
        started = time.monotonic()
        bench.submit("extract", acquisitions)
        outcomes = _drain(bench, "extract")
        took = time.monotonic() - started
    finally:
        bench.shutdown()

    assert took < 30, "the hung worker was not terminated on its budget"
    [fine] = [o for o in outcomes if isinstance(o, Extraction)]
    assert fine.acquisition.primary.settled.path.name == "a.crashy"
    [failure] = [o for o in outcomes if isinstance(o, ExtractionFailure)]
    assert failure.path.name == "z.crashy"
    assert "longer than the time budget of 2 s" in failure.reason


def test_a_stalled_checksum_holds_its_file_back_longer_each_time(tmp_path: Path) -> None:
    path = tmp_path / "slow.tif"
    path.write_bytes(b"x")
    st = path.stat()
    settled = FileSettled(path, tmp_path, st.st_size, st.st_mtime_ns, "1:2:3")
    seen = FileSeen(path, tmp_path, st.st_size, st.st_mtime_ns, "1:2:3", 0.0, "scan")
    bench = Workbench(10.0, lambda _: None)

    assert not bench.held_back(seen)
    assert bench.hold_back(settled) == 10.0
    assert bench.hold_back(settled) == 20.0  # backoff: the share is still not answering
    assert bench.held_back(seen)

    rewritten = FileSeen(path, tmp_path, st.st_size + 1, st.st_mtime_ns, "1:2:3", 0.0, "scan")
    assert not bench.held_back(rewritten)  # another version: read as any new file
    assert bench.hold_back(settled) == 10.0  # and the count started over

    bench.forget(path)  # gone, or probed fine at last
    assert not bench.held_back(seen)
