"""The settings are declared once: the frozen dataclasses the stages use are the config schema."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

import acqharvest
from acqharvest import settings
from acqharvest.config import json_schema, parse_settings

SECTIONS = [
    settings.Settings,
    settings.InstrumentSettings,
    settings.TypedIdentifier,
    settings.OwnerSettings,
    settings.AlternateIdentifier,
    settings.RelatedIdentifier,
    settings.FacilitySettings,
    settings.WatchSettings,
    settings.EndpointSettings,
    settings.DeidentifySettings,
    settings.LogSettings,
]


def _classes_with_fields() -> list[tuple[type, frozenset[str]]]:
    """Every dataclass and pydantic model defined anywhere in acqharvest, with its fields."""
    found = []
    for module_info in pkgutil.walk_packages(acqharvest.__path__, "acqharvest."):
        name = module_info.name
        if name.endswith("__main__") or name.startswith(
            ("acqharvest.adapters", "acqharvest.testing", "acqharvest.winservice")
        ):
            # __main__ runs the CLI; adapter and kit classes hold no settings; the Windows
            # service host imports pywin32, which only Windows has
            continue
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue
            if dataclasses.is_dataclass(cls):
                found.append((cls, frozenset(f.name for f in dataclasses.fields(cls))))
            elif issubclass(cls, BaseModel):
                found.append((cls, frozenset(cls.model_fields)))
    return found


@pytest.mark.parametrize("section", SECTIONS, ids=lambda cls: cls.__name__)
def test_each_settings_section_is_declared_by_one_class(section: type) -> None:
    keys = {f.name for f in dataclasses.fields(section)} - {"source"}
    twins = [
        cls
        for cls, names in _classes_with_fields()
        if keys <= names
        and cls is not section
        # another section may build on a section's keys (an owner is a typed identifier
        # with a name): declared with more keys, it is a section of its own
        and not (cls.__module__ == settings.__name__ and keys < names)
    ]
    assert twins == [], f"{section.__name__}'s keys are declared again by {twins}"


def test_the_config_loader_declares_no_settings_of_its_own() -> None:
    assert [cls for cls, _ in _classes_with_fields() if cls.__module__ == "acqharvest.config"] == []


def _schema_of(section: type) -> dict[str, Any]:
    schema = json_schema()
    return schema if section is settings.Settings else schema["$defs"][section.__name__]


@pytest.mark.parametrize("section", SECTIONS, ids=lambda cls: cls.__name__)
def test_every_key_has_its_description_and_default_from_the_declaration(section: type) -> None:
    properties = _schema_of(section)["properties"]
    declared = [f for f in dataclasses.fields(section) if f.name != "source"]
    assert sorted(properties) == sorted(f.name for f in declared)
    for field in declared:
        prop = properties[field.name]
        assert prop.get("description"), f"{field.name} has no description"
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            assert field.name in _schema_of(section)["required"]
        elif field.default is dataclasses.MISSING:
            # a default that depends on the platform (state_dir): said in the description
            assert field.name not in _schema_of(section).get("required", [])
            assert "default" not in prop
            assert "Default: " in prop["description"], field.name
        else:
            jsonable = TypeAdapter(Any).dump_python(field.default, mode="json")
            assert prop["default"] == jsonable, field.name


@pytest.mark.parametrize(
    ("platform", "environment", "expected"),
    [
        ("linux", {}, Path("/var/lib/acqharvest")),
        ("darwin", {}, Path("/Library/Application Support/acqharvest/state")),
        ("win32", {"PROGRAMDATA": "D:\\ProgramData"}, Path("D:\\ProgramData/acqharvest/state")),
        ("win32", {}, Path("C:\\ProgramData/acqharvest/state")),
    ],
)
def test_without_a_state_dir_the_platforms_place_for_service_data_is_used(
    monkeypatch: pytest.MonkeyPatch, platform: str, environment: dict[str, str], expected: Path
) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.delenv("PROGRAMDATA", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    loaded = parse_settings(
        "instrument: {id: x}\nwatch: [{path: /data/w}]\nendpoint: {type: directory, path: /o}\n",
        source="c.yaml",
        base_dir=Path("/etc/acqharvest"),
    )
    assert loaded.state_dir == expected


def test_a_config_gives_the_declared_defaults_for_every_key_it_leaves_out(tmp_path: Path) -> None:
    loaded = parse_settings(
        "instrument: {id: x}\nwatch: [{path: w}]\nendpoint: {type: directory, path: out}\n"
        "state_dir: state\n",
        source="c.yaml",
        base_dir=tmp_path,
    )
    assert loaded == settings.Settings(
        instrument=settings.InstrumentSettings(id="x"),
        watch=(settings.WatchSettings(path=tmp_path / "w"),),
        endpoint=settings.EndpointSettings(type="directory", path=tmp_path / "out"),
        state_dir=tmp_path / "state",
        source="c.yaml",
    )
    assert loaded.watch[0].exclude == settings.DEFAULT_EXCLUDE


def test_validating_settings_without_the_loader_context_is_refused() -> None:
    with pytest.raises(TypeError, match="Loading context"):
        TypeAdapter(settings.WatchSettings).validate_python({"path": "relative"})
