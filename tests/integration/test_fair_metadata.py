"""FAIR metadata with a real daemon: the instrument's PIDINST identity, the check of the
configured instrument against the one a file reports, and the operator from a people file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import openpyxl
import pytest

from tests.integration.conftest import Harness, validate_package

pytestmark = pytest.mark.integration

#: an FEI SEM image whose header reports serial number 9920003, model 'Helios NanoLab" 660'
NAVCAM = "tiff-vendor/fei-sem/FEI-Helios-navcam.tif"
#: an ImageJ TIFF that reports no instrument
IMAGEJ = "tiff-vendor/imagej/xem_y32.tif"
ORCID = "https://orcid.org/0000-0002-1825-0097"


def _write_people(path: Path, rows: list[list[str]]) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in [["Username", "Name", "ORCID", "Email", "Group"], *rows]:
        sheet.append(row)
    book.save(path)


def test_a_file_from_another_instrument_is_flagged_in_the_package_the_log_and_status(
    harness: Harness, corpus: Path
) -> None:
    people = harness.tmp / "people.xlsx"
    _write_people(people, [["alice", "Alice Liddell", ORCID.rsplit("/")[-1], "a@x.org", ""]])
    harness.write_config(
        harness.tmp / "token",
        instrument_options={
            "serial_number": "9920004",  # the file says 9920003: a cloned PC, say
            "model": "Helios NanoLab 660",
            "landing_page": "https://imaging.example.org/instruments/helios",
            "owners": [
                {
                    "name": "EM core",
                    "identifier": "https://ror.org/05abcde12",
                    "identifier_type": "ROR",
                }
            ],
        },
        top_options={
            "people": str(people),
            "facility": {"name": "EM core", "ror": "https://ror.org/05abcde12"},
            "license": "CC-BY-4.0",
        },
    )
    (harness.watch / "alice" / "sem").mkdir(parents=True)
    (harness.watch / "bob" / "sem").mkdir(parents=True)
    harness.start()
    shutil.copyfile(corpus / NAVCAM, harness.watch / "alice" / "sem" / "navcam.tif")
    shutil.copyfile(corpus / IMAGEJ, harness.watch / "alice" / "sem" / "imagej.tif")
    # bob is not in the file yet: two acquisitions, each warned of, logged once
    shutil.copyfile(corpus / IMAGEJ, harness.watch / "bob" / "sem" / "early-1.tif")
    shutil.copyfile(corpus / IMAGEJ, harness.watch / "bob" / "sem" / "early-2.tif")
    harness.mark()
    assert harness.endpoint.wait_for(4, timeout=60), harness.output()

    # an admin adds bob while the daemon runs: his next acquisition names him
    _write_people(
        people,
        [
            ["alice", "Alice Liddell", ORCID, "", ""],
            ["Bob", "Bob Ross", "", "", "Materials"],
        ],
    )
    os.utime(people, ns=(people.stat().st_atime_ns, people.stat().st_mtime_ns + 10**9))
    shutil.copyfile(corpus / IMAGEJ, harness.watch / "bob" / "sem" / "imagej.tif")
    harness.mark()
    assert harness.endpoint.wait_for(5, timeout=60), harness.output()
    status = harness.status()
    assert harness.stop() == 0

    bodies = {body["files"][0]["path"]: body for body in harness.packages().values()}
    for body in bodies.values():
        validate_package(body)
    navcam = bodies["alice/sem/navcam.tif"]
    assert navcam["provenance"]["identity_check"] == {
        "result": "mismatch",
        "compared": ["serial_number", "model"],
        "mismatches": [{"field": "serial_number", "configured": "9920004", "reported": "9920003"}],
    }
    assert navcam["people"] == [
        {"role": "operator", "name": "Alice Liddell", "orcid": ORCID, "affiliation": "EM core"}
    ]
    assert navcam["instrument"]["landing_page"] == "https://imaging.example.org/instruments/helios"
    assert navcam["instrument"]["owners"][0]["identifier"] == "https://ror.org/05abcde12"
    assert navcam["facility"] == {"name": "EM core", "ror": "https://ror.org/05abcde12"}
    assert navcam["license"] == "CC-BY-4.0"
    assert bodies["alice/sem/imagej.tif"]["provenance"]["identity_check"] == {"result": "unknown"}
    assert bodies["bob/sem/imagej.tif"]["people"] == [
        {"role": "operator", "name": "Bob Ross", "affiliation": "Materials"}
    ]
    unlisted = "operator 'bob' is not in the people file: no person is named"
    assert unlisted not in bodies["bob/sem/imagej.tif"]["provenance"]["warnings"]
    for early in ("bob/sem/early-1.tif", "bob/sem/early-2.tif"):
        assert "people" not in bodies[early]
        assert unlisted in bodies[early]["provenance"]["warnings"]
    (warned,) = [e for e in harness.events() if e["event"] == "operator_not_in_people_file"]
    assert (warned["operator"], warned["people"]) == ("bob", str(people))

    # logged once, for the one acquisition, with the field, both values and the file
    (logged,) = [e for e in harness.events() if e["event"] == "instrument_identity_mismatch"]
    assert logged["field"] == "serial_number"
    assert (logged["configured"], logged["reported"]) == ("9920004", "9920003")
    assert logged["path"] == "alice/sem/navcam.tif"
    assert logged["package_id"] == navcam["package_id"]
    assert harness.count_events("people_file_read") == 1

    (line,) = [row for row in status.splitlines() if "navcam.tif" in row]
    assert str(harness.watch / "alice" / "sem" / "navcam.tif") in line
    assert "serial_number configured '9920004', file reports '9920003'" in line
    assert "instrument identity mismatches" in status
