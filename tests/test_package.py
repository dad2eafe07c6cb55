"""The package document and its deterministic id."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from acqharvest.model import (
    Acquisition,
    Deidentified,
    Extraction,
    FileSettled,
    ProbedFile,
    Sidecar,
)
from acqharvest.outbox import serialize
from acqharvest.package import build_package, package_id, relative_path
from acqharvest.pathtext import unescape

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[1] / "config" / "package.schema.json").read_text()
)
ROOT = Path("/instrument")


def member(
    name: str, digest: str, size: int = 10, mtime_ns: int = 1_700_000_000_123_456_789
) -> ProbedFile:
    settled = FileSettled(ROOT / name, ROOT, size, mtime_ns, "1:2")
    return ProbedFile(settled, digest, "dicom", "dicom:1.2.3", role="member", collects=True)


def acquisition(*members: ProbedFile) -> Acquisition:
    return Acquisition("dicom:1.2.3", "dicom", ROOT, members)


def test_package_id_depends_on_content_not_order_or_time() -> None:
    a, b = member("s/IM1", "a" * 64), member("s/IM2", "b" * 64)
    assert package_id("inst", acquisition(a, b)) == package_id("inst", acquisition(b, a))
    assert package_id("inst", acquisition(a, b)) != package_id("other", acquisition(a, b))
    changed = member("s/IM2", "c" * 64)
    assert package_id("inst", acquisition(a, b)) != package_id("inst", acquisition(a, changed))


def test_built_package_matches_the_schema_and_carries_provenance() -> None:
    newest = 1_700_000_060_000_001_999
    acq = acquisition(
        member("bob/mri/IM1", "a" * 64), member("bob/mri/IM2", "b" * 64, 20, mtime_ns=newest)
    )
    extraction = Extraction(
        acq, "dicom", "1.0.0", "DICOM", {"modality": "MR"}, {}, "2024-01-02T10:15:00", ("w",)
    )
    clean = Deidentified({"modality": "MR"}, {"Manufacturer": "X"}, "profile", ("opt",), 3)
    package = build_package(
        extraction,
        clean,
        instrument={"id": "urn:x", "id_type": "URN"},
        acquisition_fields={"operator": "bob"},
        previous="f" * 64,
        host="scope-pc",
    )
    body = dict(package.body)
    jsonschema.validate(body, SCHEMA)
    assert body["package_id"] == package.package_id == package_id("urn:x", acq)
    assert body["created"] == "2023-11-14T22:14:20.000001Z"  # the newest file's mtime
    assert [f["path"] for f in body["files"]] == ["bob/mri/IM1", "bob/mri/IM2"]
    assert body["files"][0]["modified"].startswith("2023-11-14T22:13:20.123456")
    assert body["acquisition"] == {"format": "DICOM", "complete": True, "operator": "bob"}
    assert body["harvester"]["host"] == "scope-pc"
    assert body["replaces"] == "f" * 64
    assert body["provenance"]["deidentification"]["removed"] == 3
    assert body["provenance"]["warnings"] == ["w"]


def test_an_extraction_the_adapter_calls_incomplete_gives_an_incomplete_package() -> None:
    acq = acquisition(member("bob/mri/IM1", "a" * 64))
    reason = "image header but no pixel data element: IM1"
    warning = f"acquisition incomplete: {reason}"
    extraction = Extraction(
        acq, "dicom", "1.0.0", "DICOM", {}, {}, None, (warning,), incomplete=reason
    )
    clean = Deidentified({}, {}, None, (), 0)
    body = dict(
        build_package(
            extraction,
            clean,
            instrument={"id": "urn:x", "id_type": "URN"},
            acquisition_fields={},
            previous=None,
        ).body
    )
    jsonschema.validate(body, SCHEMA)
    assert body["acquisition"]["complete"] is False
    assert body["provenance"]["warnings"] == [warning]


def test_a_rebuilt_package_does_not_replace_itself() -> None:
    acq = acquisition(member("IM1", "a" * 64))
    extraction = Extraction(acq, "dicom", "1.0.0", "DICOM", {}, {})
    clean = Deidentified({}, {}, None, (), 0)
    same = package_id("urn:x", acq)
    package = build_package(
        extraction,
        clean,
        instrument={"id": "urn:x", "id_type": "URN"},
        acquisition_fields={},
        previous=same,
        host="h",
    )
    assert package.body["replaces"] is None


def test_a_package_built_again_later_has_the_same_bytes() -> None:
    """What an endpoint deduplicating by Idempotency-Key needs: one body per package_id."""
    acq = acquisition(member("IM1", "a" * 64), member("IM2", "b" * 64))
    extraction = Extraction(acq, "dicom", "1.0.0", "DICOM", {"modality": "MR"}, {})
    clean = Deidentified({"modality": "MR"}, {}, "profile", (), 1)

    def build() -> bytes:
        package = build_package(
            extraction,
            clean,
            instrument={"id": "urn:x", "id_type": "URN"},
            acquisition_fields={},
            previous=None,
            host="h",
        )
        return serialize(package.body)

    first = build()
    time.sleep(0.01)  # the clock moved: nothing in the bytes may follow it
    assert build() == first


@pytest.mark.parametrize(
    "member", ["/data/root/../etc/passwd", "/data/root/a/../../x", "/data/rooted/a", "/etc/x"]
)
def test_relative_path_refuses_paths_outside_the_root(member: str) -> None:
    with pytest.raises(ValueError, match="not below"):
        relative_path(Path(member), Path("/data/root"))


def test_relative_path_keeps_names_that_merely_contain_dots() -> None:
    assert relative_path(Path("/data/root/a..b/..c"), Path("/data/root")) == "a..b/..c"


def test_a_name_that_is_not_utf8_is_carried_percent_encoded_and_flagged() -> None:
    latin1 = os.fsdecode(b"Jos\xe9/scan 100%.tif")
    acq = acquisition(member(latin1, "a" * 64), member("caf%E9.tif", "b" * 64))
    extraction = Extraction(acq, "tiff", "1", "TIFF", {}, {}, None, (f"{ROOT / latin1}: odd",))
    package = build_package(
        extraction,
        Deidentified({}, {}, None, (), 0),
        instrument={"id": "urn:x", "id_type": "URN"},
        acquisition_fields={"operator": os.fsdecode(b"Jos\xe9")},
        previous=None,
        host="pc",
    )
    body = dict(package.body)
    jsonschema.validate(body, SCHEMA)
    escaped, literal = body["files"]
    assert escaped["path"] == "Jos%E9/scan 100%25.tif"
    assert escaped["path_encoding"] == "percent"
    assert os.fsencode(unescape(escaped["path"])) == b"Jos\xe9/scan 100%.tif"
    # a valid name that happens to look escaped is left alone and not flagged
    assert literal == {
        "path": "caf%E9.tif",
        "size": 10,
        "sha256": "b" * 64,
        "modified": literal["modified"],
        "media_type": "application/octet-stream",  # the extraction names none
    }
    assert body["acquisition"]["operator"] == "Jos%E9"
    assert body["provenance"]["warnings"] == ["/instrument/Jos%E9/scan 100%25.tif: odd"]
    # what the outbox spools and posts: strict UTF-8 JSON
    json.dumps(body, ensure_ascii=False).encode("utf-8")
    # the id is as deterministic as for any name, and tells the two names apart
    assert package.package_id == package_id("urn:x", acq)
    other = acquisition(member(os.fsdecode(b"Jos\xe8/scan 100%.tif"), "a" * 64), acq.members[1])
    assert package_id("urn:x", other) != package.package_id


def test_sidecars_give_annotations_sidecar_files_and_their_provenance() -> None:
    acq = acquisition(member("bob/mri/IM1", "a" * 64))
    applied = Sidecar(
        ROOT / "bob" / "acquisition.csv",
        ROOT,
        size=40,
        mtime_ns=1_700_000_000_000_000_000,
        sha256="c" * 64,
        values={"study": "Brain atlas", "subject": "Doe^John"},
    )
    broken = Sidecar(
        ROOT / "bob/mri/acquisition.yaml",
        ROOT,
        size=9,
        mtime_ns=1_700_000_000_000_000_000,
        sha256="d" * 64,
        error="line 1: the file must be a mapping of keys to values",
    )
    extraction = Extraction(acq, "dicom", "1", "DICOM", {}, {}, sidecars=(applied, broken))
    # the de-identification removed the patient's name from the headers: not from here either
    clean = Deidentified({}, {}, "profile", (), 1, redactions={"Doe^John": "[removed]"})
    package = build_package(
        extraction,
        clean,
        instrument={"id": "urn:x", "id_type": "URN"},
        acquisition_fields={},
        previous=None,
        host="h",
    )
    body = dict(package.body)
    jsonschema.validate(body, SCHEMA)
    assert body["acquisition"]["annotations"] == {"study": "Brain atlas", "subject": "[removed]"}
    assert body["files"][1] == {
        "path": "bob/acquisition.csv",
        "size": 40,
        "sha256": "c" * 64,
        "modified": "2023-11-14T22:13:20Z",
        "media_type": "text/csv",
        "role": "sidecar",
    }
    assert len(body["files"]) == 2  # the broken one is not listed: nothing of it applied
    assert body["provenance"]["sidecars"] == [
        {"path": "bob/acquisition.csv", "applied": True},
        {"path": "bob/mri/acquisition.yaml", "applied": False, "error": broken.error},
    ]
    assert body["provenance"]["warnings"] == [
        f"sidecar bob/mri/acquisition.yaml not applied: {broken.error}"
    ]
    # another sidecar version is another body, so another id; none at all is the old id
    assert package.package_id == package_id("urn:x", acq, (applied, broken))
    assert package.package_id != package_id("urn:x", acq, (applied,))
    assert package_id("urn:x", acq) == package_id("urn:x", acq, (Sidecar(ROOT / "x.csv", ROOT),))


def test_annotations_are_optional_in_the_schema_and_hold_only_text() -> None:
    acq = acquisition(member("IM1", "a" * 64))
    body = dict(
        build_package(
            Extraction(acq, "dicom", "1", "DICOM", {}, {}),
            Deidentified({}, {}, None, (), 0),
            instrument={"id": "urn:x", "id_type": "URN"},
            acquisition_fields={},
            previous=None,
            host="h",
        ).body
    )
    jsonschema.validate(body, SCHEMA)  # no sidecar: none of the new fields
    body["acquisition"] = {**body["acquisition"], "annotations": {"passage": 17}}


#: every field schema 1.1 adds to the instrument, the top level and the identity check
FAIR: dict[str, dict[str, Any]] = {
    "instrument": {
        "id": "https://hdl.handle.net/21.11157/example-lsm980",
        "id_type": "Handle",
        "serial_number": "2801000123",
        "owner": "Example Imaging Facility",
        "landing_page": "https://imaging.example.org/instruments/lsm980",
        "description": "Point-scanning confocal",
        "owners": [
            {
                "name": "Example Imaging Facility",
                "identifier": "https://ror.org/05abcde12",
                "identifier_type": "ROR",
                "contact": "imaging@example.org",
            }
        ],
        "manufacturer_identifier": {
            "identifier": "https://ror.org/01xnwqx93",
            "identifier_type": "ROR",
        },
        "model_identifier": {"identifier": "https://example.org/lsm980", "identifier_type": "URL"},
        "type_identifier": {
            "identifier": "http://purl.obolibrary.org/obo/FBbi_00000251",
            "identifier_type": "FBbi",
        },
        "measured_variables": ["fluorescence intensity"],
        "commissioned": "2021-03-01",
        "decommissioned": "2031-03-01",
        "alternate_identifiers": [
            {"identifier": "INV-0042", "identifier_type": "InventoryNumber", "name": "stand"}
        ],
        "related_identifiers": [
            {
                "identifier": "https://example.org/det",
                "identifier_type": "URL",
                "relation_type": "HasComponent",
                "name": "detector",
            }
        ],
    },
    "attribution": {
        "people": [
            {
                "role": "operator",
                "name": "Alice Liddell",
                "orcid": "https://orcid.org/0000-0002-1825-0097",
                "email": "alice@example.org",
                "affiliation": "Neurobiology",
            }
        ],
        "facility": {"name": "Example Imaging Facility", "ror": "https://ror.org/05abcde12"},
        "license": "CC-BY-4.0",
    },
    "identity_check": {
        "result": "mismatch",
        "compared": ["serial_number", "model"],
        "mismatches": [
            {"field": "serial_number", "configured": "2801000123", "reported": "2801000999"}
        ],
    },
}


def _fair_body() -> dict[str, Any]:
    acq = acquisition(member("alice/IM1", "a" * 64))
    extraction = Extraction(acq, "dicom", "1.0.0", "DICOM", {}, {})
    return dict(
        build_package(
            extraction,
            Deidentified({}, {}, None, (), 0),
            instrument=FAIR["instrument"],
            acquisition_fields={"operator": "alice"},
            previous=None,
            identity_check=FAIR["identity_check"],
            attribution=FAIR["attribution"],
        ).body
    )


def test_a_package_with_every_fair_field_matches_the_schema() -> None:
    body = _fair_body()
    jsonschema.validate(body, SCHEMA)
    assert body["instrument"] == FAIR["instrument"]
    assert body["people"] == FAIR["attribution"]["people"]
    assert body["facility"]["ror"] == "https://ror.org/05abcde12"
    assert body["license"] == "CC-BY-4.0"
    assert body["provenance"]["identity_check"] == FAIR["identity_check"]


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("people", 0, "orcid"), "0000-0002-1825-0097"),  # the bare iD: packages carry the URI
        (("people", 0, "role"), "pi"),
        (("facility", "ror"), "05abcde12"),
        (("instrument", "related_identifiers", 0, "relation_type"), "Contains"),
        (("instrument", "alternate_identifiers", 0, "identifier_type"), "Serial"),
        (("provenance", "identity_check", "result"), "maybe"),
    ],
)
def test_the_schema_refuses_fair_fields_outside_their_vocabulary(
    where: tuple[str | int, ...], value: str
) -> None:
    body = json.loads(json.dumps(_fair_body()))
    target: Any = body
    for step in where[:-1]:
        target = target[step]
    target[where[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, SCHEMA)


#: a corpus file or folder -> the media type of each of its packaged files, by name end
#: (the first that matches); every file of every package built from it must carry one
MEDIA_TYPES = {
    "ome-tiff/multifile-companion": {".companion.ome": "application/xml", "": "image/tiff"},
    "ome-tiff/single-file/z-series.ome.tif": {"": "image/tiff"},
    "tiff-vendor/zeiss-lsm/test.lsm": {"": "image/tiff"},
    "dicom/ct/CT_JPEG70.dcm": {"": "application/dicom"},
    "dicom/no-preamble/OT_Implicit_Little_Headless.dcm": {"": "application/dicom"},
    "czi/testCziZStack4.czi": {"": "application/octet-stream"},
    "nd2/cluster.nd2": {"": "application/octet-stream"},
    "lif/xz-example.lif": {"": "application/octet-stream"},
    "nifti/example4d.nii.gz": {"": "application/gzip"},
    "nifti/anatomical.nii": {"": "application/octet-stream"},
    "imzml": {".imzml": "application/xml", ".ibd": "application/octet-stream"},
    "ome-zarr/xyz_8bit__mitotic_plate_calibrated.ome.zarr": {
        ".zattrs": "application/json",
        ".zgroup": "application/json",
        ".zarray": "application/json",
        ".ome.xml": "application/xml",
        "": "application/octet-stream",  # the chunks
    },
}


@pytest.mark.parametrize("rel", sorted(MEDIA_TYPES))
def test_every_file_of_a_corpus_package_has_its_media_type(corpus: Path, rel: str) -> None:
    from acqharvest.commands import preview
    from acqharvest.config import embedded_settings
    from acqharvest.deidentify import Deidentifier
    from acqharvest.model import DeidentifySettings

    policy = Deidentifier(DeidentifySettings(), b"s" * 32)
    packages, errors = preview([corpus / rel], embedded_settings(), policy)
    assert errors == []
    assert packages
    for body in packages:
        jsonschema.validate(body, SCHEMA)
        for entry in body["files"]:
            name = entry["path"].lower()
            expected = next(kind for end, kind in MEDIA_TYPES[rel].items() if name.endswith(end))
            assert entry["media_type"] == expected, entry["path"]


def test_a_file_without_an_adapter_word_is_octet_stream() -> None:
    acq = acquisition(member("s/IM1", "a" * 64))
    extraction = Extraction(acq, "none", "", "unknown", {}, {})
    clean = Deidentified({}, {}, None, (), 0)
    body = build_package(
        extraction,
        clean,
        instrument={"id": "urn:x", "id_type": "URN"},
        acquisition_fields={},
        previous=None,
        host="h",
    ).body
    assert body["files"][0]["media_type"] == "application/octet-stream"
    jsonschema.validate(dict(body), SCHEMA)


def test_packages_of_schema_1_0_stay_valid() -> None:
    """Packages a 1.0 harvester printed (``acqharvest extract --json`` at the commit before
    schema 1.1, on a corpus DICOM and an LSM): 1.1 added optional fields only."""
    lines = (Path(__file__).with_name("data") / "packages-1.0.jsonl").read_text().splitlines()
    packages = [json.loads(line) for line in lines]
    assert [p["schema_version"] for p in packages] == ["1.0", "1.0"]
    for package in packages:
        jsonschema.validate(package, SCHEMA)
