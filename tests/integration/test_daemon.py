"""The whole path, for real: files written slowly into a watched folder by a writer process
of ours, a daemon subprocess, and a loopback HTTP endpoint."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import warnings
from pathlib import Path

import pydicom
import pytest

from tests import slides
from tests.endpoint import LoopbackEndpoint
from tests.helpers import wait_until
from tests.integration.conftest import (
    ACQHARVEST,
    TOKEN,
    FolderGuard,
    HandleSurvey,
    Harness,
    tree_snapshot,
    validate_package,
    write_slowly,
)
from tests.simulator import dicom_series

pytestmark = pytest.mark.integration

MR = "dicom/mr-siemens/MR-SIEMENS-DICOM-WithOverlays.dcm"
OME = "ome-tiff/single-file/multi-channel.ome.tif"


def test_slow_write_gives_one_complete_package(harness: Harness, corpus: Path) -> None:
    data = (corpus / OME).read_bytes()
    target = harness.watch / "alice" / "neuro" / "cells.ome.tif"
    target.parent.mkdir(parents=True)
    harness.start()
    write_slowly(data, target, chunks=5, pause=harness.settle * 0.4)
    harness.mark()
    assert harness.endpoint.wait_for(1, timeout=30), harness.output()
    assert harness.stop() == 0

    (body,) = harness.packages().values()
    validate_package(body)
    assert len(harness.endpoint.received) == 1, "a package was built from a partial file"
    (entry,) = body["files"]
    assert entry["path"] == "alice/neuro/cells.ome.tif"
    assert entry["size"] == len(data)
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["acquisition"]["operator"] == "alice"
    assert body["acquisition"]["project"] == "neuro"
    assert body["acquisition"]["format"] == "OME-TIFF"
    assert body["instrument"]["id_type"] == "Handle"

    (request,) = harness.endpoint.received
    assert request.headers["idempotency-key"] == body["package_id"]
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["user-agent"].startswith("acqharvest/")


def test_dicom_series_written_file_by_file_is_one_package(harness: Harness, corpus: Path) -> None:
    instances = dicom_series(corpus / MR, 4)
    folder = harness.watch / "bob" / "mri"
    folder.mkdir(parents=True)
    harness.start()
    for number, data in enumerate(instances, start=1):
        write_slowly(data, folder / f"IM{number:04d}", chunks=3, pause=0.2)
    harness.mark()
    assert harness.endpoint.wait_for(1, timeout=30), harness.output()
    # the group is quiet now; nothing else may arrive
    assert not harness.endpoint.wait_for(2, timeout=3)
    assert harness.stop() == 0

    (body,) = harness.packages().values()
    validate_package(body)
    assert [f["path"] for f in body["files"]] == [f"bob/mri/IM{n:04d}" for n in range(1, 5)]
    assert [f["sha256"] for f in body["files"]] == [
        hashlib.sha256(data).hexdigest() for data in instances
    ]
    assert body["metadata"]["modality"] == "MR"
    assert body["metadata"]["instances"] == 4


def _identifying_values(dataset: pydicom.Dataset, vrs: tuple[str, ...]) -> set[str]:
    """Every value of these VRs in a dataset, nested sequences included, and for person
    names (PN) the identifiers and descriptions that go with them."""
    keywords = {"PatientID", "OtherPatientIDs", "AccessionNumber", "StudyDescription"}
    values: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # old corpus files break VR length rules
        for element in dataset.iterall():
            if element.VR in vrs or ("PN" in vrs and element.keyword in keywords):
                text = str(element.value or "").strip()
                if len(text) >= 3:
                    values.add(text)
    return values


def test_frequent_rescans_do_not_keep_a_series_from_going_quiet(
    harness: Harness, corpus: Path
) -> None:
    harness.write_config(harness.tmp / "token", rescan_seconds=0.3, group_quiet_seconds=2)
    for number, data in enumerate(dicom_series(corpus / MR, 3), start=1):
        (harness.watch / f"IM{number}").write_bytes(data)
    harness.start()
    assert harness.endpoint.wait_for(1, timeout=30), harness.output()
    assert harness.stop() == 0
    (body,) = harness.packages().values()
    assert body["acquisition"]["complete"] is True
    assert len(body["files"]) == 3


def test_no_patient_identifier_reaches_a_package(harness: Harness, corpus: Path) -> None:
    # by content: a file named after its patient is shown under a pseudonym
    identifiers: dict[str, set[str]] = {}
    dates: dict[str, set[str]] = {}
    device: set[str] = set()  # kept on purpose (Retain Device Identity), even if equal
    for source in sorted((corpus / "dicom").rglob("*.dcm")):
        dataset = pydicom.dcmread(source, stop_before_pixels=True, force=True)
        relative = source.relative_to(corpus).as_posix()
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        identifiers[digest] = _identifying_values(dataset, ("PN",))
        dates[digest] = _identifying_values(dataset, ("DA", "DT"))
        for keyword in ("DeviceSerialNumber", "StationName", "ManufacturerModelName"):
            device.add(str(dataset.get(keyword, "") or "").strip())
        target = harness.watch / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    identifiers = {path: values - device for path, values in identifiers.items()}
    every_identifier = set().union(*identifiers.values())
    # Dates are shifted, one offset per patient: a file's own true dates must be gone; a
    # shifted one may land on another file's true date by chance, so that is no leak. A
    # fixed key makes the offsets, and so this test, the same at every run.
    harness.state.mkdir()
    (harness.state / "secret.key").write_bytes(b"s" * 32)
    (harness.state / "secret.key").chmod(0o600)
    assert len(every_identifier) > 30, "the corpus should carry patient identifiers to remove"
    # slide scanners' TIFFs: case numbers, barcodes, users and scan dates in vendor fields
    planted = {
        slide.path.relative_to(harness.watch).as_posix(): {
            *slide.identity,
            *slide.dates,
            *slide.labels,
            *slide.never,
        }
        for slide in slides.write_slides(harness.watch / "slides")
    }

    result = harness.run_once()
    assert result.returncode == 0, result.stderr + harness.output()
    packages = harness.packages()
    assert len(packages) >= 20
    for body in packages.values():
        validate_package(body)
        text = json.dumps(body, ensure_ascii=False)
        own_dates = set().union(*(dates.get(entry["sha256"], set()) for entry in body["files"]))
        # short values ("0010") also occur by chance; match those only as whole JSON strings
        leaked = [
            value
            for value in every_identifier | own_dates
            if json.dumps(value, ensure_ascii=False) in text or (len(value) >= 6 and value in text)
        ]
        assert not leaked, f"{body['files'][0]['path']} leaks {leaked}"
        if any(identifiers.get(entry["sha256"]) for entry in body["files"]):
            assert body["provenance"]["deidentification"]["removed"] > 0
        slide = planted.pop(body["files"][0]["path"], set())
        found = json.dumps({k: v for k, v in body.items() if k != "files"}, ensure_ascii=False)
        assert [value for value in slide if value in found] == [], body["files"][0]["path"]
    assert planted == {}, "every slide is packaged"


def test_sigterm_then_restart_resends_nothing(harness: Harness, corpus: Path) -> None:
    shutil.copyfile(corpus / OME, harness.watch / "first.ome.tif")
    harness.start()
    assert harness.endpoint.wait_for(1, timeout=30), harness.output()
    assert harness.stop(signal.SIGTERM) == 0
    assert harness.wait_log("daemon_stopped", timeout=1)

    logged = len(harness.events())
    scans = harness.count_events("watch_scan_finished")
    harness.start()
    shutil.copyfile(corpus / MR, harness.watch / "second.dcm")
    harness.mark()
    assert harness.endpoint.wait_for(2, timeout=30), harness.output()
    assert harness.wait_log("package_delivered", count=2, timeout=10)
    # two scans after the restart looked at first.ome.tif (the first would have fed it to
    # the settle stage, due before the second), and none took it for new
    assert harness.wait_log("watch_scan_finished", count=scans + 2, timeout=30), harness.output()
    assert harness.stop() == 0
    assert len(harness.endpoint.received) == 2
    keys = [r.headers["idempotency-key"] for r in harness.endpoint.received]
    assert len(set(keys)) == 2
    settled = [e["path"] for e in harness.events()[logged:] if e.get("event") == "file_settled"]
    assert settled == [str(harness.watch / "second.dcm")]


def test_endpoint_down_then_up_receives_everything(
    harness: Harness, corpus: Path, endpoint: LoopbackEndpoint
) -> None:
    endpoint.stop()
    harness.start()
    for index, source in enumerate([OME, MR, "tiff-vendor/zeiss-lsm/test.lsm"]):
        shutil.copyfile(corpus / source, harness.watch / f"{index}_{Path(source).name}")
    harness.mark()
    assert harness.wait_log("acquisition_packaged", count=3, timeout=30), harness.output()
    assert harness.wait_log("delivery_failed", timeout=15), harness.output()
    endpoint.start()
    assert endpoint.wait_for(3, timeout=30), harness.output()
    assert harness.stop() == 0
    assert len(endpoint.unique) == 3


def test_restart_resumes_what_the_endpoint_had_not_confirmed(
    harness: Harness, corpus: Path, endpoint: LoopbackEndpoint
) -> None:
    endpoint.stop()
    shutil.copyfile(corpus / OME, harness.watch / "queued.ome.tif")
    harness.start()
    assert harness.wait_log("delivery_failed", timeout=30), harness.output()
    assert harness.stop() == 0
    pending = list((harness.state / "outbox" / "pending").glob("*.json"))
    assert len(pending) == 1, "the package must wait on disk while the endpoint is down"

    endpoint.start()
    harness.start()
    assert endpoint.wait_for(1, timeout=30), harness.output()
    assert harness.stop() == 0
    (key,) = endpoint.unique
    assert pending[0].name == f"{key}.json"
    assert not list((harness.state / "outbox" / "pending").glob("*.json"))


def test_files_written_while_stopped_are_harvested_at_start(harness: Harness, corpus: Path) -> None:
    harness.start()
    assert harness.stop() == 0
    shutil.copyfile(corpus / OME, harness.watch / "while-down.ome.tif")
    harness.start()
    assert harness.endpoint.wait_for(1, timeout=30), harness.output()
    assert harness.stop() == 0
    (body,) = harness.packages().values()
    assert body["files"][0]["path"] == "while-down.ome.tif"


def test_daemon_never_writes_to_the_instrument_folder(harness: Harness, corpus: Path) -> None:
    # Every harness run checks this at its end; here it is checked alone, and the check
    # itself is shown to notice a change.
    for source in (OME, MR):
        shutil.copyfile(corpus / source, harness.watch / Path(source).name)
    before = tree_snapshot(harness.watch)
    harness.start()
    assert harness.endpoint.wait_for(2, timeout=30), harness.output()
    assert harness.stop() == 0
    assert tree_snapshot(harness.watch) == before
    harness.start()
    os.utime(harness.watch / Path(OME).name, ns=(0, 0))  # undeclared: as if the daemon did it
    with pytest.raises(AssertionError, match=r"~ multi-channel\.ome\.tif: mtime_ns"):
        harness.stop()


def test_the_handle_survey_sees_write_handles_and_locks(tmp_path: Path) -> None:
    # what the acquisition tests rely on to show that the daemon writes and locks nothing
    (tmp_path / "read.dat").write_text("x")
    script = "exec 4< read.dat; flock -s read.dat sleep 30 & exec sleep 30 > written.dat"
    process = subprocess.Popen(["sh", "-c", script], cwd=tmp_path)
    survey = HandleSurvey()
    kinds = {
        "write handle": f"pid {process.pid} has {tmp_path / 'written.dat'} open for writing",
        "lock on a descriptor": f"holds a lock on {tmp_path / 'read.dat'}: ",
        "lock in /proc/locks": f"a lock on an inode in {tmp_path}: ",
    }

    def every_kind_seen() -> bool:
        survey.look(tmp_path, process.pid)
        return all(any(text in fault for fault in survey.faults) for text in kinds.values())

    try:
        assert wait_until(every_kind_seen, timeout=10), survey.faults
    finally:
        process.kill()
        process.wait()
    assert not [fault for fault in survey.faults if not any(t in fault for t in kinds.values())]
    assert survey.read_handles > 0  # descriptor 4: read only, unlocked, no fault


def test_rewritten_file_is_harvested_again_with_replaces(harness: Harness, corpus: Path) -> None:
    target = harness.watch / "image.ome.tif"
    shutil.copyfile(corpus / OME, target)
    harness.start()
    assert harness.endpoint.wait_for(1, timeout=30), harness.output()
    shutil.copyfile(corpus / "ome-tiff/single-file/z-series.ome.tif", target)
    harness.mark()
    assert harness.endpoint.wait_for(2, timeout=30), harness.output()
    assert harness.stop() == 0
    first, second = (request.json for request in harness.endpoint.received)
    assert second["replaces"] == first["package_id"]
    assert first["replaces"] is None


def test_run_once_exit_codes(harness: Harness, corpus: Path, endpoint: LoopbackEndpoint) -> None:
    shutil.copyfile(corpus / OME, harness.watch / "a.ome.tif")
    result = harness.run_once()
    assert result.returncode == 0, result.stderr
    assert len(endpoint.unique) == 1

    shutil.copyfile(corpus / MR, harness.watch / "b.dcm")
    endpoint.behave("reject", text="instrument not registered")
    result = harness.run_once()
    assert result.returncode == 1
    assert "1 rejected by the endpoint" in result.stderr

    status = subprocess.run(
        [ACQHARVEST, "status", "--config", str(harness.config)], capture_output=True, text=True
    )
    assert status.returncode == 0, status.stderr
    assert "rejected 1" in status.stdout
    assert "instrument not registered" in status.stdout

    endpoint.behave("ok")
    retried = subprocess.run(
        [ACQHARVEST, "retry", "--all", "--config", str(harness.config)],
        capture_output=True,
        text=True,
    )
    assert retried.returncode == 0, retried.stderr
    assert "queued again" in retried.stdout
    assert harness.run_once().returncode == 0
    assert len(endpoint.unique) == 2


def test_worker_processes_give_the_same_packages(harness: Harness, corpus: Path) -> None:
    token_file = harness.tmp / "token"
    harness.write_config(token_file, workers=2)
    for source in (OME, MR, "tiff-vendor/zeiss-lsm/test.lsm"):
        shutil.copyfile(corpus / source, harness.watch / Path(source).name)
    result = harness.run_once()
    assert result.returncode == 0, result.stderr + harness.output()
    formats = sorted(body["acquisition"]["format"] for body in harness.packages().values())
    assert formats == ["DICOM", "OME-TIFF", "TIFF (Zeiss LSM)"]


def test_directory_endpoint_and_concurrent_writers(tmp_path: Path, corpus: Path) -> None:
    watch, out = tmp_path / "watch", tmp_path / "out"
    watch.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(
        f"instrument: {{id: local-1}}\nwatch: [{{path: {watch}, settle_seconds: 0.5}}]\n"
        f"endpoint: {{type: directory, path: {out}}}\nstate_dir: {tmp_path / 'state'}\n"
        "workers: 0\n"
    )
    sources = sorted((corpus / "tiff-vendor").rglob("*.tif"))[:6]
    threads = [
        threading.Thread(
            target=write_slowly,
            args=(s.read_bytes(), watch / s.name),
            kwargs={"chunks": 3, "pause": 0.1},
        )
        for s in sources
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    guard = FolderGuard(watch)
    guard.mark()
    result = subprocess.run(
        [ACQHARVEST, "run", "--once", "--config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    guard.check()
    assert wait_until(lambda: len(list(out.glob("*.json"))) == len(sources), timeout=5)
    for path in out.glob("*.json"):
        body = json.loads(path.read_text())
        validate_package(body)
        assert path.name == f"{body['package_id']}.json"


def test_stop_does_not_wait_for_a_hung_endpoint(
    harness: Harness, corpus: Path, endpoint: LoopbackEndpoint
) -> None:
    endpoint.behave("slow", seconds=120)
    shutil.copyfile(corpus / OME, harness.watch / "hung.ome.tif")
    harness.start()
    assert wait_until(lambda: len(endpoint.received) >= 1, timeout=30), harness.output()
    started = time.monotonic()
    assert harness.stop(timeout=20) == 0
    assert time.monotonic() - started < 15
    assert len(list((harness.state / "outbox" / "pending").glob("*.json"))) == 1

    endpoint.behave("ok")
    harness.start()
    assert endpoint.wait_for(1, timeout=30), harness.output()
    assert harness.stop() == 0


def test_systemd_hears_ready_watchdog_pings_and_stopping(harness: Harness, corpus: Path) -> None:
    # A Type=notify unit with WatchdogSec=2: systemd's socket is played by ours.
    name = f"acqharvest-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind("\0" + name)
        manager.settimeout(30)
        harness.start(env={"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "2000000"})
        assert manager.recv(4096).decode() == "READY=1\nSTATUS=watching 1 folder"
        shutil.copyfile(corpus / OME, harness.watch / "during.ome.tif")
        harness.mark()
        # the harvest loop pings at half the timeout while it harvests, and after
        assert harness.endpoint.wait_for(1, timeout=30), harness.output()
        pings = [manager.recv(4096).decode() for _ in range(3)]
        assert pings == ["WATCHDOG=1"] * 3
        assert harness.stop() == 0
        manager.settimeout(1)
        rest = []
        with contextlib.suppress(TimeoutError):
            while True:
                rest.append(manager.recv(4096).decode())
        assert rest[-1:] == ["STOPPING=1\nSTATUS=stopping"], rest
        assert set(rest[:-1]) <= {"WATCHDOG=1"}, rest


def test_run_once_delivers_ro_crates_into_a_directory(tmp_path: Path, corpus: Path) -> None:
    watch, out = tmp_path / "watch", tmp_path / "out"
    (watch / "alice").mkdir(parents=True)
    config = tmp_path / "c.yaml"
    config.write_text(
        "instrument: {id: 'https://hdl.handle.net/21.11157/example-lsm980', name: LSM 980}\n"
        f"watch: [{{path: {watch}, settle_seconds: 0.5, path_template: '{{operator}}/**'}}]\n"
        f"endpoint: {{type: directory, path: {out}, format: ro-crate}}\n"
        f"state_dir: {tmp_path / 'state'}\nworkers: 0\n"
    )
    sources = [corpus / "tiff-vendor" / "zeiss-lsm" / "test.lsm", corpus / OME]
    for source in sources:
        shutil.copyfile(source, watch / "alice" / source.name)
    result = subprocess.run(
        [ACQHARVEST, "run", "--once", "--config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    crates = sorted(out.iterdir())
    assert len(crates) == len(sources)
    for path in crates:
        package_id = path.name.removesuffix(".ro-crate-metadata.json")
        assert len(package_id) == 64
        entities = {e["@id"]: e for e in json.loads(path.read_text())["@graph"]}
        assert entities["./"]["identifier"] == f"urn:acqharvest:package:{package_id}"
        assert entities["https://hdl.handle.net/21.11157/example-lsm980"]["name"] == "LSM 980"
        [file_entity] = [e for e in entities.values() if e["@type"] == "File"]
        assert file_entity["@id"].startswith("alice/")
        # the folder's operator, from path_template, is the agent
        assert entities["#operator"]["name"] == "alice"
        # the outbox confirmed it under the package's id, as for format: package
        receipt = tmp_path / "state" / "outbox" / "delivered" / f"{package_id}.json"
        assert receipt.is_file()


def test_run_once_fails_while_a_package_waits_held_for_review(tmp_path: Path, corpus: Path) -> None:
    watch, out, state = tmp_path / "watch", tmp_path / "out", tmp_path / "state"
    watch.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(
        f"instrument: {{id: local-1}}\nwatch: [{{path: {watch}, settle_seconds: 0.5}}]\n"
        f"endpoint: {{type: directory, path: {out}}}\nstate_dir: {state}\nworkers: 0\n"
        "deidentify: {burned_in: hold}\n"
    )
    # ultrasound without BurnedInAnnotation: text may be burned into its pixels
    shutil.copyfile(corpus / "dicom" / "us" / "US1_J2KR.dcm", watch / "scan.dcm")

    def once() -> subprocess.CompletedProcess[str]:
        command = [ACQHARVEST, "run", "--once", "--config", str(config)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    held = once()
    assert held.returncode == 1, held.stderr
    assert "0 undelivered, 1 held for review (see acqharvest status)" in held.stderr
    assert not out.exists() or not any(out.iterdir())
    (held_file,) = (state / "outbox" / "held").glob("*.json")
    assert once().returncode == 1  # still waiting for a person, run after run

    released = subprocess.run(
        [ACQHARVEST, "outbox", "release", held_file.stem, "--config", str(config)],
        capture_output=True,
        text=True,
    )
    assert released.returncode == 0, released.stderr
    delivered = once()
    assert delivered.returncode == 0, delivered.stderr
    assert [path.name for path in out.iterdir()] == [held_file.name]
