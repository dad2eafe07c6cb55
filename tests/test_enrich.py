"""The one package chain, shared by the daemon and ``acqharvest extract``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema

from acqharvest import workers
from acqharvest.commands import preview
from acqharvest.deidentify import Deidentifier
from acqharvest.enrich import enrich
from acqharvest.identity import instrument_block
from acqharvest.model import (
    Acquisition,
    DeidentifySettings,
    Extraction,
    InstrumentSettings,
)
from acqharvest.people import Attribution, PeopleTable, Person
from tests.helpers import in_process_daemon, probed

MR = "dicom/mr-siemens/MR-SIEMENS-DICOM-WithOverlays.dcm"


def _extraction(path: Path, root: Path) -> Extraction:
    member = probed(path, root)
    extraction = workers.extract_acquisition(
        Acquisition(member.group_key, member.adapter, root, (member,))
    )
    assert isinstance(extraction, Extraction), extraction
    return extraction


def test_extract_prints_the_package_the_daemon_builds(tmp_path: Path, corpus: Path) -> None:
    watch = tmp_path / "instrument"
    watch.mkdir()
    source = watch / "mr.dcm"
    shutil.copyfile(corpus / MR, source)
    daemon = in_process_daemon(tmp_path, watch)
    try:
        built = daemon._build(_extraction(source, watch))
    finally:
        daemon.state.close()

    [printed], errors = preview([source], daemon.settings, daemon.deidentifier)
    assert errors == []
    assert printed == built.body
    assert printed["provenance"]["deidentification"]["removed"] > 0


def test_extract_of_a_file_in_a_watch_folder_applies_that_folders_template(
    tmp_path: Path, corpus: Path
) -> None:
    from acqharvest.config import parse_settings
    from acqharvest.runtime import Daemon

    watch = tmp_path / "instrument"
    source = watch / "alice" / "tumour-2" / "navcam.tif"
    source.parent.mkdir(parents=True)
    shutil.copyfile(corpus / NAVCAM, source)
    settings = parse_settings(
        f"instrument: {{id: local-1}}\n"
        f"watch: [{{path: {watch}, path_template: '{{operator}}/{{project}}/**'}}]\n"
        f"endpoint: {{type: directory, path: {tmp_path / 'out'}}}\n"
        f"state_dir: {tmp_path / 'state'}\nworkers: 0\n",
        source="test.yaml",
        base_dir=tmp_path,
    )
    daemon = Daemon(settings)
    try:
        built = daemon._build(_extraction(source, watch)).body
    finally:
        daemon.state.close()

    # the file, or a folder below the watch folder: the daemon's package either way
    for given in (source, watch / "alice"):
        [printed], errors = preview([given], settings, daemon.deidentifier)
        assert errors == []
        assert printed == built
    assert (built["acquisition"]["operator"], built["acquisition"]["project"]) == (
        "alice",
        "tumour-2",
    )
    assert built["files"][0]["path"] == "alice/tumour-2/navcam.tif"


def test_enrich_adds_the_path_fields_and_the_package_replaced(tmp_path: Path, corpus: Path) -> None:
    folder = tmp_path / "alice" / "brain"
    folder.mkdir(parents=True)
    source = folder / "mr.dcm"
    shutil.copyfile(corpus / MR, source)
    extraction = _extraction(source, tmp_path)
    instrument = instrument_block(InstrumentSettings(id="mri-3"))
    policy = Deidentifier(DeidentifySettings(), b"s" * 32)

    package = enrich(
        extraction,
        policy,
        instrument=instrument,
        path_template="{operator}/{project}",
        previous="an-earlier-id",
        host="acq-pc",
    )

    body = package.body
    assert body["acquisition"]["operator"] == "alice"
    assert body["acquisition"]["project"] == "brain"
    assert body["replaces"] == "an-earlier-id"
    assert body["harvester"]["host"] == "acq-pc"
    assert body["instrument"]["id"] == "mri-3"
    assert body["files"][0]["path"] == "alice/brain/mr.dcm"
    # de-identified: the patient's name the file carries is in no field of the package
    original = json.dumps(extraction.metadata) + json.dumps(extraction.original_metadata)
    assert "PatientName" in original
    assert "PatientName" not in json.dumps(body["metadata"])
    assert "PatientName" not in json.dumps(body["original_metadata"])


def test_enrich_without_a_policy_keeps_what_the_adapter_read(tmp_path: Path, corpus: Path) -> None:
    source = tmp_path / "mr.dcm"
    shutil.copyfile(corpus / MR, source)
    extraction = _extraction(source, tmp_path)
    off = Deidentifier(DeidentifySettings(enabled=False), b"s" * 32)

    body = enrich(
        extraction,
        off,
        instrument=instrument_block(InstrumentSettings(id="mri-3")),
        path_template=None,
        previous=None,
    ).body

    assert body["provenance"]["deidentification"]["profile"] is None
    assert body["metadata"] == json.loads(json.dumps(extraction.metadata, default=str))
    assert body["replaces"] is None


#: an FEI SEM image whose header names its instrument: serial 9920003, operator "user"
NAVCAM = "tiff-vendor/fei-sem/FEI-Helios-navcam.tif"
SCHEMA = json.loads(
    (Path(__file__).resolve().parents[1] / "config" / "package.schema.json").read_text()
)


def test_the_daemon_and_extract_check_identity_and_name_the_operator_alike(
    tmp_path: Path, corpus: Path
) -> None:
    watch = tmp_path / "instrument"
    watch.mkdir()
    source = watch / "navcam.tif"
    shutil.copyfile(corpus / NAVCAM, source)
    people = tmp_path / "people.csv"
    # the operator the file names ("user"), with another case
    people.write_text(
        "username,name,orcid,email,group\n"
        "User,Ursula User,0000-0002-1825-0097,u@example.org,SEM lab\n"
    )
    daemon = in_process_daemon(
        tmp_path,
        watch,
        instrument=', serial_number: "9920004", model: Helios NanoLab 660',
        more=f"people: {people}\nfacility: {{name: EM core, ror: 05abcde12}}\nlicense: CC0-1.0\n",
    )
    try:
        built = daemon._build(_extraction(source, watch)).body
    finally:
        daemon.state.close()

    [printed], errors = preview([source], daemon.settings, daemon.deidentifier)
    assert errors == []
    assert printed == built
    jsonschema.validate(built, SCHEMA)
    assert built["provenance"]["identity_check"] == {
        "result": "mismatch",
        "compared": ["serial_number", "model"],
        # the model matches although the header quotes it ('Helios NanoLab" 660')
        "mismatches": [{"field": "serial_number", "configured": "9920004", "reported": "9920003"}],
    }
    assert built["people"] == [
        {
            "role": "operator",
            "name": "Ursula User",
            "orcid": "https://orcid.org/0000-0002-1825-0097",
            "affiliation": "SEM lab",
        }
    ]
    assert built["facility"] == {"name": "EM core", "ror": "https://ror.org/05abcde12"}
    assert built["license"] == "CC0-1.0"


def test_the_folder_operator_wins_over_the_one_the_file_names(tmp_path: Path, corpus: Path) -> None:
    folder = tmp_path / "alice" / "sem"
    folder.mkdir(parents=True)
    source = folder / "navcam.tif"
    shutil.copyfile(corpus / NAVCAM, source)
    table = PeopleTable(
        tmp_path / "people.csv",
        {"alice": Person("alice", "Alice Liddell"), "user": Person("user", "Ursula User")},
    )
    instrument = instrument_block(InstrumentSettings(id="sem-1", serial_number="0009920003"))

    body = enrich(
        _extraction(source, tmp_path),
        Deidentifier(DeidentifySettings(), b"s" * 32),
        instrument=instrument,
        path_template="{operator}/{project}",
        previous=None,
        attribution=Attribution(table),
    ).body

    assert body["people"] == [{"role": "operator", "name": "Alice Liddell"}]
    assert body["provenance"]["identity_check"] == {
        "result": "match",
        "compared": ["serial_number"],
    }


def test_what_the_policy_removed_is_neither_compared_nor_looked_up(
    tmp_path: Path, corpus: Path
) -> None:
    """The DICOM operator's name and the device serial, removed by the profile (without
    Retain Device Identity), must not come back as a person or a reported serial."""
    source = tmp_path / "mr.dcm"
    shutil.copyfile(corpus / MR, source)
    extraction = _extraction(source, tmp_path)
    reported = extraction.metadata["instrument_reported"]["serial_number"]
    operator = extraction.metadata["operator"]
    table = PeopleTable(tmp_path / "p.csv", {operator.casefold(): Person(operator, "Med User")})
    policy = Deidentifier(DeidentifySettings(retain_device_identity=False), b"s" * 32)

    body = enrich(
        extraction,
        policy,
        instrument=instrument_block(InstrumentSettings(id="mri-3", serial_number=reported + "1")),
        path_template=None,
        previous=None,
        attribution=Attribution(table),
    ).body

    assert "people" not in body
    assert body["provenance"]["identity_check"] == {"result": "unknown"}

    # without the policy both are there: what left them out above was the policy
    kept = enrich(
        extraction,
        Deidentifier(DeidentifySettings(enabled=False), b"s" * 32),
        instrument=instrument_block(InstrumentSettings(id="mri-3", serial_number=reported + "1")),
        path_template=None,
        previous=None,
        attribution=Attribution(table),
    ).body
    assert kept["people"] == [{"role": "operator", "name": "Med User"}]
    assert kept["provenance"]["identity_check"]["result"] == "mismatch"


def test_only_an_operator_as_written_and_not_in_the_people_file_is_warned_of(
    tmp_path: Path, corpus: Path
) -> None:
    """The CZI names its operator (``goubi``); the people file lists someone else."""
    source = tmp_path / "tiny.czi"
    shutil.copyfile(corpus / "czi" / "testTinyCzi.czi", source)
    extraction = _extraction(source, tmp_path)
    table = PeopleTable(tmp_path / "people.csv", {"alice": Person("alice", "Alice Liddell")})
    unlisted = "operator 'goubi' is not in the people file: no person is named"

    def built(operator_policy: str, people: PeopleTable | None) -> Any:
        settings = DeidentifySettings(operator=operator_policy)  # type: ignore[arg-type]
        return enrich(
            extraction,
            Deidentifier(settings, b"s" * 32),
            instrument={"id": "czi-1"},
            path_template=None,
            previous=None,
            attribution=Attribution(people),
        )

    kept = built("keep", table)
    assert kept.unknown_operator == "goubi"
    assert unlisted in kept.body["provenance"]["warnings"]
    # a pseudonym is nobody the file could list, and no file configured misses nobody
    for package in (built("pseudonymize", table), built("remove", table), built("keep", None)):
        assert package.unknown_operator is None
        assert not any("people file" in w for w in package.body["provenance"]["warnings"])
