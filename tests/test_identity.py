"""Instrument identity and folder-template fields."""

from __future__ import annotations

import pytest

from acqharvest.identity import (
    identifier_type,
    instrument_block,
    path_fields,
    template_names,
    template_problem,
)
from acqharvest.model import InstrumentSettings


@pytest.mark.parametrize(
    ("identifier", "kind"),
    [
        ("https://doi.org/10.5880/GFZ.1.2.2020.001", "DOI"),
        ("10.5880/GFZ.1.2.2020.001", "DOI"),
        ("https://hdl.handle.net/21.T11998/0000-001A-3905-F", "Handle"),
        ("https://facility.example.org/instruments/7", "URL"),
        ("urn:acqharvest:demo-instrument", "URN"),
        ("CONFOCAL-2", "local"),
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
