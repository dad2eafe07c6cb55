"""The RO-Crate rendering of packages built from real corpus files by the chain ``extract``
uses, entity by entity; and rocrate-validator's ``ro-crate-1.1`` profile over the crate of
every corpus acquisition, with zero REQUIRED failures."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from acqharvest.commands import preview
from acqharvest.config import embedded_settings
from acqharvest.deidentify import Deidentifier
from acqharvest.model import DeidentifySettings
from acqharvest.rocrate import (
    CONTEXT,
    METADATA_FILE,
    SPEC,
    crate_bytes,
    file_id,
    render_body,
    render_crate,
)
from tests.conftest import CORPUS, REPO
from tests.crate_validation import validate_crates

OME_TIFF = "ome-tiff/acquisition/170918_tn_neutrophil_migration_wave.ome.tif"
CZI = "czi/testCziBSCZY0Tiny.czi"
ORCID = "https://orcid.org/0000-0002-1825-0097"
ROR = "https://ror.org/05abcde12"
HANDLE = "https://hdl.handle.net/21.11157/example-lsm980"


def built(*paths: Path) -> list[dict[str, Any]]:
    packages, _ = preview(
        list(paths), embedded_settings(), Deidentifier(DeidentifySettings(), b"k" * 32)
    )
    return packages


@pytest.fixture(scope="module")
def corpus_packages() -> list[dict[str, Any]]:
    """The package of every acquisition in the corpus, as ``extract`` groups and builds them."""
    packages = built(CORPUS)
    assert len(packages) > 60
    return packages


#: one acquisition of each adapter's formats, a multi-file store and a file no adapter reads:
#: what the fast tier renders and validates (the long tier takes the whole corpus)
SAMPLES = (
    "dicom/dx/dx_image.dcm",
    "ome-tiff/multifile-companion",
    "tiff-vendor/zeiss-lsm/test.lsm",
    "czi/testCziZStack4.czi",
    "nd2/cluster.nd2",
    "lif/xz-example.lif",
    "nifti/example4d.nii.gz",
    "imzml",
    "ome-zarr",
    "mrc",
)


@pytest.fixture(scope="module")
def sample_packages() -> list[dict[str, Any]]:
    packages = built(*(CORPUS / relative for relative in SAMPLES))
    adapters = {package["harvester"]["adapter"] for package in packages}
    assert len(adapters) >= 9, sorted(adapters)  # the eight adapters and "none"
    return packages


def one(relative: str) -> dict[str, Any]:
    [package] = built(CORPUS / relative)
    return package


def fair(package: dict[str, Any]) -> dict[str, Any]:
    """The package with the schema 1.1 fields other parts of acqharvest fill (people file,
    facility, license, PIDINST instrument, media types, a sidecar), named as they name them."""
    rich = copy.deepcopy(package)
    rich["instrument"].update(
        {
            "id": HANDLE,
            "id_type": "Handle",
            "name": "LSM 980, room B.104",
            "landing_page": "https://imaging.example.org/instruments/lsm980",
            "description": "Confocal laser scanning microscope",
            "manufacturer": "Carl Zeiss Microscopy",
            "manufacturer_identifier": {
                "identifier": "https://ror.org/0abcdef12",
                "identifier_type": "ROR",
            },
            "model": "LSM 980",
            "model_identifier": {"identifier": "LSM980", "identifier_type": "Other"},
            "serial_number": "2801000123",
            "type": "confocal microscope",
            "type_identifier": {
                "identifier": "http://purl.obolibrary.org/obo/FBbi_00000251",
                "identifier_type": "FBbi",
            },
            "owners": [
                {
                    "name": "Example Imaging Facility",
                    "identifier": ROR,
                    "identifier_type": "ROR",
                    "contact": "imaging@example.org",
                }
            ],
            "measured_variables": ["fluorescence intensity"],
            "commissioned": "2021-03-01",
            "alternate_identifiers": [
                {"identifier": "INV-4711", "identifier_type": "InventoryNumber"}
            ],
            "related_identifiers": [
                {
                    "identifier": "https://hdl.handle.net/21.11157/example-airyscan",
                    "identifier_type": "Handle",
                    "relation_type": "HasComponent",
                    "name": "Airyscan 2 detector",
                }
            ],
        }
    )
    rich["people"] = [
        {
            "role": "operator",
            "name": "Alice Example",
            "orcid": ORCID,
            "email": "alice@example.org",
            "affiliation": "Cell Biology Group",
        }
    ]
    rich["facility"] = {"name": "Example Imaging Facility", "ror": ROR}
    rich["license"] = "CC-BY-4.0"
    for entry in rich["files"]:
        entry["media_type"] = "image/tiff"
    rich["files"].append(
        {
            "path": "acquisition.yaml",
            "size": 42,
            "sha256": "a" * 64,
            "modified": rich["created"],
            "role": "sidecar",
            "media_type": "application/yaml",
        }
    )
    rich["acquisition"]["annotations"] = {"sample": "HeLa, fixed", "study": "migration"}
    return rich


def graph(crate: dict[str, Any]) -> dict[str, dict[str, Any]]:
    entities = {entity["@id"]: entity for entity in crate["@graph"]}
    assert len(entities) == len(crate["@graph"]), "an @id appears twice"
    return entities


def ids(references: Any) -> list[str]:
    listed = references if isinstance(references, list) else [references]
    return [reference["@id"] for reference in listed]


def references(node: Any) -> Iterator[str]:
    """Every ``{"@id": ...}`` reference inside an entity's values."""
    if isinstance(node, dict):
        if set(node) == {"@id"}:
            yield node["@id"]
        for key, value in node.items():
            if key != "@id":
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


