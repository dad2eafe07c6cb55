"""The one package chain, shared by the daemon and ``acqharvest extract``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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
