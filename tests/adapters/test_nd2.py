"""The Nikon ND2 adapter on the corpus's NIS-Elements file, against nd2's own reading of it."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nd2
import pytest

from acqharvest.adapter_api import AdapterError, Draft, FileProbe
from acqharvest.adapters.nd2 import Nd2Adapter
from acqharvest.readonly import FileReader
from tests.adapters.readme import assert_readme_table
from tests.adapters.test_builtin_conformance import _Builtin, _patch
from tests.conftest import REPO

CLUSTER = "nd2/cluster.nd2"


def _chunk_map(data: bytes) -> tuple[int, int]:
    """(offset of the chunk map, offset of its first entry's chunk offset)."""
    (location,) = struct.unpack_from("<Q", data, len(data) - 8)
    (name_length,) = struct.unpack_from("<I", data, location + 4)
    body = location + 16 + name_length
    return location, data.index(b"!", body) + 1


class TestNd2Conformance(_Builtin):
    entry_point = "nd2"
    cases_dir = REPO / "adapters" / "nd2" / "cases"

    def header_lies(self, data: bytes) -> Iterator[tuple[str, bytes]]:
        past = len(data) + 4096
        location, first_entry = _chunk_map(data)
        yield "chunk map offset past EOF", _patch(data, len(data) - 8, struct.pack("<Q", past))
        yield "chunk map length past EOF", _patch(data, location + 8, struct.pack("<Q", past))
        yield "a chunk's offset past EOF", _patch(data, first_entry, struct.pack("<Q", past))


def _extract(path: Path, reader: FileReader | None = None) -> Any:
    return Nd2Adapter().extract(Draft("nd2:x", path, (path,)), reader or FileReader())


def test_sizes_and_voxel_size_agree_with_nd2(corpus: Path) -> None:
    path = corpus / CLUSTER
    meta = _extract(path).metadata
    with nd2.ND2File(str(path)) as file:
        sizes, voxel = dict(file.sizes), file.voxel_size()
    image = meta["image"]
    keys = {"X": "size_x", "Y": "size_y", "Z": "size_z", "C": "size_c", "T": "size_t"}
    assert {axis: image.get(key, 1) for axis, key in keys.items()} == {
        axis: sizes.get(axis, 1) for axis in keys
    }
    assert meta["pixel_size_um"] == pytest.approx({"x": voxel.x, "y": voxel.y, "z": voxel.z})


def test_loops_channels_objective_and_time(corpus: Path) -> None:
    output = _extract(corpus / CLUSTER)
    meta = output.metadata
    assert meta["loops"] == [
        {"type": "time", "count": 3},
        {"type": "z", "count": 10, "step_um": 0.5},
    ]
    # a laser scanning confocal (its text: "Modality: ... Laser Scan Confocal",
    # "{Pinhole Size(um)}: 38.3")
    confocal = {
        "acquisition_mode": "LaserScanningConfocalMicroscopy",
        "contrast_method": "Fluorescence",
        "illumination": "Epifluorescence",
        "pinhole_um": pytest.approx(38.3, abs=0.05),
    }
    assert meta["channels"] == [
        {"name": "5-FAM/pH 9.0", "excitation_nm": 488.0, "emission_nm": 525.0, **confocal},
        {"name": "FM 4-64/2% CHAPS", "excitation_nm": 561.0, "emission_nm": 700.0, **confocal},
    ]
    assert meta["objective"] == {"model": "Plan Apo λ 60x", "magnification": 60.0, "na": 0.95}
    assert meta["detector"] == {"model": "Nikon A1plus"}
    assert meta["instrument_reported"]["software_version"] == "4.20.01 (Build 982)"
    # the file's own text says 15:55:27 local time (CEST): the Julian day is UTC
    assert output.started == meta["acquired"] == "2014-06-18T13:55:23Z"


def test_headers_only(corpus: Path) -> None:
    """The chunk map, the metadata chunks and the first frame's metadata: no image data."""
    path = corpus / CLUSTER
    reader = FileReader()
    _extract(path, reader)
    with nd2.ND2File(str(path)) as file:
        attributes = file.attributes
        width, frames = attributes.widthBytes, attributes.sequenceCount
        assert width is not None
        assert frames is not None
        data_bytes = width * attributes.heightPx * frames
    assert reader.bytes_read < path.stat().st_size - data_bytes
    assert reader.bytes_read < path.stat().st_size * 0.15


def test_a_chunk_beyond_the_end_is_truncated(corpus: Path, tmp_path: Path) -> None:
    data = (corpus / CLUSTER).read_bytes()
    _, first_entry = _chunk_map(data)
    path = tmp_path / "lie.nd2"
    path.write_bytes(_patch(data, first_entry, struct.pack("<Q", len(data))))
    with pytest.raises(AdapterError, match=r"truncated: chunk ImageTextInfoLV! at \d+ declares"):
        _extract(path)


def test_claim_from_the_magic_or_a_legacy_name(corpus: Path, tmp_path: Path) -> None:
    path = corpus / CLUSTER
    head = path.read_bytes()[:4096]
    claim = Nd2Adapter().claim(FileProbe(path, 1, head), FileReader())
    assert claim is not None
    assert claim.group_key == f"nd2:{path}"
    jp2 = b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(100)
    assert Nd2Adapter().claim(FileProbe(tmp_path / "old.nd2", 112, jp2), FileReader())
    assert Nd2Adapter().claim(FileProbe(tmp_path / "photo.jp2", 112, jp2), FileReader()) is None


def test_readme_field_table_is_the_declared_fields() -> None:
    assert_readme_table(Nd2Adapter.info.fields, REPO / "adapters" / "nd2" / "README.md")