# --------------------------------------------------------------------------- the mapping


def test_descriptor_declares_ro_crate_1_1_and_adds_sha256_to_its_context() -> None:
    crate = render_crate(one(OME_TIFF))
    assert crate["@context"] == list(CONTEXT)
    assert crate["@context"][0] == "https://w3id.org/ro/crate/1.1/context"
    assert set(crate["@context"][1]) == {"sha256", "localPath"}
    descriptor = graph(crate)[METADATA_FILE]
    assert descriptor["@type"] == "CreativeWork"
    assert descriptor["conformsTo"] == {"@id": SPEC}
    assert descriptor["about"] == {"@id": "./"}


def test_root_dataset_from_the_package() -> None:
    package = one(CZI)
    root = graph(render_crate(package))["./"]
    assert root["@type"] == "Dataset"
    assert root["identifier"] == f"urn:acqharvest:package:{package['package_id']}"
    assert root["name"].startswith("testCziBSCZY0Tiny.czi")
    assert "Zeiss CZI" in root["description"]
    assert root["datePublished"] == package["created"]
    assert root["dateCreated"] == package["acquisition"]["started"] == "2019-03-06T17:01:13.837817Z"
    assert root["measurementTechnique"] == package["metadata"]["modality"]
    assert ids(root["hasPart"]) == [file_id(entry) for entry in package["files"]]
    assert ids(root["mentions"]) == ["#acquisition", "#harvest"]
    assert "isBasedOn" not in root
    assert "publisher" not in root


def test_without_a_license_the_crate_says_none_was_stated() -> None:
    entities = graph(render_crate(one(CZI)))
    licence = entities[entities["./"]["license"]["@id"]]
    assert licence["@type"] == "CreativeWork"
    assert "no licence" in licence["name"].lower()


@pytest.mark.parametrize(
    ("licence", "expected"),
    [
        ("CC-BY-4.0", "https://spdx.org/licenses/CC-BY-4.0"),
        ("https://example.org/terms", "https://example.org/terms"),
    ],
)
def test_license_spdx_id_or_url(licence: str, expected: str) -> None:
    package = one(CZI)
    package["license"] = licence
    entities = graph(render_crate(package))
    assert entities["./"]["license"] == {"@id": expected}
    assert entities[expected]["@type"] == "CreativeWork"


