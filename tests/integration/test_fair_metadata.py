"""FAIR metadata with a real daemon: the instrument's PIDINST identity, the check of the
configured instrument against the one a file reports, and the operator from a people file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
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


#: a config with every PIDINST property, a people file, facility, licence and crates out
FAIR_CONFIG = """\
instrument:
  id: 21.T11998/0000-001A-3905-F
  name: LSM 980, room B.104
  landing_page: https://imaging.example.org/instruments/lsm980
  description: Confocal laser scanning microscope
  manufacturer: Carl Zeiss Microscopy
  manufacturer_identifier: {{identifier: 'https://ror.org/0abcdef12', identifier_type: ROR}}
  model: LSM 980
  serial_number: '2801000123'
  type: confocal microscope
  type_identifier:
    identifier: http://purl.obolibrary.org/obo/FBbi_00000251
    identifier_type: FBbi
  owners:
    - {{name: EM core, identifier: 'https://ror.org/05abcde12', identifier_type: ROR}}
  measured_variables: [fluorescence intensity]
  commissioned: 2021-03-01
  alternate_identifiers: [{{identifier: INV-4711, identifier_type: InventoryNumber}}]
  related_identifiers:
    - identifier: https://hdl.handle.net/21.11157/example-airyscan
      identifier_type: Handle
      relation_type: HasComponent
watch: [{{path: {watch}, settle_seconds: 0.5, path_template: '{{operator}}/{{project}}/**'}}]
endpoint: {{type: directory, path: {out}, format: ro-crate}}
state_dir: {state}
workers: 0
people: {people}
facility: {{name: EM core, ror: 'https://ror.org/05abcde12'}}
license: CC-BY-4.0
"""


@pytest.mark.long
@pytest.mark.timeout(1800)
def test_a_daemon_with_every_fair_field_delivers_crates_the_validator_passes(
    tmp_path: Path, corpus: Path
) -> None:
    from acqharvest.rocrate import METADATA_FILE
    from tests.crate_validation import validate_crates
    from tests.test_cli import ACQHARVEST

    watch, out = tmp_path / "watch", tmp_path / "out"
    project = watch / "alice" / "mitosis"
    project.mkdir(parents=True)
    people = tmp_path / "people.xlsx"
    _write_people(people, [["alice", "Alice Liddell", ORCID, "", "Cell Biology"]])
    (project / "acquisition.yaml").write_text("sample: HeLa, fixed\nstain: DAPI\n")
    for source in ("tiff-vendor/zeiss-lsm/test.lsm", "czi/testTinyCzi.czi"):
        shutil.copyfile(corpus / source, project / Path(source).name)
    config = tmp_path / "acqharvest.yaml"
    config.write_text(
        FAIR_CONFIG.format(watch=watch, out=out, state=tmp_path / "state", people=people)
    )

    ran = subprocess.run(
        [ACQHARVEST, "run", "--once", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr

    crates = []
    for index, delivered in enumerate(sorted(out.iterdir())):
        folder = tmp_path / f"crate-{index}"
        folder.mkdir()
        shutil.copyfile(delivered, folder / METADATA_FILE)
        crates.append(folder)
    assert len(crates) == 2
    results = validate_crates(crates, tmp_path / "http-cache")
    for result in results:
        required = [i for i in result["issues"] if i["severity"] == "REQUIRED"]
        assert required == [], result
        assert result["passed"], result
        assert result["executed"] >= 20  # the context was served: the checks ran
    for crate in crates:
        entities = {e["@id"]: e for e in json.loads((crate / METADATA_FILE).read_text())["@graph"]}
        instrument = entities["https://hdl.handle.net/21.T11998/0000-001A-3905-F"]
        assert instrument["url"] == "https://imaging.example.org/instruments/lsm980"
        assert entities[ORCID]["name"] == "Alice Liddell"
        assert entities["./"]["license"] == {"@id": "https://spdx.org/licenses/CC-BY-4.0"}
        assert "https://ror.org/05abcde12" in entities
        assert "alice/mitosis/acquisition.yaml" in entities  # the sidecar, a file of the crate
