"""The Leica LIF adapter on the corpus's LAS X files, against readlif's own reading of them."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from readlif.reader import LifFile

from acqharvest.adapter_api import AdapterError, Draft, FileProbe
from acqharvest.adapters.lif import LifAdapter
from acqharvest.readonly import FileReader
from tests.adapters.readme import assert_readme_table
from tests.adapters.test_builtin_conformance import _Builtin, _patch
from tests.conftest import CORPUS, REPO

FILES = sorted(p.relative_to(CORPUS).as_posix() for p in (CORPUS / "lif").glob("*.lif"))
#: magic, length, 0x2A, XML length in UTF-16 units, then the XML
XML_AT = 13


def _first_block(data: bytes) -> int:
    """Offset of the size of the first memory block holding data (version 2: int64)."""
    (units,) = struct.unpack_from("<i", data, 9)
    position = XML_AT + 2 * units
    while True:
        (size,) = struct.unpack_from("<q", data, position + 9)
        (name_units,) = struct.unpack_from("<i", data, position + 18)
        if size:
            return int(position + 9)
        position += 22 + 2 * name_units


class TestLifConformance(_Builtin):
    entry_point = "lif"
    cases_dir = REPO / "adapters" / "lif" / "cases"

    def header_lies(self, data: bytes) -> Iterator[tuple[str, bytes]]:
        past = len(data)
        yield "XML length past EOF", _patch(data, 9, struct.pack("<i", past))
        yield (
            "memory block size past EOF",
            _patch(data, _first_block(data), struct.pack("<q", past)),
        )
        yield "a block the XML declares is missing", data[: _first_block(data) - 9]


def _extract(path: Path, reader: FileReader | None = None) -> Any:
    return LifAdapter().extract(Draft("lif:x", path, (path,)), reader or FileReader())


@pytest.mark.parametrize("rel", FILES)
def test_every_series_agrees_with_readlif(corpus: Path, rel: str) -> None:
    path = corpus / rel
    series = _extract(path).metadata["series"]
    lif = LifFile(str(path))
    assert len(series) == lif.num_images
    for ours, theirs in zip(series, lif.image_list, strict=True):
        assert ours["name"] == theirs["name"]
        image, (x, y, z, t, m) = ours["image"], theirs["dims"]
        found = tuple(image.get(k, 1) for k in ("size_x", "size_y", "size_z", "size_t", "tiles"))
        assert found == (x, y, z, t, m)
        assert image["size_c"] == theirs["channels"]
        assert image["bits"] == theirs["bit_depth"][0]
        # readlif gives pixels per micrometre for x, y, z
        for axis, per_um in zip("xyz", theirs["scale"][:3], strict=True):
            expected = 1 / per_um if per_um else None
            assert ours.get("pixel_size_um", {}).get(axis) == pytest.approx(expected), axis


def test_top_level_is_the_first_series_with_its_instrument(corpus: Path) -> None:
    meta = _extract(corpus / "lif/xz-example.lif").metadata
    assert meta["image"] == meta["series"][0]["image"]
    assert [s["name"] for s in meta["series"]] == ["xzt", "xzy", "xz"]
    assert meta["image"] == {"size_x": 128, "size_z": 128, "size_t": 20, "size_c": 2, "bits": 8}
    assert meta["instrument_reported"] == {
        "model": "TCS SP8",
        "software": "LAS X",
        "software_version": "3.5.7.23225",
    }
    assert meta["objective"]["na"] == 1.3
    assert meta["laser_lines_nm"] == [488.0, 552.0]
    assert meta["channels"] == [
        {"name": "Channel 1", "fluor": "Leica/FITC"},
        {"name": "Channel 3", "fluor": "Leica/TRITC"},
    ]
    assert meta["acquired"] == "2021-03-04T16:39:17.951000Z"


def test_headers_only_the_xml_and_the_block_headers(corpus: Path) -> None:
    """What is read beyond the XML header is a few dozen bytes per memory block.

    The XML itself is the file's metadata and must be read whole: in the wavelength sweep
    it is 105 KB of 1.1 MB (9 %), in the XZ example 91 KB of 2 MB (4.5 %).
    """
    for rel in FILES:
        path = corpus / rel
        data = path.read_bytes()
        (units,) = struct.unpack_from("<i", data, 9)
        reader = FileReader()
        _extract(path, reader)
        beyond_xml = reader.bytes_read - (XML_AT + 2 * units)
        assert 0 < beyond_xml < 100 * 4, (rel, beyond_xml)
        assert beyond_xml < path.stat().st_size * 0.05 / 100
    reader = FileReader()
    _extract(corpus / "lif/xz-example.lif", reader)
    assert reader.bytes_read < (corpus / "lif/xz-example.lif").stat().st_size * 0.05


def test_a_file_cut_at_a_block_boundary_is_truncated(corpus: Path, tmp_path: Path) -> None:
    """The walk alone cannot tell; the XML's declared memory blocks can."""
    data = (corpus / "lif/xz-example.lif").read_bytes()
    last = data.rindex(b"\x70\x00\x00\x00\x26")  # the last block's header (MemBlock_138)
    path = tmp_path / "cut.lif"
    path.write_bytes(data[:last])
    with pytest.raises(AdapterError, match="truncated: memory block MemBlock_138 of 524288"):
        _extract(path)


def test_claim_reads_the_head_only(corpus: Path) -> None:
    path = corpus / "lif/xz-example.lif"
    head = path.read_bytes()[:4096]
    claim = LifAdapter().claim(FileProbe(path, path.stat().st_size, head), FileReader())
    assert claim is not None
    assert claim.group_key == f"lif:{path}"
    # the 0x70 magic alone is not enough: the XML's root element must follow
    assert LifAdapter().claim(FileProbe(path, 4096, head[:13] + bytes(4083)), FileReader()) is None


def test_readme_field_table_is_the_declared_fields() -> None:
    assert_readme_table(LifAdapter.info.fields, REPO / "adapters" / "lif" / "README.md")