def test_replaces_becomes_is_based_on() -> None:
    package = one(CZI)
    package["replaces"] = "f" * 64
    root = graph(render_crate(package))["./"]
    assert root["isBasedOn"] == {"@id": "urn:acqharvest:package:" + "f" * 64}


def test_one_file_entity_per_file() -> None:
    package = one(OME_TIFF)
    entities = graph(render_crate(package))
    [entry] = package["files"]
    # a file given alone is named below its own folder, as the daemon names it below the
    # watch folder
    assert entry["path"] == "170918_tn_neutrophil_migration_wave.ome.tif"
    entity = entities[entry["path"]]
    assert entity == {
        "@id": entry["path"],
        "@type": "File",
        "name": "170918_tn_neutrophil_migration_wave.ome.tif",
        "localPath": entry["path"],
        "contentSize": "2122029",
        "sha256": "021fc11dcd1b0e1498dc4fdb10778c864e73c25684949a9f2a04f15d57e486c2",
        "dateModified": entry["modified"],
        "encodingFormat": "image/tiff",
    }


def test_file_ids_are_relative_uris_that_keep_the_percent_form() -> None:
    plain = {"path": "a b/caf%E9.tif", "size": 1, "sha256": "0" * 64, "modified": "x"}
    assert file_id(plain) == "a%20b/caf%25E9.tif"
    latin1 = {**plain, "path_encoding": "percent"}
    # percent-decoding the id gives the name's exact bytes, as the package's path does
    assert file_id(latin1) == "a%20b/caf%E9.tif"
    assert file_id({**plain, "path": "données/x.tif"}) == "donn%C3%A9es/x.tif"


def test_multi_file_acquisition_lists_every_file(sample_packages: list[dict[str, Any]]) -> None:
    package = max(sample_packages, key=lambda p: len(p["files"]))
    assert len(package["files"]) > 10
    entities = graph(render_crate(package))
    files = [e for e in entities.values() if e["@type"] == "File"]
    assert len(files) == len(package["files"])
    assert sorted(int(f["contentSize"]) for f in files) == sorted(
        entry["size"] for entry in package["files"]
    )
    assert "more files" in entities["./"]["name"]


def test_instrument_with_its_pidinst_identity() -> None:
    package = fair(one(CZI))
    entities = graph(render_crate(package))
    instrument = entities[HANDLE]
    assert instrument["@type"] == "IndividualProduct"
    assert instrument["name"] == "LSM 980, room B.104"
    [pid, inventory] = [entities[i] for i in ids(instrument["identifier"])]
    assert pid == {
        "@id": "#instrument-id",
        "@type": "PropertyValue",
        "name": "identifier",
        "value": HANDLE,
        "propertyID": "Handle",
    }
    assert (inventory["propertyID"], inventory["value"]) == ("InventoryNumber", "INV-4711")
    assert instrument["serialNumber"] == "2801000123"
    assert instrument["model"] == "LSM 980"
    assert instrument["url"] == "https://imaging.example.org/instruments/lsm980"
    assert instrument["category"] == "confocal microscope"
    assert instrument["additionalType"] == {"@id": "http://purl.obolibrary.org/obo/FBbi_00000251"}
    manufacturer = entities[instrument["manufacturer"]["@id"]]
    assert manufacturer["@id"] == "https://ror.org/0abcdef12"
    assert (manufacturer["@type"], manufacturer["name"]) == (
        "Organization",
        "Carl Zeiss Microscopy",
    )
    owner = entities[ROR]
    assert owner["owns"] == {"@id": HANDLE}
    assert owner["email"] == "imaging@example.org"
    extra = {entities[i]["name"]: entities[i] for i in ids(instrument["additionalProperty"])}
    assert extra["Airyscan 2 detector"]["propertyID"] == "HasComponent (Handle)"
    # a one-item list is one value, as RO-Crate 1.1 recommends
    assert extra["measured_variables"]["value"] == "fluorescence intensity"
    assert extra["commissioned"]["value"] == "2021-03-01"
    assert extra["model identifier"]["value"] == "LSM980"


