"""The extract stage: failures become ExtractionFailure, output is JSON-safe and declared-only."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy
import pytest

from acqharvest.adapter_api import (
    AdapterError,
    AdapterInfo,
    AdapterOutput,
    Draft,
    FieldSpec,
    Reader,
    Role,
)
from acqharvest.adapters.dicom import DicomAdapter
from acqharvest.extract import extract, original_metadata_cap
from acqharvest.model import (
    Acquisition,
    Extraction,
    ExtractionFailure,
    FileSettled,
    ProbedFile,
)
from acqharvest.readonly import FileReader


def _acquisition(root: Path, names: list[str], primary: str, key: str = "k") -> Acquisition:
    members = []
    for name in names:
        path = root / name
        if not path.exists():
            path.write_bytes(b"data")
        stat = path.stat()
        settled = FileSettled(path, root, stat.st_size, stat.st_mtime_ns, f"0:{stat.st_ino}")
        role: Role = "primary" if name == primary else "member"
        members.append(ProbedFile(settled, "0" * 64, "fake", key, role=role))
    return Acquisition(key=key, adapter="fake", root=root, members=tuple(members))


class FakeAdapter:
    """Returns whatever output it was built with, or raises what it was given."""

    info = AdapterInfo(
        name="fake",
        title="Fake",
        version="2.0",
        stability="experimental",
        formats=(),
        fields=(
            FieldSpec("image.size_x", "integer"),
            FieldSpec("channels", "list"),
            FieldSpec("modality", "string"),
            FieldSpec("stats.mean", "number"),
            FieldSpec("acquired", "datetime"),
            FieldSpec("pixel_size_um.x", "number", "um"),
        ),
    )

    def __init__(self, output: Any = None, error: Exception | None = None) -> None:
        self.output = output
        self.error = error
        self.drafts: list[Draft] = []

    def claim(self, probe: Any, reader: Reader) -> None:
        return None

    def extract(self, draft: Draft, reader: Reader) -> AdapterOutput:
        self.drafts.append(draft)
        if self.error is not None:
            raise self.error
        return self.output  # type: ignore[no-any-return]


def test_no_adapter_gives_an_empty_unknown_extraction(tmp_path):
    acquisition = _acquisition(tmp_path, ["a.bin"], "a.bin")
    result = extract(acquisition, None, FileReader())
    assert isinstance(result, Extraction)
    assert (result.adapter, result.adapter_version, result.format) == ("none", "", "unknown")
    assert result.metadata == {}
    assert result.original_metadata == {}


def test_a_crashing_adapter_becomes_a_failure_naming_the_file(tmp_path):
    acquisition = _acquisition(tmp_path, ["m.bin", "p.bin"], "p.bin")
    result = extract(acquisition, FakeAdapter(error=ValueError("bad header")), FileReader())
    assert isinstance(result, ExtractionFailure)
    assert result.path == tmp_path / "p.bin"
    assert result.adapter == "fake"
    assert result.reason == "adapter fake crashed: ValueError: bad header"


def test_an_adapter_error_keeps_its_path_and_reason(tmp_path):
    acquisition = _acquisition(tmp_path, ["p.bin", "m.bin"], "p.bin")
    error = AdapterError(tmp_path / "m.bin", "truncated")
    result = extract(acquisition, FakeAdapter(error=error), FileReader())
    assert isinstance(result, ExtractionFailure)
    assert (result.path, result.reason) == (tmp_path / "m.bin", "truncated")


def test_a_wrong_return_type_is_a_failure(tmp_path):
    acquisition = _acquisition(tmp_path, ["p.bin"], "p.bin")
    result = extract(acquisition, FakeAdapter(output={"format": "x"}), FileReader())
    assert isinstance(result, ExtractionFailure)
    assert "returned dict" in result.reason


def test_draft_lists_the_primary_first(tmp_path):
    acquisition = _acquisition(tmp_path, ["b.bin", "a.bin", "c.bin"], "a.bin", key="grp")
    adapter = FakeAdapter(output=AdapterOutput(format="x", metadata={}))
    extract(acquisition, adapter, FileReader())
    draft = adapter.drafts[0]
    assert draft.key == "grp"
    assert draft.primary == tmp_path / "a.bin"
    assert draft.members == (tmp_path / "a.bin", tmp_path / "b.bin", tmp_path / "c.bin")


def test_undeclared_keys_are_dropped_with_a_warning(tmp_path):
    acquisition = _acquisition(tmp_path, ["p.bin"], "p.bin")
    output = AdapterOutput(
        format="x",
        metadata={
            "modality": "MR",
            "image": {"size_x": 4, "size_y": 5},
            "channels": [{"name": "DAPI", "anything": 1}],
            "secret": "x",
        },
        warnings=("from the adapter",),
    )
    result = extract(acquisition, FakeAdapter(output=output), FileReader())
    assert isinstance(result, Extraction)
    assert result.metadata == {
        "modality": "MR",
        "image": {"size_x": 4},
        "channels": [{"name": "DAPI"}],
    }
    assert result.warnings[0] == "from the adapter"
    assert any("'image.size_y'" in w for w in result.warnings)
    assert any("channels[0].anything: not a channel field" in w for w in result.warnings)
    assert any("'secret'" in w for w in result.warnings)
    assert (result.adapter, result.adapter_version) == ("fake", "2.0")


def test_values_are_made_json_safe(tmp_path):
    acquisition = _acquisition(tmp_path, ["p.bin"], "p.bin")
    output = AdapterOutput(
        format="x",
        metadata={"stats": {"mean": numpy.float32(1.5)}},
        original_metadata={
            "blob": b"\x00\x01",
            "count": numpy.int64(3),
            "array": numpy.arange(3),
            "path": Path("/x/y"),
            "nan": float("nan"),
            "other": object,
            "nested": {"raw": b"zz", "ok": (1, 2)},
        },
    )
    result = extract(acquisition, FakeAdapter(output=output), FileReader())
    assert isinstance(result, Extraction)
    assert result.metadata == {"stats": {"mean": 1.5}}
    original = dict(result.original_metadata)
    assert "blob" not in original
    assert original["count"] == 3
    assert original["array"] == [0, 1, 2]
    assert original["path"] == "/x/y"
    assert original["nan"] == "nan"
    assert original["other"] == str(object)
    assert original["nested"] == {"ok": [1, 2]}
    assert any("blob: binary value dropped" in w for w in result.warnings)
    json.dumps({"m": result.metadata, "o": original}, allow_nan=False)


def test_original_metadata_is_capped_largest_first(tmp_path):
    acquisition = _acquisition(tmp_path, ["p.bin"], "p.bin")
    cap = original_metadata_cap(64 * 1024)
    original = {"huge": "x" * cap, "big": "y" * 1000, "small": "z"}
    output = AdapterOutput(format="x", metadata={}, original_metadata=original)
    result = extract(
        acquisition, FakeAdapter(output=output), FileReader(), original_metadata_max_bytes=64 * 1024
    )
    assert isinstance(result, Extraction)
    assert set(result.original_metadata) == {"big", "small"}
    assert len(json.dumps(dict(result.original_metadata))) <= cap
    assert any("dropped largest entries: huge" in w for w in result.warnings)


def test_the_cap_follows_the_setting_and_keeps_a_quoted_document_whole(tmp_path):
    # an XML document of the full allowance, every other byte a quote JSON escapes
    acquisition = _acquisition(tmp_path, ["p.bin"], "p.bin")
    document = '"a' * (64 * 1024 // 2)
    original = {"ome_xml": document, "other": "y" * 200_000}
    output = AdapterOutput(format="x", metadata={}, original_metadata=original)
    kept = extract(
        acquisition, FakeAdapter(output=output), FileReader(), original_metadata_max_bytes=64 * 1024
    )
    assert isinstance(kept, Extraction)
    assert kept.original_metadata == original
    assert not kept.warnings


def test_each_file_has_the_media_type_its_adapter_names(tmp_path):
    acquisition = _acquisition(tmp_path, ["a.ome.tif", "b.json", "c.bin"], "a.ome.tif")
    adapter = FakeAdapter(output=AdapterOutput(format="x", metadata={}))
    info = adapter.info
    adapter.info = dataclasses.replace(
        info, media_types={".tif": "image/tiff", ".json": "application/json"}
    )
    result = extract(acquisition, adapter, FileReader())
    assert isinstance(result, Extraction)
    assert {path.name: kind for path, kind in result.media_types.items()} == {
        "a.ome.tif": "image/tiff",
        "b.json": "application/json",
        "c.bin": "application/octet-stream",
    }


def test_a_real_dicom_acquisition(corpus, tmp_path):
    for index in range(2):
        shutil.copy(corpus / "dicom/ct/CT_JPEG70.dcm", tmp_path / f"{index}.dcm")
    acquisition = _acquisition(tmp_path, ["0.dcm", "1.dcm"], "0.dcm", key="dicom:series")
    result = extract(acquisition, DicomAdapter(), FileReader())
    assert isinstance(result, Extraction)
    assert (result.adapter, result.format) == ("dicom", "DICOM")
    assert result.metadata["modality"] == "CT"
    assert result.metadata["instances"] == 2
    assert result.started == "1999-05-24T11:42:43.309512"
    assert not [w for w in result.warnings if "not declared" in w]
    json.dumps({"m": result.metadata, "o": result.original_metadata}, allow_nan=False)


def test_a_truncated_dicom_is_a_failure(corpus, tmp_path):
    data = (corpus / "dicom/ct/CT_JPEG70.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) // 2])
    acquisition = _acquisition(tmp_path, ["cut.dcm"], "cut.dcm")
    result = extract(acquisition, DicomAdapter(), FileReader())
    assert isinstance(result, ExtractionFailure)
    assert result.path == tmp_path / "cut.dcm"
    assert "truncated" in result.reason


@pytest.mark.parametrize(
    ("metadata", "started", "kept", "dropped"),
    [
        # a non-finite number becomes the string "inf" on the way to JSON: not a number
        ({"pixel_size_um": {"x": float("inf")}}, None, {}, "pixel_size_um.x"),
        ({"image": {"size_x": "512"}}, None, {}, "image.size_x"),
        ({"image": {"size_x": True}}, None, {}, "image.size_x"),
        ({"modality": 3}, None, {}, "modality"),
        ({"acquired": "last tuesday"}, None, {}, "acquired"),
        ({"acquired": "2020-13-45"}, None, {}, "acquired"),
        ({"channels": "DAPI"}, None, {}, "channels"),
        (
            {"channels": [{"name": "DAPI", "emission_nm": "blue"}, 7]},
            None,
            {"channels": [{"name": "DAPI"}]},
            "channels[0].emission_nm",
        ),
        (
            {"channels": [{"name": "A", "light_source": {"power_mw": True, "type": "Laser"}}]},
            None,
            {"channels": [{"name": "A", "light_source": {"type": "Laser"}}]},
            "channels[0].light_source.power_mw",
        ),
        (
            {"channels": [{"name": "A", "filters": {"dichroic": ""}}]},
            None,
            {"channels": [{"name": "A"}]},
            "channels[0].filters.dichroic",
        ),
        (
            {"channels": [{"name": "A", "detector_settings": 5}]},
            None,
            {"channels": [{"name": "A"}]},
            "channels[0].detector_settings",
        ),
        ({"modality": "MR"}, "last tuesday", {"modality": "MR"}, "started"),
        ({"modality": "MR"}, "2020-02-30T10:00:00", {"modality": "MR"}, "started"),
    ],
)
def test_values_that_are_not_their_declared_type_are_dropped_naming_the_key(
    tmp_path, metadata, started, kept, dropped
):
    acquisition = _acquisition(tmp_path, ["p.bin"], "p.bin")
    output = AdapterOutput(format="x", metadata=metadata, started=started)
    result = extract(acquisition, FakeAdapter(output=output), FileReader())
    assert isinstance(result, Extraction)
    assert result.metadata == kept
    assert result.started is None
    assert any(w.startswith(f"{dropped}: ") and "dropped" in w for w in result.warnings), (
        result.warnings
    )


def test_well_typed_values_and_rfc3339_times_pass(tmp_path):
    acquisition = _acquisition(tmp_path, ["p.bin"], "p.bin")
    metadata = {
        "acquired": "2024-02-29T23:59:60.5+05:30",
        "pixel_size_um": {"x": 2},
        "channels": [
            {
                "name": "GFP",
                "excitation_nm": 488,
                "exposure_s": 0.1,
                "light_source": {"type": "Laser", "power_mw": 20.0},
                "detector_settings": {"gain": -1.5, "binning": "2x2"},
                "filters": {"emission_nm": [500.0, 550.0]},
            }
        ],
    }
    output = AdapterOutput(format="x", metadata=metadata, started="2024-02-29")
    result = extract(acquisition, FakeAdapter(output=output), FileReader())
    assert isinstance(result, Extraction)
    assert (result.metadata, result.started, result.warnings) == (metadata, "2024-02-29", ())


@pytest.mark.parametrize(
    ("flag", "reason"),
    [
        (None, None),
        ("  header only  ", "header only"),
        ("", "the adapter says so, without a reason ('')"),
        (True, "the adapter says so, without a reason (True)"),
    ],
)
def test_an_incomplete_flag_is_carried_with_its_reason_leading_the_notes(tmp_path, flag, reason):
    acquisition = _acquisition(tmp_path, ["p.bin"], "p.bin")
    output = AdapterOutput(format="x", metadata={}, warnings=("adapter note",), incomplete=flag)
    result = extract(acquisition, FakeAdapter(output=output), FileReader())
    assert isinstance(result, Extraction)
    assert result.incomplete == reason
    expected = (
        ("adapter note",)
        if reason is None
        else ("adapter note", f"acquisition incomplete: {reason}")
    )
    assert result.warnings == expected


def test_a_dicom_image_header_without_pixel_data_is_extracted_incomplete(corpus, tmp_path):
    data = (corpus / "dicom/mg/MG_Explicit_Little.dcm").read_bytes()
    (tmp_path / "header.dcm").write_bytes(data[: data.index(b"\xe0\x7f\x10\x00")])
    acquisition = _acquisition(tmp_path, ["header.dcm"], "header.dcm")
    result = extract(acquisition, DicomAdapter(), FileReader())
    assert isinstance(result, Extraction)
    assert result.metadata["image"]["size_x"] == 512
    assert result.incomplete == (
        "image header but no pixel data element (the file ends after a whole element): header.dcm"
    )
    assert f"acquisition incomplete: {result.incomplete}" in result.warnings
