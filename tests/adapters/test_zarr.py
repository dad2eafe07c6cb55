"""The OME-Zarr adapter on the corpus store and on stores written here (Zarr v3, plates).

Values are checked against the store's own JSON read independently here, and against
the OME-XML bioformats2raw wrote beside it; the ``zarr`` package is not needed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from acqharvest.adapter_api import AdapterError, Draft
from acqharvest.adapters.tiff import ome
from acqharvest.adapters.zarr import ZarrAdapter
from acqharvest.readonly import FileReader
from tests.adapters.acquisition import claims_of, draft_of, extract_all, overread

STORE = "ome-zarr/xyz_8bit__mitotic_plate_calibrated.ome.zarr"
UNITS_UM = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3}


def _files(store: Path) -> list[Path]:
    return sorted(p for p in store.rglob("*") if p.is_file())


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def _axes(unit: str) -> list[dict[str, str]]:
    return [
        {"name": "c", "type": "channel"},
        {"name": "z", "type": "space", "unit": unit},
        {"name": "y", "type": "space", "unit": unit},
        {"name": "x", "type": "space", "unit": unit},
    ]


def _multiscales(unit: str, scale: list[float], version: str | None = "0.4") -> dict[str, Any]:
    ms: dict[str, Any] = {
        "axes": _axes(unit),
        "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        ],
    }
    if version:
        ms["version"] = version
    return {"multiscales": [ms], "omero": {"channels": [{"label": "DAPI"}, {"label": "GFP"}]}}


def write_v2_image(
    folder: Path, shape: list[int], chunks: list[int], unit: str = "micrometer"
) -> None:
    """An NGFF 0.4 image in Zarr v2, uncompressed uint16 chunks (every one written whole)."""
    _write_json(folder / ".zgroup", {"zarr_format": 2})
    _write_json(folder / ".zattrs", _multiscales(unit, [1.0, 2.0, 0.5, 0.25]))
    _write_json(
        folder / "0" / ".zarray",
        {
            "zarr_format": 2,
            "shape": shape,
            "chunks": chunks,
            "dtype": "<u2",
            "compressor": None,
            "fill_value": 0,
            "filters": None,
            "order": "C",
            "dimension_separator": "/",
        },
    )
    size = 2
    for n in chunks:
        size *= n
    chunk = folder / "0" / "0" / "0" / "0" / "0"
    chunk.parent.mkdir(parents=True, exist_ok=True)
    chunk.write_bytes(b"\1" * size)


def test_corpus_store_is_one_acquisition_and_values_match_its_json(corpus: Path) -> None:
    store = corpus / STORE
    files = _files(store)
    claims = claims_of(ZarrAdapter(), files)
    assert len({c.group_key for c in claims.values() if c}) == 1
    assert {p.name for p, c in claims.items() if c and c.role == "primary"} == {
        ".zattrs",
        ".zgroup",
    }
    trees = {os.path.normpath(p.parent / c.tree) for p, c in claims.items() if c and c.tree}
    assert trees == {str(store)}
    output, reader = extract_all(ZarrAdapter(), files)

    # the store's own metadata, read here with json: series 0, level 0
    attrs = json.loads((store / "0/.zattrs").read_text())["multiscales"][0]
    level0 = attrs["datasets"][0]
    array = json.loads((store / "0" / level0["path"] / ".zarray").read_text())
    scale = level0["coordinateTransformations"][0]["scale"]
    names = [a["name"] for a in attrs["axes"]]
    metadata = output.metadata
    assert output.format == "OME-Zarr"
    for name, size in zip(names, array["shape"], strict=True):
        assert metadata["image"][f"size_{name}"] == size
    for axis in ("x", "y", "z"):
        unit = attrs["axes"][names.index(axis)]["unit"]
        expected = scale[names.index(axis)] * UNITS_UM[unit]
        assert metadata["pixel_size_um"][axis] == pytest.approx(expected, rel=1e-8)
    # the OME-XML beside it says the same
    xml = ome.parse_xml((store / "OME/METADATA.ome.xml").read_bytes())
    pixels = next(e for e in xml.iter() if e.tag.endswith("}Pixels"))
    assert metadata["image"]["size_x"] == int(pixels.get("SizeX", ""))
    assert metadata["pixel_size_um"]["x"] == pytest.approx(float(pixels.get("PhysicalSizeX", "")))
    assert metadata["image"]["pixel_type"] == "uint8"
    assert metadata["image"]["bits"] == 8
    assert metadata["image"]["dimension_order"] == "XYZCT"
    assert metadata["channels"] == [{"name": "Channel 0"}]
    assert metadata["instances"] == len(files) == 87
    assert output.original_metadata["ngff_version"] == "0.4"
    assert output.warnings == ()
    # chunks: their 16-byte header only
    chunks = [p for p in files if p.name.isdigit() and p.parent.name.isdigit()]
    assert chunks
    assert all(reader.read_by_path[p] <= 16 for p in chunks)


def test_the_stores_ome_xml_is_kept_whole_up_to_the_sites_cap(corpus: Path) -> None:
    files = _files(corpus / STORE)
    text = (corpus / STORE / "OME/METADATA.ome.xml").read_text(encoding="utf-8")
    assert 200 * 1024 < len(text.encode()) < 1024 * 1024  # under the default cap
    whole, _ = extract_all(ZarrAdapter(), files)
    assert whole.original_metadata["ome_xml"] == text
    assert "ome_xml_cut" not in whole.original_metadata
    draft = dataclasses.replace(draft_of(ZarrAdapter(), files), original_metadata_max_bytes=65536)
    cut = ZarrAdapter().extract(draft, FileReader())
    assert text.startswith(cut.original_metadata["ome_xml"])
    assert cut.original_metadata["ome_xml_cut"] == {
        "size_bytes": len(text.encode()),
        "kept_bytes": 65536,
    }
    assert any(w.startswith("OME/METADATA.ome.xml is ") for w in cut.warnings)
    assert cut.metadata == whole.metadata  # read from the whole document either way


def test_a_chunk_cut_short_fails_the_store_naming_it(corpus: Path, tmp_path: Path) -> None:
    store = tmp_path / "copy.ome.zarr"
    shutil.copytree(corpus / STORE, store)
    chunk = store / "0/0/0/0/0/1/1"
    chunk.write_bytes(chunk.read_bytes()[:-100])
    with pytest.raises(AdapterError, match="Blosc header says") as caught:
        extract_all(ZarrAdapter(), _files(store))
    assert caught.value.path == chunk
    (store / "0/.zattrs").write_text('{"multiscales": [')
    with pytest.raises(AdapterError, match="not valid JSON") as broken:
        extract_all(ZarrAdapter(), _files(store))
    assert broken.value.path == store / "0/.zattrs"


def test_v2_image_with_a_large_uncompressed_chunk_reads_its_headers_only(tmp_path: Path) -> None:
    store = tmp_path / "big.zarr"
    write_v2_image(store, [2, 3, 600, 1000], [1, 1, 600, 1000], unit="nanometer")
    output, reader = extract_all(ZarrAdapter(), _files(store))
    assert output.metadata["image"] == {
        "size_c": 2,
        "size_z": 3,
        "size_y": 600,
        "size_x": 1000,
        "bits": 16,
        "pixel_type": "uint16",
    }
    assert output.metadata["pixel_size_um"] == {"z": 0.002, "y": 0.0005, "x": 0.00025}
    assert output.metadata["channels"] == [{"name": "DAPI"}, {"name": "GFP"}]
    assert overread(reader) == {}
    chunk = store / "0/0/0/0/0"
    assert chunk.stat().st_size == 1_200_000
    assert reader.read_by_path[chunk] <= 16
    chunk.write_bytes(b"\1" * 1000)
    with pytest.raises(AdapterError, match="uncompressed chunk"):
        extract_all(ZarrAdapter(), _files(store))


def test_ngff_05_in_zarr_v3(tmp_path: Path) -> None:
    store = tmp_path / "image.ome.zarr"
    attributes = {
        "ome": {"version": "0.5", **_multiscales("millimeter", [1.0, 0.01, 0.002, 0.002], None)}
    }
    _write_json(
        store / "zarr.json", {"zarr_format": 3, "node_type": "group", "attributes": attributes}
    )
    _write_json(
        store / "0" / "zarr.json",
        {
            "zarr_format": 3,
            "node_type": "array",
            "shape": [1, 5, 64, 48],
            "data_type": "float32",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, 1, 64, 48]}},
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        },
    )
    chunk = store / "0" / "c" / "0" / "0" / "0" / "0"
    chunk.parent.mkdir(parents=True)
    chunk.write_bytes(b"\0" * (64 * 48 * 4))
    output, _ = extract_all(ZarrAdapter(), _files(store))
    assert output.format == "OME-Zarr"
    assert output.original_metadata["zarr_format"] == 3
    assert output.original_metadata["ngff_version"] == "0.5"
    image = output.metadata["image"]
    assert (image["size_c"], image["size_z"], image["size_y"], image["size_x"]) == (1, 5, 64, 48)
    assert (image["pixel_type"], image["bits"]) == ("float32", 32)
    assert output.metadata["pixel_size_um"] == {"z": 10.0, "y": 2.0, "x": 2.0}
    chunk.write_bytes(b"\0" * 100)
    with pytest.raises(AdapterError, match="uncompressed chunk"):
        extract_all(ZarrAdapter(), _files(store))


def test_plate_layout(tmp_path: Path) -> None:
    store = tmp_path / "plate.zarr"
    wells = ["A/1", "A/2", "B/1"]
    _write_json(store / ".zgroup", {"zarr_format": 2})
    plate = {
        "version": "0.4",
        "name": "screen 7",
        "rows": [{"name": "A"}, {"name": "B"}],
        "columns": [{"name": "1"}, {"name": "2"}],
        "wells": [{"path": w, "rowIndex": 0, "columnIndex": 0} for w in wells],
    }
    _write_json(store / ".zattrs", {"plate": plate})
    for well in wells:
        _write_json(store / well / ".zgroup", {"zarr_format": 2})
        _write_json(store / well / ".zattrs", {"well": {"images": [{"path": "0"}, {"path": "1"}]}})
        for field in ("0", "1"):
            write_v2_image(store / well / field, [1, 1, 8, 8], [1, 1, 8, 8])
    files = _files(store)
    claims = claims_of(ZarrAdapter(), files)
    # the wells' own .zattrs and .zgroup are members: only the root's are the primary
    assert {
        p.relative_to(store).as_posix() for p, c in claims.items() if c and c.role == "primary"
    } == {
        ".zattrs",
        ".zgroup",
    }
    output, _ = extract_all(ZarrAdapter(), files)
    assert output.metadata["plate"] == {
        "name": "screen 7",
        "rows": 2,
        "columns": 2,
        "wells": 3,
        "fields": 2,
    }
    assert output.metadata["image"]["series"] == 6
    assert output.metadata["image"]["size_x"] == 8
    assert output.original_metadata["image"] == "A/1/0"


def test_claims_only_inside_a_zarr_folder_and_chunks_alone_are_listed(tmp_path: Path) -> None:
    outside = tmp_path / "plain" / ".zattrs"
    _write_json(outside, {})
    assert claims_of(ZarrAdapter(), [outside]) == {outside: None}
    store = tmp_path / "late.zarr"
    write_v2_image(store, [1, 1, 4, 4], [1, 1, 4, 4])
    chunk = store / "0/0/0/0/0"
    claim = claims_of(ZarrAdapter(), [chunk])[chunk]
    assert claim is not None
    assert claim.role == "member"
    assert claim.tree == "../../../.."
    # released at its timeout without the root metadata: listed, never an error
    output = ZarrAdapter().extract(Draft("k", chunk, (chunk,)), FileReader())
    assert output.format == "Zarr"
    assert output.metadata == {"instances": 1}
    assert "root metadata" in output.warnings[-1]


def test_a_file_of_another_format_inside_a_store_is_a_part_of_the_store(
    corpus: Path, tmp_path: Path
) -> None:
    from acqharvest.adapter_api import HEAD_BYTES, FileProbe
    from acqharvest.registry import load_registry

    store = tmp_path / "copied.ome.zarr"
    shutil.copytree(corpus / STORE, store)
    strangers = {
        store / "notes.czi": corpus / "czi" / "testTinyCzi.czi",
        store / "OME" / "mask.nii": corpus / "nifti" / "example4d.nii.gz",
        store / "0" / "scan.dcm": corpus / "dicom/mr-siemens/MR-SIEMENS-DICOM-WithOverlays.dcm",
    }
    for target, source in strangers.items():
        shutil.copyfile(source, target)
    reader, registry = FileReader(), load_registry()
    for target in strangers:
        head, _, _ = reader.head_and_digests(target, HEAD_BYTES)
        claimed = registry.claim(FileProbe(target, target.stat().st_size, head), reader)
        assert claimed is not None
        name, claim = claimed
        assert (name, claim.group_key) == ("zarr", f"zarr:{store}"), target
