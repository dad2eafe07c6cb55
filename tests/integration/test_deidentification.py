"""Patient data through a real daemon: folders named after the patient, shifted dates, the
method record, and a package held for burned-in annotation until a person releases it."""

from __future__ import annotations

import json
import warnings
from datetime import date
from pathlib import Path

import pydicom
import pytest

from tests.helpers import wait_until
from tests.integration.conftest import Harness, validate_package

pytestmark = pytest.mark.integration

MR = "dicom/mr-siemens/MR-SIEMENS-DICOM-WithOverlays.dcm"
US = "dicom/us/US1_J2KR.dcm"
NAME, PATIENT_ID, BIRTH = "Quistorp^Heinrike", "MRN-4711Q", "19700101"
#: every spelling of the patient that must not reach a package, compared lower-cased
TRACES = ("quistorp", "heinrike", "mrn-4711q", "19700101", "1970-01-01", "01.01.1970")


def _patient_file(source: Path, target: Path, acquired: str, series: str, **more: str) -> None:
    """``source`` as an export of the test patient: ``acquired`` is the study's day."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # old corpus files break VR length rules
        dataset = pydicom.dcmread(source, force=True)
        dataset.PatientName = NAME
        dataset.PatientID = PATIENT_ID
        dataset.PatientBirthDate = BIRTH
        for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
            setattr(dataset, keyword, acquired)
        dataset.SeriesInstanceUID = series
        dataset.SOPInstanceUID = series + ".1"
        for keyword, value in more.items():
            setattr(dataset, keyword, value)
        target.parent.mkdir(parents=True, exist_ok=True)
        dataset.save_as(target)


def _day(started: str) -> date:
    return date.fromisoformat(started[:10])


def test_a_patient_named_folder_gives_packages_without_the_patient_and_shifted_dates(
    harness: Harness, corpus: Path
) -> None:
    harness.config.write_text(harness.config.read_text() + "deidentify: {burned_in: hold}\n")
    folder = f"{NAME}_{PATIENT_ID}"
    # two series of one patient, 46 days apart, in two folders named after the patient
    first = harness.watch / folder / "head" / "IM0001.dcm"
    second = harness.watch / folder.upper() / "follow-up" / "IM0001.dcm"
    _patient_file(corpus / MR, first, "20051130", "1.2.826.0.1.3680043.8.498.1")
    _patient_file(corpus / MR, second, "20060115", "1.2.826.0.1.3680043.8.498.2")
    # an ultrasound image of the same patient: text may be burned into its pixels
    scan = harness.watch / folder / "us" / "US0001.dcm"
    _patient_file(corpus / US, scan, "20051201", "1.2.826.0.1.3680043.8.498.3")
    harness.start()
    harness.mark()

    assert harness.endpoint.wait_for(2, timeout=60), harness.output()
    held = harness.state / "outbox" / "held"
    assert wait_until(lambda: any(held.glob("*.json")), timeout=60), harness.output()
    (held_file,) = held.glob("*.json")
    held_id = held_file.stem
    status = harness.status()
    assert "held 1" in status, status
    assert f"acqharvest outbox release {held_id}" in status, status
    assert harness.wait_log("burned_in_annotation"), harness.output()
    assert len(harness.packages()) == 2, "a held package was delivered"

    released = harness.command("outbox", "release", held_id)
    assert released.returncode == 0, released.stdout + released.stderr
    assert harness.endpoint.wait_for(3, timeout=60), harness.output()
    assert harness.stop() == 0

    bodies = list(harness.packages().values())
    for body in bodies:
        validate_package(body)
        text = json.dumps(body, ensure_ascii=False).lower()
        for trace in TRACES:
            assert trace not in text, f"{trace} in {body['files'][0]['path']}"
        record = body["provenance"]["deidentification"]
        assert record["patient_identity_removed"] is True
        assert record["dates"] == "shifted"
        assert [code["code"] for code in record["method_codes"]] == ["113100", "113107", "113109"]
        assert record["pixel_data_cleaned"] is False
        assert body["files"][0]["path"].startswith("redacted-")
        assert body["acquisition"]["operator"].startswith("redacted-")  # {operator} field
    by_series = {body["files"][0]["path"].split("/")[1]: body for body in bodies}
    assert set(by_series) == {"head", "follow-up", "us"}

    # one offset for every file of the patient: whole days back, time of day unchanged
    head, follow_up = by_series["head"], by_series["follow-up"]
    offsets = {
        (_day(body["acquisition"]["started"]) - day).days
        for body, day in (
            (head, date(2005, 11, 30)),
            (follow_up, date(2006, 1, 15)),
            (by_series["us"], date(2005, 12, 1)),
        )
    }
    (offset,) = offsets
    assert -3650 <= offset <= -1
    assert head["acquisition"]["started"][10:] == "T14:11:27.937501"
    assert head["metadata"]["acquired"] == head["acquisition"]["started"]
    us = by_series["us"]["provenance"]
    assert us["deidentification"]["burned_in_annotation"] == "unknown"
    assert "burned-in annotation: BurnedInAnnotation absent and modality US" in us["warnings"]
    assert head["provenance"]["deidentification"]["burned_in_annotation"] == "unknown"
    assert not any("burned-in" in warning for warning in head["provenance"]["warnings"])


def test_a_held_package_survives_sigkill_and_is_sent_once_released(
    harness: Harness, corpus: Path
) -> None:
    harness.config.write_text(harness.config.read_text() + "deidentify: {burned_in: hold}\n")
    # an MR image whose header says text is burned into it
    target = harness.watch / "alice" / "neuro" / "IM0001.dcm"
    _patient_file(
        corpus / MR, target, "20051130", "1.2.826.0.1.3680043.8.498.9", BurnedInAnnotation="YES"
    )
    harness.start()
    harness.mark()
    held = harness.state / "outbox" / "held"
    assert wait_until(lambda: any(held.glob("*.json")), timeout=60), harness.output()
    harness.kill()  # SIGKILL: no clean stop

    harness.start()
    # a rescan (every 2 s) sees the file again: it is known, neither sent nor spooled twice
    scans = harness.count_events("watch_scan_finished")
    assert harness.wait_log("watch_scan_finished", timeout=30, count=scans + 2), harness.output()
    (held_file,) = held.glob("*.json")
    assert harness.pending() == []
    assert harness.endpoint.received == []
    released = harness.command("outbox", "release", held_file.stem)
    assert released.returncode == 0, released.stdout + released.stderr
    assert harness.endpoint.wait_for(1, timeout=30), harness.output()
    assert harness.stop() == 0
    (body,) = harness.packages().values()
    validate_package(body)
    assert body["package_id"] == held_file.stem
    assert body["provenance"]["deidentification"]["burned_in_annotation"] == "YES"
    assert "burned-in annotation: BurnedInAnnotation is YES" in body["provenance"]["warnings"]
    assert len(harness.endpoint.received) == 1
    assert "held 0" in harness.status()
