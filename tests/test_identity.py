"""Instrument identity (the PIDINST block and the identity check) and folder-template fields."""

from __future__ import annotations

import json
from datetime import date

import pytest

from acqharvest.identity import (
    identifier_type,
    identity_check,
    instrument_block,
    is_persistent,
    path_fields,
    template_names,
    template_problem,
)
from acqharvest.model import InstrumentSettings
from acqharvest.settings import (
    AlternateIdentifier,
    OwnerSettings,
    RelatedIdentifier,
    TypedIdentifier,
)


@pytest.mark.parametrize(
    ("identifier", "kind"),
    [
        ("https://doi.org/10.5880/GFZ.1.2.2020.001", "DOI"),
        ("10.5880/GFZ.1.2.2020.001", "DOI"),
        ("https://hdl.handle.net/21.T11998/0000-001A-3905-F", "Handle"),
        ("https://facility.example.org/instruments/7", "URL"),
        ("urn:acqharvest:demo-instrument", "URN"),
        ("CONFOCAL-2", "local"),
        ("21.T11998/0000-001A-3905-F", "Handle"),  # bare, as ePIC hands them out
        ("hdl:21.T11998/0000-001A-3905-F", "Handle"),
        ("doi:10.5880/GFZ.1.2.2020.001", "DOI"),
        ("ark:/12345/x7b9", "ARK"),
        ("2024/run-3", "local"),  # digits and a slash alone are no Handle prefix
    ],
)
def test_identifier_type(identifier: str, kind: str) -> None:
    assert identifier_type(identifier) == kind


def test_instrument_block_leaves_out_empty_fields() -> None:
    block = instrument_block(InstrumentSettings(id="CONF-2", name="Confocal 2", model=""))
    assert block == {"id": "CONF-2", "id_type": "local", "name": "Confocal 2"}


@pytest.mark.parametrize(
    ("template", "path", "fields"),
    [
        (
            "{operator}/{project}/**",
            "alice/p1/run3/img.tif",
            {"operator": "alice", "project": "p1"},
        ),
        ("{operator}/{project}/**", "alice/p1/img.tif", {"operator": "alice", "project": "p1"}),
        ("{operator}/{project}/**", "alice/img.tif", {}),
        (
            "{date}_{sample}",
            "2024-01-02_mouse3/img.tif",
            {"date": "2024-01-02", "sample": "mouse3"},
        ),
        ("data/{operator}/**", "data/bob/a/b/c.dcm", {"operator": "bob"}),
        ("data/{operator}/**", "other/bob/c.dcm", {}),
        ("*/{project}", "scope1/neuro/x.ome.tif", {"project": "neuro"}),
        ("**/{operator}", "alice/f.tif", {"operator": "alice"}),
        ("**/{operator}", "a/b/alice/f.tif", {"operator": "alice"}),
        (None, "alice/p1/img.tif", {}),
    ],
)
def test_path_fields_come_from_folders_never_the_file_name(
    template: str | None, path: str, fields: dict[str, str]
) -> None:
    assert path_fields(template, path) == fields


def test_template_names_in_order() -> None:
    assert template_names("{operator}/{date}_{sample}/**") == ("operator", "date", "sample")


def test_template_problems_are_named() -> None:
    assert template_problem("{operator}/{project}/**") is None
    assert "repeated: operator" in str(template_problem("{operator}/{operator}/**"))
    assert "names no field" in str(template_problem("data/**"))
    # keys the harvester fills in the acquisition block (sidecars fill annotations)
    assert "annotations, complete: the package's acquisition block" in str(
        template_problem("{annotations}/{complete}/**")
    )


FULL_PIDINST = InstrumentSettings(
    id="https://hdl.handle.net/21.11157/example-lsm980",
    name="LSM 980, room B.104",
    manufacturer="Carl Zeiss Microscopy",
    model="LSM 980",
    serial_number="2801000123",
    type="confocal microscope",
    landing_page="https://imaging.example.org/instruments/lsm980",
    description="Point-scanning confocal with Airyscan 2",
    owners=(
        OwnerSettings(
            name="Example Imaging Facility",
            identifier="https://ror.org/05abcde12",
            identifier_type="ROR",
        ),
    ),
    manufacturer_identifier=TypedIdentifier("https://ror.org/01xnwqx93", "ROR"),
    type_identifier=TypedIdentifier("http://purl.obolibrary.org/obo/FBbi_00000251", "FBbi"),
    measured_variables=("fluorescence intensity",),
    commissioned=date(2021, 3, 1),
    alternate_identifiers=(
        AlternateIdentifier("INV-0042", "InventoryNumber"),
        AlternateIdentifier("3302000777", "SerialNumber", name="Airyscan detector"),
    ),
    related_identifiers=(
        RelatedIdentifier(
            "https://imaging.example.org/lsm980/manual.pdf", "URL", "IsDescribedBy", "manual"
        ),
    ),
)