def test_a_local_instrument_id_is_not_taken_for_a_uri() -> None:
    package = one(CZI)
    package["instrument"] = {"id": "scope-2", "id_type": "local", "owner": "Imaging core"}
    entities = graph(render_crate(package))
    instrument = entities["#instrument"]
    assert entities["#instrument-id"]["value"] == "scope-2"
    assert entities["#instrument-id"]["propertyID"] == "local"
    assert entities["#org-Imaging-core"]["owns"] == {"@id": "#instrument"}
    assert instrument["name"] == "scope-2"


@pytest.mark.parametrize(
    ("pid", "id_type", "expected"),
    [
        ("10.5281/zenodo.123", "DOI", "https://doi.org/10.5281/zenodo.123"),
        (
            "21.T11998/0000-001A-3905-F",
            "Handle",
            "https://hdl.handle.net/21.T11998/0000-001A-3905-F",
        ),
        ("doi:10.5281/zenodo.123", "DOI", "https://doi.org/10.5281/zenodo.123"),
        ("hdl:21.T11998/abc", "Handle", "https://hdl.handle.net/21.T11998/abc"),
        ("ark:/12345/x7b9", "ARK", "https://n2t.net/ark:/12345/x7b9"),
        ("urn:uuid:0c5b2444-62b9-4e5c-9c2b-0e6f3a2b7d11", "URN", None),
        ("https://example.org/scope", "URL", None),
        ("confocal-2", "local", "#instrument"),
    ],
)
def test_instrument_id_is_a_resolvable_uri(pid: str, id_type: str, expected: str | None) -> None:
    package = one(CZI)
    package["instrument"] = {"id": pid, "id_type": id_type}
    entities = graph(render_crate(package))
    assert entities[expected or pid]["@type"] == "IndividualProduct"
    assert entities["#instrument-id"]["value"] == pid


def test_structured_values_stay_literals() -> None:
    package = one(CZI)
    package["instrument"]["calibration"] = {"date": "2026-01-05", "by": "service"}
    package["metadata"]["stage"] = {"positions": [[1, 2], [3, 4]]}
    entities = graph(render_crate(package))
    assert json.loads(entities["#instrument-calibration"]["value"]) == {
        "date": "2026-01-05",
        "by": "service",
    }
    assert json.loads(entities["#metadata-stage.positions"]["value"]) == [[1, 2], [3, 4]]


def test_acquisition_is_a_create_action() -> None:
    package = fair(one(CZI))
    entities = graph(render_crate(package))
    action = entities["#acquisition"]
    assert action["@type"] == "CreateAction"
    assert ids(action["instrument"]) == [HANDLE, "#acquisition-software"]
    assert entities["#acquisition-software"] == {
        "@id": "#acquisition-software",
        "@type": "SoftwareApplication",
        "name": "ZEN 2.3 (blue edition)",
        "version": "2.3.64.0",
    }
    assert ids(action["agent"]) == [ORCID]
    assert action["startTime"] == package["acquisition"]["started"]
    assert action["endTime"] == package["created"]
    # the files the acquisition made; the sidecar a person wrote is not one of them
    assert ids(action["result"]) == ["testCziBSCZY0Tiny.czi"]
    assert entities[action["object"]["@id"]]["name"] == "HeLa, fixed"
    assert action["actionStatus"] == {"@id": "http://schema.org/CompletedActionStatus"}
    properties = {entities[i]["name"]: entities[i] for i in ids(action["additionalProperty"])}
    assert properties["study"]["value"] == "migration"
    assert properties["study"]["propertyID"] == "annotation"


