"""Pieces of the runtime shell that are not the harvest loop itself."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from acqharvest import workers
from acqharvest.model import Acquisition, ExtractionFailure
from tests.helpers import in_process_daemon, probed


def test_a_failed_member_leaves_its_siblings_grouped_again_at_once(
    tmp_path: Path, corpus: Path
) -> None:
    watch = tmp_path / "instrument"
    watch.mkdir()
    series = []
    for name in ("i1.dcm", "i2.dcm", "i3.dcm"):
        shutil.copyfile(corpus / "dicom/mr-siemens/MR-SIEMENS-DICOM-WithOverlays.dcm", watch / name)
        series.append(watch / name)
    daemon = in_process_daemon(tmp_path, watch)
    try:
        members = [probed(path, watch) for path in series]
        for member in members:
            daemon._in_progress[member.settled.path] = (
                member.settled.size,
                member.settled.mtime_ns,
            )
        acquisition = Acquisition(members[0].group_key, "dicom", watch, tuple(members))
        failed = series[1]
        daemon._fail(ExtractionFailure(acquisition, "dicom", failed, f"{failed}: truncated"), 0.0)

        # only the named file failed, for good; its siblings wait in their group again
        assert [(f.path, f.reason) for f in daemon.state.failures()] == [
            (failed, f"{failed}: truncated")
        ]
        (again,) = daemon.grouper.ready(math.inf)
        assert [m.settled.path for m in again.members] == [series[0], series[2]]
        assert set(daemon._in_progress) == {series[0], series[2]}
    finally:
        daemon.state.close()


def test_a_failed_file_is_logged_once_per_cause(
    tmp_path: Path, corpus: Path, log_events: Callable[[], list[dict[str, Any]]]
) -> None:
    """Once, not by the worker and again by the daemon; an unreadable file is not logged
    again at every rescan, until it fails for another reason."""
    watch = tmp_path / "instrument"
    watch.mkdir()
    cut = watch / "cut.tif"
    cut.write_bytes((corpus / "tiff-vendor/imagej/xem_y32.tif").read_bytes()[:1000])
    daemon = in_process_daemon(tmp_path, watch)
    try:
        member = probed(cut, watch)
        failure = workers.extract_acquisition(
            Acquisition(member.group_key, "tiff", watch, (member,))
        )
        assert isinstance(failure, ExtractionFailure)
        daemon._fail(failure, 0.0)

        locked = watch / "locked.tif"
        shutil.copyfile(corpus / "tiff-vendor/imagej/xem_y32.tif", locked)
        settled = probed(locked, watch).settled
        denied = f"cannot read {locked}: Permission denied"
        for _ in range(3):  # three rescans, each trying the file again
            daemon._probed(workers.ProbeFailure(settled, denied, final=False), 0.0)
        daemon._probed(workers.ProbeFailure(settled, f"cannot read {locked}: I/O error"), 0.0)
    finally:
        daemon.state.close()

    failures = {"extraction_failed", "file_unreadable"}
    logged = [(e["event"], e["path"], e["reason"]) for e in log_events() if e["event"] in failures]
    assert all(e["level"] == "error" for e in log_events() if e["event"] in failures)
    assert logged == [
        ("extraction_failed", str(cut), failure.reason),
        ("file_unreadable", str(locked), denied),
        ("file_unreadable", str(locked), f"cannot read {locked}: I/O error"),
    ]
    repeats = [e for e in log_events() if e["event"] == "failure_repeated"]
    assert [(e["path"], e["level"]) for e in repeats] == [(str(locked), "debug")] * 2
