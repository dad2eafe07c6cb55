"""Things in a watched folder that must never be read, and files whose contents are
hostile, beside files that must keep flowing.

Run as root, the daemon runs without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (setpriv), so
permission bits bind it as they would bind the service account on an instrument PC; run as
another user, they bind it anyway, and only the device node (root makes it) is left out.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from acqharvest import workers
from acqharvest.model import Acquisition, Extraction
from tests.fuzz.harness import tiff_ifd, truncate
from tests.fuzz.test_hostile_files import HOSTILE_XML, _element, _explicit_vr_dicom, _ome_tiff
from tests.helpers import in_process_daemon, probed
from tests.integration.conftest import SMALL_TIFFS, FolderGuard, Harness, harvested

pytestmark = pytest.mark.integration

OME = "ome-tiff/single-file/multi-channel.ome.tif"
MR = "dicom/mr-siemens/MR-SIEMENS-DICOM-WithOverlays.dcm"
DX = "dicom/dx/dx_image.dcm"
SECRET = "do-not-send-this-text"
ROOT = os.geteuid() == 0
WITHOUT_DAC = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
]


def failed_lines(harness: Harness) -> list[str]:
    """The failure lines of ``acqharvest status`` (the real CLI)."""
    status = harness.command("status")
    assert status.returncode == 0, status.stderr
    return [line for line in status.stdout.splitlines() if " failed " in line]


def assert_one_failure_each(harness: Harness, expected: dict[str, str]) -> None:
    """Each named file has exactly one failure line in status, saying ``expected[name]``;
    no other file has one."""
    failed = failed_lines(harness)
    for name, words in expected.items():
        lines = [line for line in failed if f"{harness.watch / name}:" in line]
        assert len(lines) == 1, (name, failed)
        assert words in lines[0], (name, lines[0])
    assert len(failed) == len(expected), failed


def test_hostile_objects_are_refused_once_and_good_files_flow(
    harness: Harness, corpus: Path
) -> None:
    watch, outside = harness.watch, harness.tmp / "outside"
    outside.mkdir()
    (outside / "secret.dcm").write_text(SECRET)
    shutil.copyfile(corpus / OME, watch / "good-before.ome.tif")
    bad = {
        "escape.dcm": "outside the watch folder",
        "zero.dcm": "outside the watch folder",
        "loop-a": "loop",
        "loop-b": "loop",
        "pipe.dcm": "FIFO",
        "locked.ome.tif": "Permission denied",
        "closed": "cannot list this folder",
    }
    os.symlink(outside / "secret.dcm", watch / "escape.dcm")
    os.symlink("/dev/zero", watch / "zero.dcm")
    os.symlink("loop-b", watch / "loop-a")
    os.symlink("loop-a", watch / "loop-b")
    os.mkfifo(watch / "pipe.dcm")
    if ROOT:  # making a device node needs CAP_MKNOD
        os.mknod(watch / "null.dcm", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        bad["null.dcm"] = "device file"
    shutil.copyfile(corpus / OME, watch / "locked.ome.tif")
    (watch / "locked.ome.tif").chmod(0)
    (watch / "closed").mkdir()
    shutil.copyfile(corpus / OME, watch / "closed" / "hidden.ome.tif")
    (watch / "closed").chmod(0)

    if ROOT:
        harness.launcher = WITHOUT_DAC
    harness.start()
    assert harness.endpoint.wait_for(1, timeout=30), harness.output()
    # a good file arriving while the bad ones sit there is harvested too
    shutil.copyfile(corpus / OME, watch / "good-after.ome.tif")
    harness.mark()
    assert harness.endpoint.wait_for(2, timeout=30), harness.output()
    assert harness.wait_log("watch_refused", count=len(bad) - 1, timeout=15), harness.output()
    # two more rescans pass over the bad objects
    scans = harness.count_events("watch_scan_finished")
    assert harness.wait_log("watch_scan_finished", count=scans + 2, timeout=30), harness.output()
    assert harness.process is not None
    assert harness.process.poll() is None, "the daemon died"
    # stopping checks that nothing in the folder changed (mtimes and content hashes included)
    assert harness.stop() == 0

    packaged = sorted(f["path"] for body in harness.packages().values() for f in body["files"])
    assert packaged == ["good-after.ome.tif", "good-before.ome.tif"]
    assert len(harness.endpoint.received) == 2
    assert all(SECRET not in request.body.decode() for request in harness.endpoint.received)

    # the unreadable file was tried at every scan, and logged once
    unreadable = [e for e in harness.journal() if e.get("event") == "file_unreadable"]
    assert [Path(e["path"]).name for e in unreadable] == ["locked.ome.tif"]
    refused = [e for e in harness.events() if e.get("event") == "watch_refused"]
    assert sorted(Path(e["path"]).name for e in refused) == sorted(
        name for name in bad if name != "locked.ome.tif"
    )
    assert_one_failure_each(harness, bad)


def write_hostile_contents(corpus: Path, folder: Path) -> dict[str, str]:
    """Files that claim to be DICOM or TIFF and lie (cut short, sizes and counts far beyond
    the file, hostile OME-XML), made with the fuzz tests' builders; by file name, what the
    failure of each must say."""
    dx, tiff = (corpus / DX).read_bytes(), (corpus / SMALL_TIFFS[1]).read_bytes()
    modality = _element(0x0008, 0x0060, b"CS", b"MR")
    huge_element = _element(0x0011, 0x1010, b"UN", b"x" * 16, length=0xFFFFFFF0)
    (folder / "truncated.dcm").write_bytes(truncate(dx, len(dx) // 2))
    (folder / "truncated.tif").write_bytes(truncate(tiff, len(tiff) // 2))
    (folder / "huge-length.dcm").write_bytes(_explicit_vr_dicom(modality + huge_element))
    (folder / "huge-count.tif").write_bytes(tiff_ifd(tiff, 0, 0xFFFF))
    _ome_tiff(folder / "nested.ome.tif", HOSTILE_XML["deeply-nested"])
    _ome_tiff(folder / "laughs.ome.tif", HOSTILE_XML["billion-laughs"])
    return {
        "truncated.dcm": "truncated",
        "truncated.tif": "truncated",
        "huge-length.dcm": "truncated inside element (0011,1010)",
        "huge-count.tif": "the first IFD at byte 8 runs to byte",
        "nested.ome.tif": "nested deeper than",
        "laughs.ome.tif": "entities are refused",
    }


def test_hostile_contents_fail_once_each_and_good_files_flow(
    harness: Harness, corpus: Path
) -> None:
    # the shipped worker processes, with their budgets, read the hostile files
    harness.write_config(harness.tmp / "token", workers=2)
    watch = harness.watch
    good = {"good.ome.tif": OME, "good.dcm": MR, "good.tif": SMALL_TIFFS[0]}
    for name, source in good.items():
        shutil.copyfile(corpus / source, watch / name)
    bad = write_hostile_contents(corpus, watch)
    (watch / "empty.dcm").write_bytes(b"")

    harness.start()
    assert harness.endpoint.wait_for(len(good), timeout=60), harness.output()
    shutil.copyfile(corpus / SMALL_TIFFS[2], watch / "good-after.tif")
    harness.mark()
    assert harness.endpoint.wait_for(len(good) + 1, timeout=60), harness.output()
    assert harness.wait_log("extraction_failed", count=len(bad), timeout=60), harness.output()
    # two more rescans pass over the bad files (and the empty one)
    scans = harness.count_events("watch_scan_finished")
    assert harness.wait_log("watch_scan_finished", count=scans + 2, timeout=30), harness.output()
    assert harness.process is not None
    assert harness.process.poll() is None, "the daemon died"
    assert_one_failure_each(harness, bad)
    assert harness.stop() == 0

    assert sorted(harvested(harness.packages().values())) == sorted([*good, "good-after.tif"])
    assert len(harness.endpoint.received) == len(good) + 1
    events = harness.events()
    failures = [Path(e["path"]).name for e in events if e.get("event") == "extraction_failed"]
    assert sorted(failures) == sorted(bad), "each hostile file is read once, and fails once"
    journal = [e for e in harness.journal() if e.get("event") == "extraction_failed"]
    assert sorted(Path(e["path"]).name for e in journal) == sorted(bad), "once in the journal"
    # README: an empty file is never settled (nothing to read), so it is neither packaged
    # nor failed; the write that fills it brings it back
    settled = {Path(e["path"]).name for e in events if e.get("event") == "file_settled"}
    assert settled == {*good, "good-after.tif", *bad}


def test_a_member_whose_folder_became_a_link_out_after_it_was_read_is_never_packaged(
    tmp_path: Path, corpus: Path
) -> None:
    watch, outside = tmp_path / "instrument", tmp_path / "outside"
    (watch / "sub").mkdir(parents=True)
    outside.mkdir()
    member = watch / "sub" / "cells.ome.tif"
    shutil.copyfile(corpus / OME, member)
    shutil.copyfile(corpus / OME, outside / "cells.ome.tif")
    daemon = in_process_daemon(tmp_path, watch)
    try:
        probe = probed(member, watch)
        acquisition = Acquisition(probe.group_key, probe.adapter, watch, (probe,))
        extraction = workers.extract_acquisition(acquisition)
        assert isinstance(extraction, Extraction), extraction
        # read while it was inside; by the time the package is built, the path leads out
        shutil.rmtree(watch / "sub")
        os.symlink(outside, watch / "sub")
        guard = FolderGuard(watch)
        guard.mark()
        assert daemon._package(extraction, time.time()) is None
        guard.check()
        (failure,) = daemon.state.failures()
        assert failure.path == member
        assert "outside the folder" in failure.reason
    finally:
        daemon.state.close()