def test_normalized_metadata_as_property_values_with_units() -> None:
    package = one(CZI)
    entities = graph(render_crate(package))
    properties = {
        entities[i]["name"]: entities[i]
        for i in ids(entities["#acquisition"]["additionalProperty"])
    }
    pixel = properties["pixel_size_um.x"]
    assert pixel["value"] == package["metadata"]["pixel_size_um"]["x"] == 0.227
    assert pixel["unitText"] == "um"
    assert pixel["unitCode"] == {"@id": "http://purl.obolibrary.org/obo/UO_0000017"}
    excitation = properties["channels.1.excitation_nm"]
    assert (excitation["value"], excitation["unitText"]) == (488.0, "nm")
    assert properties["channels.1.exposure_s"]["unitCode"] == {
        "@id": "http://purl.obolibrary.org/obo/UO_0000010"
    }
    assert properties["image.size_x"]["unitText"] == "px"
    assert "unitCode" not in properties["image.size_x"]
    assert "unitText" not in properties["objective.model"]
    assert properties["objective.na"]["value"] == 0.4


def test_people_by_orcid_are_authors_and_agents() -> None:
    entities = graph(render_crate(fair(one(CZI))))
    person = entities[ORCID]
    assert person["@type"] == "Person"
    assert person["name"] == "Alice Example"
    assert person["email"] == "alice@example.org"
    assert entities[person["affiliation"]["@id"]]["name"] == "Cell Biology Group"
    assert ids(entities["./"]["author"]) == [ORCID]
    publisher = entities[entities["./"]["publisher"]["@id"]]
    assert (publisher["@id"], publisher["@type"]) == (ROR, "Organization")
    assert "#operator" not in entities  # the people file's operator, not the folder name


def test_without_people_the_operator_the_file_names_is_the_agent() -> None:
    entities = graph(render_crate(one(CZI)))
    assert entities["#operator"] == {"@id": "#operator", "@type": "Person", "name": "goubi"}
    assert ids(entities["#acquisition"]["agent"]) == ["#operator"]


def test_harvest_action_names_acqharvest_and_the_adapter() -> None:
    package = one(OME_TIFF)
    entities = graph(render_crate(package))
    harvest = entities["#harvest"]
    assert harvest["@type"] == "CreateAction"
    assert ids(harvest["instrument"]) == ["#acqharvest", "#adapter-tiff"]
    assert entities["#acqharvest"]["version"] == package["harvester"]["version"]
    assert entities["#adapter-tiff"]["version"] == package["harvester"]["adapter_version"]
    assert ids(harvest["object"]) == [package["files"][0]["path"]]
    assert harvest["result"] == {"@id": METADATA_FILE}
    assert "Basic Application Level Confidentiality Profile" in harvest["description"]


def assert_references_resolve(packages: list[dict[str, Any]]) -> None:
    outside = {SPEC, "http://schema.org/CompletedActionStatus"}
    for package in packages:
        entities = graph(render_crate(package))
        assert all("@type" in entity for entity in entities.values())
        dangling = {
            ref
            for entity in entities.values()
            for ref in references(entity)
            if ref not in entities and ref not in outside
        }
        # only vocabulary terms (type IRIs) may point outside the crate
        assert {ref for ref in dangling if "purl.obolibrary.org" not in ref} == set(), package[
            "files"
        ][0]["path"]


def test_every_reference_resolves_and_every_entity_is_typed(
    sample_packages: list[dict[str, Any]],
) -> None:
    assert_references_resolve([*sample_packages, fair(sample_packages[0])])


@pytest.mark.long
def test_every_reference_of_every_corpus_crate_resolves(
    corpus_packages: list[dict[str, Any]],
) -> None:
    assert_references_resolve([*corpus_packages, fair(corpus_packages[0])])


def test_rendering_is_deterministic_and_render_body_checks_its_input() -> None:
    package = one(OME_TIFF)
    assert crate_bytes(package) == crate_bytes(copy.deepcopy(package))
    assert render_body(json.dumps(package).encode()) == crate_bytes(package)
    with pytest.raises(ValueError, match="not a package"):
        render_body(b'{"a": 1}')
    with pytest.raises(ValueError, match="Expecting value"):
        render_body(b"not json")
    with pytest.raises(ValueError, match="does not fit the schema"):
        render_body(json.dumps({**package, "instrument": {}}).encode())
    with pytest.raises(ValueError, match="does not fit the schema: IndexError"):
        render_body(json.dumps({**package, "files": []}).encode())