def test_instrument_block_carries_every_configured_pidinst_property_as_json() -> None:
    block = instrument_block(FULL_PIDINST)

    assert block["id_type"] == "Handle"
    assert block["landing_page"] == "https://imaging.example.org/instruments/lsm980"
    assert block["commissioned"] == "2021-03-01"
    assert "decommissioned" not in block
    # a sub-section loses its empty keys, and tuples become lists
    assert block["owners"] == [
        {
            "name": "Example Imaging Facility",
            "identifier": "https://ror.org/05abcde12",
            "identifier_type": "ROR",
        }
    ]
    assert block["alternate_identifiers"][0] == {
        "identifier": "INV-0042",
        "identifier_type": "InventoryNumber",
    }
    assert block["related_identifiers"] == [
        {
            "identifier": "https://imaging.example.org/lsm980/manual.pdf",
            "identifier_type": "URL",
            "relation_type": "IsDescribedBy",
            "name": "manual",
        }
    ]
    assert block["type_identifier"]["identifier_type"] == "FBbi"
    assert block["measured_variables"] == ["fluorescence intensity"]
    assert "model_identifier" not in block
    json.dumps(block)  # plain JSON: no dates or tuples left


@pytest.mark.parametrize(
    ("identifier", "persistent"),
    [
        ("https://doi.org/10.5880/GFZ.1.2.2020.001", True),
        ("https://hdl.handle.net/21.T11998/0000-001A-3905-F", True),
        ("urn:acqharvest:demo-instrument", True),
        ("https://facility.example.org/instruments/7", False),
        ("CONFOCAL-2", False),
    ],
)
def test_only_dois_handles_and_urns_count_as_persistent(identifier: str, persistent: bool) -> None:
    assert is_persistent(identifier) is persistent


def _reported(**fields: str) -> dict[str, object]:
    return {"modality": "SEM", "instrument_reported": fields}


def test_a_file_naming_the_configured_serial_and_model_matches() -> None:
    block = instrument_block(FULL_PIDINST)
    check = identity_check(block, _reported(serial_number="2801000123", model="LSM 980"))
    assert check == {"result": "match", "compared": ["serial_number", "model"]}


def test_a_file_naming_another_serial_is_a_mismatch_with_both_values() -> None:
    block = instrument_block(FULL_PIDINST)
    check = identity_check(block, _reported(serial_number="2801000999", model="LSM 980"))
    assert check == {
        "result": "mismatch",
        "compared": ["serial_number", "model"],
        "mismatches": [
            {
                "field": "serial_number",
                # both configured serial numbers, since the file may name either
                "configured": "2801000123, 3302000777",
                "reported": "2801000999",
            }
        ],
    }


def test_a_serial_number_given_only_as_an_alternate_identifier_is_compared() -> None:
    block = instrument_block(FULL_PIDINST)
    assert identity_check(block, _reported(serial_number="3302000777"))["result"] == "match"
    only_alternate = instrument_block(
        InstrumentSettings(
            id="urn:x", alternate_identifiers=(AlternateIdentifier("77", "SerialNumber"),)
        )
    )
    assert identity_check(only_alternate, _reported(serial_number="78")) == {
        "result": "mismatch",
        "compared": ["serial_number"],
        "mismatches": [{"field": "serial_number", "configured": "77", "reported": "78"}],
    }
    # an inventory number is not a serial number: nothing to compare
    inventory = instrument_block(
        InstrumentSettings(
            id="urn:x", alternate_identifiers=(AlternateIdentifier("77", "InventoryNumber"),)
        )
    )
    assert identity_check(inventory, _reported(serial_number="78")) == {"result": "unknown"}


@pytest.mark.parametrize(
    ("field", "configured", "reported"),
    [
        ("serial_number", "9920003", " 9920003\t"),
        ("serial_number", "287", "0000287"),  # stored as a number
        ("serial_number", "0", "000"),
        ("serial_number", "55-36-06", "55 36 06"),
        ("serial_number", "ab12c", "AB12C"),
        ("model", "LSM 980", "lsm-980"),
        ("model", "Helios NanoLab 660", 'Helios NanoLab" 660'),
        # full-width forms, as East Asian input methods type them
        ("model", "\uff2c\uff33\uff2d\uff19\uff18\uff10", "LSM980"),
    ],
)
def test_spelling_is_no_mismatch(field: str, configured: str, reported: str) -> None:
    block = {"id": "urn:x", "id_type": "URN", field: configured}
    assert identity_check(block, _reported(**{field: reported}))["result"] == "match"


@pytest.mark.parametrize(
    ("field", "configured", "reported"),
    [
        # leading zeros only vanish from all-digit serials: "0A1" and "A1" differ
        ("serial_number", "0A1", "A1"),
        ("serial_number", "2870", "287"),
        ("model", "LSM 980", "LSM 900"),
    ],
)
def test_a_different_value_is_a_mismatch(field: str, configured: str, reported: str) -> None:
    block = {"id": "urn:x", "id_type": "URN", field: configured}
    assert identity_check(block, _reported(**{field: reported}))["result"] == "mismatch"


@pytest.mark.parametrize(
    "metadata",
    [
        {},  # the adapter read nothing (no adapter, or a format without the field)
        {"instrument_reported": {"software": "ZEN"}},
        {"instrument_reported": {"serial_number": "  "}},  # blank: nothing reported
        {"instrument_reported": {"serial_number": 12}},  # not the normalized string
        {"instrument_reported": "garbled"},
    ],
)
def test_nothing_to_compare_is_unknown(metadata: dict[str, object]) -> None:
    block = instrument_block(InstrumentSettings(id="urn:x", serial_number="12", model="M"))
    assert identity_check(block, metadata) == {"result": "unknown"}


def test_an_instrument_configured_without_serial_or_model_is_unknown() -> None:
    block = instrument_block(InstrumentSettings(id="urn:x"))
    assert identity_check(block, _reported(serial_number="1", model="M")) == {"result": "unknown"}
