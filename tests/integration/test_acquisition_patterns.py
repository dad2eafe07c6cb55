"""Each way instrument software writes files, against the real daemon and a loopback endpoint.

For every pattern of ``tests/simulator.py``: the package carries the size and sha256 of the
file as the writer left it (never of a partial file), a harvested file that changes is
packaged again with ``replaces``, nothing is lost, and the instrument folder is never written.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests import simulator
from tests.integration.conftest import (
    ACQHARVEST,
    Harness,
    harvested,
    validate_package,
)
from tests.simulator import Written

pytestmark = pytest.mark.integration

OME = "ome-tiff/single-file/multi-channel.ome.tif"
Z_SERIES = "ome-tiff/single-file/z-series.ome.tif"
MR = "dicom/mr-siemens/MR-SIEMENS-DICOM-WithOverlays.dcm"
#: small real TIFFs from several vendors, for the many-files patterns
SMALL_TIFFS = (
    "tiff-vendor/zeiss-axiovision/optical_Zeiss_AxioVision_BW.tif",
    "tiff-vendor/imagej/xem_y32.tif",
    "tiff-vendor/gatan-dm-tiff/test_loading_image_saved_with_DM.tif",
)
#: a multi-file OME-TIFF set: the companion names the five planes
COMPANION_SET = "ome-tiff/multifile-companion"


def relative(harness: Harness, written: Written) -> str:
    return written.path.relative_to(harness.watch).as_posix()


def assert_packaged_once(harness: Harness, written: Sequence[Written]) -> dict[str, Any]:
    """Exactly these files were packaged, each once and as written; returns the packages."""
    packages = harness.packages()
    for body in packages.values():
        validate_package(body)
    found = harvested(packages.values())
    expected = {relative(harness, w): (w.size, w.sha256) for w in written}
    assert set(found) == set(expected), harness.output()[-3000:]
    for path, entries in found.items():
        assert [(size, digest) for size, digest, _ in entries] == [expected[path]], path
    return packages


def settled_sizes(harness: Harness, path: Path) -> list[int]:
    """Sizes at which the settle stage declared ``path`` complete (debug log)."""
    return [
        e["size"]
        for e in harness.events()
        if e.get("event") == "file_settled" and e.get("path") == str(path)
    ]


def failures_in_status(harness: Harness) -> str:
    status = subprocess.run(
        [ACQHARVEST, "status", "--config", str(harness.config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    return "\n".join(line for line in status.stdout.splitlines() if " failed " in line)


def read(corpus: Path, name: str) -> bytes:
    return (corpus / name).read_bytes()


#: settle window for the writers that pause on an open handle: ten times their pauses, so
#: that a loaded machine delaying a writer by seconds still cannot make a part file settle
WIDE_SETTLE = 3.0
SHORT_PAUSE = 0.3


def widen_settle(harness: Harness, **config: Any) -> None:
    harness.settle = WIDE_SETTLE
    harness.write_config(harness.tmp / "token", **config)


# ---------------------------------------------------------------------- one file, many ways


def test_append_in_chunks_on_one_handle(harness: Harness, corpus: Path) -> None:
    widen_settle(harness)
    data = read(corpus, OME)
    harness.start()
    written = simulator.append_slowly(
        data,
        harness.watch / "alice" / "p1" / "cells.ome.tif",
        chunk_size=len(data) // 6,
        pause=SHORT_PAUSE,
    )
    harness.mark()
    assert harness.endpoint.wait_for(1, timeout=60), harness.output()
    assert harness.stop() == 0
    assert_packaged_once(harness, [written])
    assert settled_sizes(harness, written.path) == [len(data)]


def test_writer_reopening_per_chunk_with_close_hint_off(harness: Harness, corpus: Path) -> None:
    # Pauses longer than the one-second confirming look after a close, shorter than
    # settle_seconds: only the full window is safe, which settle_on_close: false gives.
    harness.settle = 3.0
    harness.write_config(harness.tmp / "token", watch_options={"settle_on_close": False})
    data = read(corpus, OME)
    harness.start()
    written = simulator.append_slowly(
        data, harness.watch / "log.ome.tif", chunk_size=len(data) // 4, pause=1.5, reopen=True
    )
    harness.mark()
    assert harness.endpoint.wait_for(1, timeout=60), harness.output()
    assert harness.stop() == 0
    assert_packaged_once(harness, [written])
    assert settled_sizes(harness, written.path) == [len(data)]


@pytest.mark.parametrize("temp_name", ["cells.ome.tif.part", "~cells-writing"])
def test_temp_name_then_rename(harness: Harness, corpus: Path, temp_name: str) -> None:
    # ``.part`` is excluded by default and may be written slowly; a temporary name that is
    # not excluded is harvested only if it stays still for a window (here it does not).
    data = read(corpus, OME)
    pause = harness.settle * (0.6 if temp_name.endswith(".part") else 0.1)
    harness.start()
    written = simulator.write_then_rename(
        data,
        harness.watch / "cells.ome.tif",
        temp_name=temp_name,
        chunk_size=len(data) // 4,
        pause=pause,
    )
    harness.mark()
    assert harness.endpoint.wait_for(1, timeout=60), harness.output()
    assert not harness.endpoint.wait_for(2, timeout=3 * harness.settle + 2)
    assert harness.stop() == 0
    assert_packaged_once(harness, [written])


@pytest.mark.parametrize("head_last", [False, True], ids=["front-to-back", "head-last"])
def test_preallocate_then_fill(harness: Harness, corpus: Path, head_last: bool) -> None:
    # Reserved at full size, then nothing for three windows (the blank head holds it),
    # then filled with pauses shorter than the window (the moving mtime holds it).
    data = read(corpus, OME)
    harness.start()
    written = simulator.preallocate_then_fill(
        data,
        harness.watch / "reserved.ome.tif",
        chunk_size=len(data) // 5,
        pause=harness.settle * 0.4,
        before_first_write=3 * harness.settle,
        head_last=head_last,
    )
    harness.mark()
    assert harness.endpoint.wait_for(1, timeout=60), harness.output()
    assert harness.wait_log("file_head_blank"), "the reserved file was not seen blank"
    assert harness.stop() == 0
    assert_packaged_once(harness, [written])
    assert not [e for e in harness.events() if e.get("event") == "extraction_failed"]


def test_held_open_with_short_pauses(harness: Harness, corpus: Path) -> None:
    widen_settle(harness)
    data = read(corpus, MR)
    harness.start()
    written = simulator.hold_open(
        data, harness.watch / "long-exposure.dcm", pauses=[SHORT_PAUSE] * 6
    )
    harness.mark()
    assert harness.endpoint.wait_for(1, timeout=60), harness.output()
    assert harness.stop() == 0
    assert_packaged_once(harness, [written])
    assert settled_sizes(harness, written.path) == [len(data)]


@pytest.mark.parametrize("source", [MR, OME], ids=["dicom", "ome-tiff"])
def test_held_open_with_a_pause_longer_than_settle(
    harness: Harness, corpus: Path, source: str
) -> None:
    # Undecidable for the settle stage: the half file settles. The adapters' format check
    # refuses it as truncated, so no package is built from it, and the complete file is
    # harvested when it grows; no failure is left behind.
    data = read(corpus, source)
    harness.start()
    written = simulator.hold_open(
        data, harness.watch / f"paused{Path(source).suffix}", pauses=[4 * harness.settle]
    )
    harness.mark()
    assert harness.endpoint.wait_for(1, timeout=60), harness.output()
    assert not harness.endpoint.wait_for(2, timeout=2 * harness.settle + 2)
    assert harness.stop() == 0
    assert_packaged_once(harness, [written])
    assert len(data) in settled_sizes(harness, written.path)
    assert failures_in_status(harness) == ""


def test_rewritten_after_harvest_is_packaged_again_with_replaces(
    harness: Harness, corpus: Path
) -> None:
    target = harness.watch / "export.ome.tif"
    harness.start()
    first = simulator.append_slowly(read(corpus, OME), target, pause=0.1)
    assert harness.endpoint.wait_for(1, timeout=60), harness.output()
    second = simulator.rewrite(read(corpus, Z_SERIES), target, chunk_size=8192, pause=0.2)
    harness.mark()
    assert harness.endpoint.wait_for(2, timeout=60), harness.output()
    assert not harness.endpoint.wait_for(3, timeout=2 * harness.settle + 2)
    assert harness.stop() == 0
    old, new = (request.json for request in harness.endpoint.received)
    assert [(f["size"], f["sha256"]) for f in old["files"]] == [(first.size, first.sha256)]
    assert [(f["size"], f["sha256"]) for f in new["files"]] == [(second.size, second.sha256)]
    assert old["replaces"] is None
    assert new["replaces"] == old["package_id"]


def test_deleted_before_settling_leaves_no_package_and_no_failure(
    harness: Harness, corpus: Path
) -> None:
    harness.start()
    simulator.delete_before_settling(
        read(corpus, OME), harness.watch / "aborted.ome.tif", pause=harness.settle * 0.3
    )
    simulator.delete_before_settling(
        read(corpus, MR), harness.watch / "sub" / "aborted.dcm", fraction=1.0, pause=0.1
    )
    control = simulator.append_slowly(read(corpus, MR), harness.watch / "kept.dcm", pause=0.1)
    harness.mark()
    assert harness.endpoint.wait_for(1, timeout=60), harness.output()
    # a rescan after the control was sent finds nothing else either
    assert harness.wait_log("package_delivered"), harness.output()
    assert not harness.endpoint.wait_for(2, timeout=3 * harness.settle + 3)
    assert harness.stop() == 0
    assert_packaged_once(harness, [control])
    assert failures_in_status(harness) == ""


# ---------------------------------------------------------------------- multi-file sets


def test_dicom_series_instance_by_instance(harness: Harness, corpus: Path) -> None:
    instances = simulator.dicom_series(corpus / MR, 5)
    folder = harness.watch / "bob" / "mri" / "series 1"
    harness.start()
    written = simulator.arrive_apart(
        [(data, folder / f"IM{n:04d}") for n, data in enumerate(instances, 1)],
        interval=0.3,
        write=lambda data, path: simulator.append_slowly(
            data, path, chunk_size=len(data) // 3, pause=0.2
        ),
    )
    harness.mark()
    assert harness.endpoint.wait_for(1, timeout=60), harness.output()
    assert not harness.endpoint.wait_for(2, timeout=3)
    assert harness.stop() == 0
    (body,) = assert_packaged_once(harness, written).values()
    assert body["acquisition"]["complete"] is True
    assert body["metadata"]["instances"] == 5


def series_of_four(corpus: Path, folder: Path) -> tuple[list[bytes], list[Written]]:
    """A new four-instance series for ``folder`` (created): its bytes and final files."""
    instances = simulator.dicom_series(corpus / MR, 4)
    folder.mkdir(parents=True)
    return instances, [Written.of(folder / f"IM{n:04d}", d) for n, d in enumerate(instances, 1)]


def stop_once_whole(harness: Harness, whole: Callable[[], bool]) -> dict[str, Any]:
    """Wait until ``whole`` (a package lists the whole series), check that no package
    follows, stop the daemon; the packages, each valid."""
    deadline = time.monotonic() + 60
    while not whole():
        if time.monotonic() > deadline:
            pytest.fail(f"no package lists the whole series:\n{harness.output()[-4000:]}")
        time.sleep(0.2)
    count = len(harness.packages())
    assert not harness.endpoint.wait_for(count + 1, timeout=3 * harness.settle + 2)
    assert harness.stop() == 0
    packages = harness.packages()
    for body in packages.values():
        validate_package(body)
    return packages


def test_series_instance_cut_short_rejoins_its_series_once_complete(
    harness: Harness, corpus: Path
) -> None:
    # The series' first instance (the one the adapter reads) stops half-way for longer than
    # it takes to settle, group and read the series: the adapter refuses it as truncated,
    # so that series read fails. Only that instance's version is failed for good; its
    # siblings are grouped again at once, and once the instance is complete the
    # last package lists the whole series.
    instances, written = series_of_four(corpus, harness.watch / "carol" / "mri" / "series 2")
    cut, half = written[0].path, len(instances[0]) // 2
    harness.start()
    with cut.open("wb") as handle:
        handle.write(instances[0][:half])
        handle.flush()
        time.sleep(0.5)  # the half instance settles first, so it is read with the series
        for sibling, data in zip(written[1:], instances[1:], strict=True):
            sibling.path.write_bytes(data)
        assert harness.wait_log("extraction_failed", timeout=60), harness.output()
        handle.write(instances[0][half:])
    harness.mark()
    failed = next(e for e in harness.events() if e.get("event") == "extraction_failed")
    assert failed["path"] == str(cut)
    grouped = [e for e in harness.events() if e.get("event") == "acquisition_grouped"]
    assert grouped[0]["members"] == 4, "the cut instance was not read with its series"

    expected = [(w.size, w.sha256) for w in written]

    def latest() -> dict[str, Any] | None:
        bodies = list(harness.packages().values())
        replaced = {body["replaces"] for body in bodies}
        current = [body for body in bodies if body["package_id"] not in replaced]
        return current[0] if len(current) == 1 else None

    def whole() -> bool:
        body = latest()
        return body is not None and [(f["size"], f["sha256"]) for f in body["files"]] == expected

    stop_once_whole(harness, whole)
    cut_entries = harvested(harness.packages().values())[relative(harness, written[0])]
    assert [(size, digest) for size, digest, _ in cut_entries] == [expected[0]]
    assert failures_in_status(harness) == ""


def test_series_instance_other_than_the_one_read_cut_short_is_never_packaged_partial(
    harness: Harness, corpus: Path
) -> None:
    # The last instance (not the one the adapter reads) stops half-way for longer than
    # the settle window: its series is read with it, the adapter's check of every
    # instance refuses it, and no package lists it until it is complete. Then one
    # package lists every instance as written.
    instances, written = series_of_four(corpus, harness.watch / "dave" / "mri" / "series 3")
    cut, half = written[-1].path, len(instances[-1]) // 2
    harness.start()
    for sibling, data in zip(written[:-1], instances[:-1], strict=True):
        sibling.path.write_bytes(data)
    with cut.open("wb") as handle:
        handle.write(instances[-1][:half])
        handle.flush()
        assert harness.wait_log("extraction_failed", timeout=60), harness.output()
        # held still until the siblings were packaged again without it
        assert harness.endpoint.wait_for(1, timeout=60), harness.output()
        handle.write(instances[-1][half:])
    harness.mark()
    failed = next(e for e in harness.events() if e.get("event") == "extraction_failed")
    assert failed["path"] == str(cut)
    assert "truncated" in failed["reason"]
    grouped = [e for e in harness.events() if e.get("event") == "acquisition_grouped"]
    assert grouped[0]["members"] == 4, "the cut instance was not read with its series"

    expected = {relative(harness, w): (w.size, w.sha256) for w in written}
    packages = stop_once_whole(
        harness,
        lambda: any(
            {f["path"]: (f["size"], f["sha256"]) for f in body["files"]} == expected
            for body in harness.packages().values()
        ),
    )
    for body in packages.values():
        # never a partial file: every listed version is the one the writer left
        for entry in body["files"]:
            assert (entry["size"], entry["sha256"]) == expected[entry["path"]], entry["path"]
    final = [
        body
        for body in packages.values()
        if body["package_id"] not in {b["replaces"] for b in packages.values()}
    ]
    assert len(final) == 1
    assert final[0]["acquisition"]["complete"] is True
    assert final[0]["metadata"]["instances"] == 4
    assert failures_in_status(harness) == ""


def test_set_arriving_seconds_apart_within_group_quiet(harness: Harness, corpus: Path) -> None:
    harness.write_config(harness.tmp / "token", group_quiet_seconds=6)
    instances = simulator.dicom_series(corpus / MR, 3)
    harness.start()
    written = simulator.arrive_apart(
        [(data, harness.watch / f"slice{n}.dcm") for n, data in enumerate(instances, 1)],
        interval=2.5,
    )
    harness.mark()
    assert harness.endpoint.wait_for(1, timeout=60), harness.output()
    assert not harness.endpoint.wait_for(2, timeout=3)
    assert harness.stop() == 0
    (body,) = assert_packaged_once(harness, written).values()
    assert body["acquisition"]["complete"] is True


def test_series_member_arriving_after_group_quiet_is_packaged_again_with_every_file(
    harness: Harness, corpus: Path
) -> None:
    # Later than group_quiet_seconds: the late instance gives a new package that lists the
    # whole series and replaces the first one. Nothing is lost either way.
    harness.write_config(harness.tmp / "token", group_quiet_seconds=1.5)
    instances = simulator.dicom_series(corpus / MR, 3)
    harness.start()
    early = simulator.arrive_apart(
        [(data, harness.watch / f"IM{n}") for n, data in enumerate(instances[:2], 1)],
        interval=0.5,
    )
    assert harness.endpoint.wait_for(1, timeout=60), harness.output()
    late = [simulator.append_slowly(instances[2], harness.watch / "IM3", pause=0.2)]
    harness.mark()
    assert harness.endpoint.wait_for(2, timeout=60), harness.output()
    assert harness.stop() == 0
    first, second = (request.json for request in harness.endpoint.received)
    assert second["replaces"] == first["package_id"]
    assert [f["sha256"] for f in first["files"]] == [w.sha256 for w in early]
    assert [f["sha256"] for f in second["files"]] == [w.sha256 for w in (*early, *late)]


def companion_set_arriving_apart(harness: Harness, corpus: Path, interval: float) -> None:
    """The companion first, then each plane ``interval`` seconds later: one acquisition."""
    folder = corpus / COMPANION_SET
    names = ["multifile.companion.ome", *(f"multifile-Z{z}.ome.tiff" for z in range(1, 6))]
    harness.start()
    written = simulator.arrive_apart(
        [((folder / name).read_bytes(), harness.watch / "run 7" / name) for name in names],
        interval=interval,
    )
    harness.mark()
    assert harness.endpoint.wait_for(1, timeout=60), harness.output()
    assert not harness.endpoint.wait_for(2, timeout=2 * harness.settle + 2)
    assert harness.stop() == 0
    (body,) = assert_packaged_once(harness, written).values()
    assert body["acquisition"]["complete"] is True


def test_file_set_arriving_seconds_apart(harness: Harness, corpus: Path) -> None:
    companion_set_arriving_apart(harness, corpus, interval=2 * harness.settle)


@pytest.mark.long
@pytest.mark.timeout(5 * 60 + 240)
def test_file_set_arriving_minutes_apart(harness: Harness, corpus: Path) -> None:
    companion_set_arriving_apart(harness, corpus, interval=60.0)  # five minutes in all


# ---------------------------------------------------------------------- many files, odd names


def many_small_files(harness: Harness, corpus: Path, count: int, timeout: float) -> None:
    harness.write_config(harness.tmp / "token", workers=2)
    harness.start()
    sources = [read(corpus, name) for name in SMALL_TIFFS]
    written = simulator.many_files(sources, harness.watch, count)
    harness.mark()
    # while the files are read: nothing in the folder open for writing or locked
    with harness.handles_surveyed() as survey:
        assert harness.endpoint.wait_for(count, timeout=timeout), harness.output()[-3000:]
    assert survey.read_handles > 0, f"never saw the daemon reading ({survey.samples} looks)"
    assert harness.stop(timeout=60) == 0
    assert_packaged_once(harness, written)


def test_hundreds_of_small_files_at_once(harness: Harness, corpus: Path) -> None:
    many_small_files(harness, corpus, 300, timeout=120)


@pytest.mark.long
@pytest.mark.timeout(240 + 360)
def test_ten_thousand_small_files_at_once(harness: Harness, corpus: Path) -> None:
    many_small_files(harness, corpus, 10_000, timeout=240)


def test_deep_tree(harness: Harness, corpus: Path) -> None:
    data = read(corpus, MR)
    harness.start()
    written = [
        simulator.append_slowly(data, simulator.deep_path(harness.watch, 12, "deep.dcm")),
        simulator.append_slowly(
            read(corpus, OME), simulator.deep_path(harness.watch, 64, "deeper.ome.tif")
        ),
    ]
    harness.mark()
    assert harness.endpoint.wait_for(2, timeout=60), harness.output()
    assert harness.stop() == 0
    assert len(assert_packaged_once(harness, written)) == 2


def test_spaces_unicode_and_paths_at_the_limits(harness: Harness, corpus: Path) -> None:
    ome, tiff = read(corpus, OME), read(corpus, SMALL_TIFFS[0])
    longest = simulator.long_unicode_path(harness.watch, ".ome.tif")
    assert len(bytes(longest)) >= simulator.PATH_MAX - 100
    harness.start()
    written = [
        simulator.append_slowly(
            ome, harness.watch / "Jöns Ölund" / "Projekt ∞ ß 🧪" / "Zelle 1 µm.ome.tif"
        ),
        simulator.write_then_rename(tiff, harness.watch / "日本語 フォルダ" / "画像 01.tif"),
        simulator.append_slowly(ome, longest, chunk_size=len(ome) // 3, pause=0.3),
    ]
    harness.mark()
    assert harness.endpoint.wait_for(3, timeout=60), harness.output()[-3000:]
    assert harness.stop() == 0
    packages = assert_packaged_once(harness, written)
    operators = {body["acquisition"].get("operator") for body in packages.values()}
    assert "Jöns Ölund" in operators


def test_many_writers_at_once_mixing_patterns(harness: Harness, corpus: Path) -> None:
    # worker processes, as shipped, beside five writers: the busiest the machine gets here
    widen_settle(harness, workers=2)
    ome, mr, z = read(corpus, OME), read(corpus, MR), read(corpus, Z_SERIES)
    dx = read(corpus, "dicom/dx/dx_image.dcm")
    w = harness.watch
    pause = SHORT_PAUSE
    jobs: list[Callable[[], Written]] = [
        lambda: simulator.append_slowly(ome, w / "a" / "append.ome.tif", pause=pause),
        lambda: simulator.write_then_rename(mr, w / "b" / "renamed.dcm", pause=pause),
        lambda: simulator.preallocate_then_fill(z, w / "c" / "reserved.ome.tif", pause=pause),
        lambda: simulator.hold_open(dx, w / "d" / "held.dcm", pauses=[pause] * 4),
        lambda: simulator.append_slowly(z, w / "e" / "reopened.ome.tif", pause=0.1, reopen=True),
    ]
    results: list[Written] = []
    threads = [threading.Thread(target=lambda job=job: results.append(job())) for job in jobs]
    harness.start()
    with harness.handles_surveyed() as survey:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        harness.mark()
        assert len(results) == len(jobs)
        assert harness.endpoint.wait_for(len(jobs), timeout=60), harness.output()
    # Five reads can all fall between two looks, so no read handle is required here: the
    # many-files tests and test_the_handle_survey_sees_write_handles_and_locks show the
    # survey sees what it looks for.
    assert survey.samples > 10, survey
    assert not harness.endpoint.wait_for(len(jobs) + 1, timeout=harness.settle + 3)
    assert harness.stop() == 0
    assert_packaged_once(harness, results)


def test_simulated_bytes_match_the_corpus(tmp_path: Path, corpus: Path) -> None:
    """The simulator writes the corpus file byte for byte, whatever the pattern."""
    data = read(corpus, OME)
    digest = hashlib.sha256(data).hexdigest()
    for written in (
        simulator.append_slowly(data, tmp_path / "a", chunk_size=5000, pause=0, reopen=True),
        simulator.preallocate_then_fill(
            data, tmp_path / "b", chunk_size=7000, pause=0, head_last=True
        ),
        simulator.hold_open(data, tmp_path / "c", pauses=[0, 0, 0]),
        simulator.write_then_rename(data, tmp_path / "d", pause=0),
    ):
        assert written.sha256 == digest
        assert hashlib.sha256(written.path.read_bytes()).hexdigest() == digest
    name = simulator.longest_name("Zelle Ω ", ".tif")
    assert len(name.encode()) == simulator.NAME_MAX


def test_an_image_header_without_pixel_data_is_packaged_incomplete_then_replaced(
    harness: Harness, corpus: Path
) -> None:
    # A writer that stops after the header for longer than the settle window (a header
    # export looks the same): the header's metadata is packaged, flagged incomplete, and
    # the whole file, once written, replaces that package.
    data = (corpus / "dicom/mg/MG_Explicit_Little.dcm").read_bytes()
    header = data.index(b"\xe0\x7f\x10\x00")  # the Pixel Data element starts here
    target = harness.watch / "erin" / "mammo" / "IM0001"
    target.parent.mkdir(parents=True)
    harness.start()
    with target.open("wb") as handle:
        handle.write(data[:header])
        handle.flush()
        assert harness.endpoint.wait_for(1, timeout=60), harness.output()
        handle.write(data[header:])
    harness.mark()
    packages = stop_once_whole(
        harness,
        lambda: any(b["files"][0]["size"] == len(data) for b in harness.packages().values()),
    )
    [first] = [b for b in packages.values() if b["files"][0]["size"] == header]
    [final] = [b for b in packages.values() if b["files"][0]["size"] == len(data)]
    assert first["acquisition"]["complete"] is False
    assert first["metadata"]["image"]["size_x"] == 512
    assert any(
        w.startswith("acquisition incomplete: image header but no pixel data element")
        for w in first["provenance"]["warnings"]
    )
    assert final["replaces"] == first["package_id"]
    assert final["acquisition"]["complete"] is True
    assert not any("incomplete" in w for w in final["provenance"]["warnings"])
    logged = {
        event["package_id"]: event["complete"]
        for event in harness.events()
        if event.get("event") == "acquisition_packaged"
    }
    assert logged == {first["package_id"]: False, final["package_id"]: True}