# --------------------------------------------------------------------------- validation


def assert_crates_pass_the_validator(packages: list[dict[str, Any]], tmp_path: Path) -> None:
    """Every package's crate has no REQUIRED issue under rocrate-validator's ``ro-crate-1.1``
    profile, and a crate broken on purpose, validated beside them, fails."""
    crates = []
    for index, package in enumerate(packages):
        folder = tmp_path / f"crate-{index:03}"
        folder.mkdir()
        (folder / METADATA_FILE).write_bytes(crate_bytes(package))
        crates.append(folder)
    # a crate the validator must fail, run beside the others: proves its checks ran
    broken = render_crate(packages[0])
    root = next(entity for entity in broken["@graph"] if entity["@id"] == "./")
    del root["name"], root["license"]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / METADATA_FILE).write_text(json.dumps(broken))

    results = validate_crates([*crates, tmp_path / "broken"], tmp_path / "http-cache")

    assert len(results) == len(packages) + 1
    *good, bad = results
    failures = {
        result["crate"]: [i for i in result["issues"] if i["severity"] == "REQUIRED"]
        for result in good
    }
    assert {crate: issues for crate, issues in failures.items() if issues} == {}
    # the context was served: an offline cache miss runs no check and still "passes"
    assert min(result["executed"] for result in good) >= 20
    assert all(result["passed"] for result in good)
    assert not bad["passed"]
    assert {i["message"] for i in bad["issues"]} >= {
        "The Root Data Entity MUST have a `name` property (as specified by schema.org)"
    }


# about a second of validation per crate, plus building the validator's environment on the
# first run
@pytest.mark.timeout(1800)
def test_a_crate_of_each_adapter_passes_rocrate_validator_ro_crate_1_1(
    sample_packages: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The fast tier's share: an acquisition of each adapter (and of none), a multi-file
    store, and three with every FAIR field; the long tier validates the whole corpus."""
    packages = [*sample_packages, *(fair(p) for p in sample_packages[:3])]
    assert_crates_pass_the_validator(packages, tmp_path)


@pytest.mark.long
@pytest.mark.timeout(3600)
def test_every_corpus_crate_passes_rocrate_validator_ro_crate_1_1(
    corpus_packages: list[dict[str, Any]], tmp_path: Path
) -> None:
    packages = [*corpus_packages, *(fair(p) for p in corpus_packages[:3])]
    assert_crates_pass_the_validator(packages, tmp_path)


# --------------------------------------------------------------------------- the docs' example

EXAMPLE = REPO / "docs" / "admin" / "fair-example.ro-crate.json"
EXAMPLE_SOURCE = "tiff-vendor/zeiss-lsm/test.lsm"


def example_crate() -> bytes:
    """The docs' filled example: a real corpus file's crate with a full config's fields.
    What depends on the checkout (the file's mtime, the folder it sits in, so the
    package_id) is pinned to the values the page shows."""
    package = fair(one(EXAMPLE_SOURCE))
    package["package_id"] = "5f0c3d0e2a9b41c7d86e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e"
    package["created"] = "2026-11-25T14:01:58.120Z"
    for entry in package["files"]:
        entry["modified"] = package["created"]
    package["files"][0]["path"] = "alice/neuro/test.lsm"
    package["files"][1]["path"] = "alice/neuro/acquisition.yaml"
    package["acquisition"].update(operator="alice", project="neuro")
    return crate_bytes(package)


def test_the_docs_example_crate_is_what_acqharvest_renders() -> None:
    assert EXAMPLE.read_bytes() == example_crate(), (
        f"{EXAMPLE.relative_to(REPO)} is stale; write it again with\n"
        "  .venv/bin/python -c 'from tests.test_rocrate import EXAMPLE, example_crate; "
        "EXAMPLE.write_bytes(example_crate())'"
    )
