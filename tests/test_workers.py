"""The progress board the runtime reads to enforce the time budget, across real processes."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import pytest

from acqharvest import workers
from acqharvest.model import Acquisition, Extraction, ExtractionFailure, FileSettled, ProbedFile
from acqharvest.watch import stat_file
from acqharvest.workers import Overdue, Progress


def _read_one_item_slowly(progress: Progress, started: multiprocessing.synchronize.Event) -> None:
    row = progress.claim_row()
    progress.begin(row, token=7, index=2)
    started.set()
    time.sleep(600)


def test_a_worker_busy_beyond_the_budget_is_named_with_its_item() -> None:
    context = multiprocessing.get_context("spawn")
    progress = Progress(context, 2)
    started = context.Event()
    worker = context.Process(target=_read_one_item_slowly, args=(progress, started), daemon=True)
    worker.start()
    try:
        assert started.wait(60)
        assert progress.overdue(budget=3600, now=time.monotonic()) == []
        late = progress.overdue(budget=0.0, now=time.monotonic() + 1)
        assert late == [Overdue(0, worker.pid or 0, 7, 2, hashing=False)]
        progress.end(0)
        assert progress.overdue(budget=0.0, now=time.monotonic() + 1) == []
    finally:
        worker.kill()
        worker.join(10)


def test_an_idle_board_reports_nothing() -> None:
    progress = Progress(multiprocessing.get_context("spawn"), 3)
    row = progress.claim_row()
    progress.begin(row, token=1, index=0)
    progress.end(row)
    assert progress.overdue(budget=0.0, now=time.monotonic() + 1) == []


def test_the_budget_runs_from_the_last_progress_and_names_a_stalled_checksum() -> None:
    progress = Progress(multiprocessing.get_context("spawn"), 1)
    row = progress.claim_row()
    progress.begin(row, token=5, index=1)
    progress.hashing(row, True)
    time.sleep(0.2)
    before = time.monotonic()
    progress.progressed(row)  # a chunk of the checksum, 0.2 s after the item began
    after = time.monotonic()
    # begun more than 10 s before ``now``, but progressed within the budget: not overdue
    assert progress.overdue(budget=10.0, now=before + 9.9) == []
    stalled = progress.overdue(budget=10.0, now=after + 10.1)
    assert stalled == [Overdue(row, os.getpid(), 5, 1, hashing=True)]

    before = time.monotonic()
    progress.hashing(row, False)  # the checksum is done: the adapter gets a whole budget
    after = time.monotonic()
    assert progress.overdue(budget=10.0, now=before + 9.9) == []
    hung = progress.overdue(budget=10.0, now=after + 10.1)
    assert hung == [Overdue(row, os.getpid(), 5, 1, hashing=False)]


# ---------------------------------------------------------------------- only the settled file

MR = "dicom/mr-siemens/MR-SIEMENS-DICOM-WithOverlays.dcm"


def _settled(path: Path, root: Path) -> FileSettled:
    seen = stat_file(path, root, "scan")
    assert seen is not None
    return FileSettled(path, root, seen.size, seen.mtime_ns, seen.file_id)


def _swap_for_link(path: Path, target: Path) -> None:
    """What a writer (or an attacker) may do between the last settle look and the read."""
    path.unlink()
    os.symlink(target, path)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """(the watch folder, a folder beside it that is not watched)"""
    made = (tmp_path / "watched", tmp_path / "outside")
    for folder in made:
        folder.mkdir()
    return made


def test_probe_refuses_a_file_swapped_for_a_link_after_settling(
    folders: tuple[Path, Path],
) -> None:
    watched, outside = folders
    secret = outside / "secret.bin"
    secret.write_bytes(b"patient data, outside the watch folder")
    path = watched / "image.bin"
    path.write_bytes(b"x" * secret.stat().st_size)
    settled = _settled(path, watched)
    _swap_for_link(path, secret)
    outcome = workers.probe(settled)
    assert isinstance(outcome, workers.ProbeFailure)
    assert outcome.reason == f"{path}: refused, not read: it is a symbolic link, never followed"
    assert not outcome.changed
    assert not outcome.final  # a later scan decides what the path is then


def test_probe_observes_again_a_file_replaced_after_settling(folders: tuple[Path, Path]) -> None:
    watched, _ = folders
    path, temp = watched / "image.bin", watched / "image.bin.tmp"
    path.write_bytes(b"first")
    settled = _settled(path, watched)
    temp.write_bytes(b"later")
    os.replace(temp, path)
    os.utime(path, ns=(settled.mtime_ns, settled.mtime_ns))  # size and mtime as settled
    outcome = workers.probe(settled)
    assert isinstance(outcome, workers.ProbeFailure)
    assert outcome.changed, "a new file under the name is settled again, not failed"
    assert "another file replaced" in outcome.reason


def test_extraction_refuses_a_member_swapped_for_a_link(
    folders: tuple[Path, Path], corpus: Path
) -> None:
    watched, outside = folders
    path = watched / "IM0001"
    shutil.copyfile(corpus / MR, path)
    shutil.copyfile(corpus / MR, outside / "elsewhere.dcm")
    probed = workers.probe(_settled(path, watched))
    assert isinstance(probed, ProbedFile)
    assert probed.adapter == "dicom"
    acquisition = Acquisition(probed.group_key, "dicom", watched, (probed,))
    assert isinstance(workers.extract_acquisition(acquisition), Extraction)
    _swap_for_link(path, outside / "elsewhere.dcm")
    outcome = workers.extract_acquisition(acquisition)
    assert isinstance(outcome, ExtractionFailure)
    assert outcome.path == path
    assert outcome.reason == f"{path}: refused, not read: it is a symbolic link, never followed"


def test_probe_computes_the_extra_digests_an_adapter_asks_for_and_only_those(
    folders: tuple[Path, Path], corpus: Path
) -> None:
    watched, _ = folders
    for name in ("Example_Continuous.imzML", "Example_Continuous.ibd"):
        shutil.copyfile(corpus / "imzml" / name, watched / name)
    shutil.copyfile(corpus / MR, watched / "IM0001")
    ibd, imzml, dicom = (
        workers.probe(_settled(watched / name, watched))
        for name in ("Example_Continuous.ibd", "Example_Continuous.imzML", "IM0001")
    )
    assert isinstance(ibd, ProbedFile)
    data = (watched / "Example_Continuous.ibd").read_bytes()
    assert ibd.sha256 == hashlib.sha256(data).hexdigest()
    assert ibd.digests == {
        "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
        "sha1": hashlib.sha1(data, usedforsecurity=False).hexdigest(),
    }
    # every other file pays for its sha256 alone
    assert isinstance(imzml, ProbedFile)
    assert isinstance(dicom, ProbedFile)
    assert (imzml.digests, dicom.digests) == ({}, {})
    # and the pair's extraction compares the imzML's SHA-1 with the probe's, not reading it
    pair = Acquisition(imzml.group_key, "imzml", watched, (imzml, ibd))
    extraction = workers.extract_acquisition(pair)
    assert isinstance(extraction, Extraction)
    assert extraction.metadata["msi"]["ibd_checksum_verified"] == "sha1"


def _ome_tiff_with_xml_of(path: Path, size: int) -> Path:
    """An OME-TIFF whose OME-XML is ``size`` bytes (padded with an XML comment)."""
    import numpy
    import tifffile

    head = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image ID="Image:0">'
        '<Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint8" SizeX="4" SizeY="4" '
        'SizeZ="1" SizeC="1" SizeT="1"><TiffData/></Pixels></Image>'
    )
    tail = "</OME>"
    xml = f"{head}<!--{'x' * (size - len(head) - len(tail) - 7)}-->{tail}"
    assert len(xml.encode()) == size
    tifffile.imwrite(path, numpy.zeros((4, 4), numpy.uint8), description=xml, metadata=None)
    return path


def test_the_original_metadata_cap_reaches_the_adapter_from_the_setup_and_the_command(
    folders: tuple[Path, Path],
) -> None:
    watched, _ = folders
    path = _ome_tiff_with_xml_of(watched / "cells.ome.tif", 200 * 1024)
    probed = workers.probe(_settled(path, watched))
    assert isinstance(probed, ProbedFile)
    acquisition = Acquisition(probed.group_key, "tiff", watched, (probed,))
    whole = workers.extract_acquisition(acquisition)  # the default: 1 MiB
    assert isinstance(whole, Extraction)
    assert len(whole.original_metadata["ome_xml"].encode()) == 200 * 1024
    try:
        workers.init_worker(workers.WorkerSetup(original_metadata_max_bytes=64 * 1024))
        cut = workers.extract_acquisition(acquisition)
        assert isinstance(cut, Extraction)
        assert cut.original_metadata["ome_xml_cut"] == {
            "size_bytes": 200 * 1024,
            "kept_bytes": 64 * 1024,
        }
        # a one-shot command's own setting wins over the setup's
        again = workers.extract_acquisition(acquisition, original_metadata_max_bytes=100 * 1024)
        assert isinstance(again, Extraction)
        assert again.original_metadata["ome_xml_cut"]["kept_bytes"] == 100 * 1024
    finally:
        workers.init_worker(workers.WorkerSetup())


def test_extract_command_honours_the_configured_cap(folders: tuple[Path, Path]) -> None:
    import dataclasses

    from acqharvest.commands import preview
    from acqharvest.config import embedded_settings
    from acqharvest.deidentify import Deidentifier
    from acqharvest.model import DeidentifySettings

    watched, _ = folders
    path = _ome_tiff_with_xml_of(watched / "cells.ome.tif", 200 * 1024)
    settings = dataclasses.replace(embedded_settings(), original_metadata_max_bytes=64 * 1024)
    policy = Deidentifier(DeidentifySettings(), b"s" * 32)
    [package], errors = preview([path], settings, policy)
    assert errors == []
    assert package["original_metadata"]["ome_xml_cut"]["kept_bytes"] == 64 * 1024
    assert package["files"][0]["media_type"] == "image/tiff"
    assert any("kept the first 65536" in w for w in package["provenance"]["warnings"])
