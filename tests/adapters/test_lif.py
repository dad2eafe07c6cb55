"""The Leica LIF adapter on the corpus's LAS X files, against readlif's own reading of them."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from readlif.reader import LifFile

from acqharvest.adapter_api import AdapterError, Draft, FileProbe
from acqharvest.adapters.lif import LifAdapter
from acqharvest.adapters.safexml import parse
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
    # an xzt series: 20 cycles of 0.533 s (CompleteTime 10.657 s)
    assert meta["image"] == {
        "size_x": 128,
        "size_z": 128,
        "size_t": 20,
        "size_c": 2,
        "bits": 8,
        "time_increment_s": 0.533,
    }
    assert meta["instrument_reported"] == {
        "model": "TCS SP8",
        "software": "LAS X",
        "software_version": "3.5.7.23225",
    }
    assert meta["objective"]["na"] == 1.3
    assert meta["laser_lines_nm"] == [488.0, 552.0]
    # one pinhole (8.28e-5 m, 0.80 Airy at 580 nm) for both HyD channels, each its own gain
    pinhole = {"pinhole_um": pytest.approx(82.795, abs=1e-3)}
    offset = pytest.approx(-0.00667, abs=1e-5)
    assert meta["channels"] == [
        {
            "name": "Channel 1",
            "fluor": "Leica/FITC",
            **pinhole,
            "detector_settings": {"gain": pytest.approx(41.502, abs=1e-3), "offset": offset},
        },
        {
            "name": "Channel 3",
            "fluor": "Leica/TRITC",
            **pinhole,
            "detector_settings": {"gain": pytest.approx(105.842, abs=1e-3), "offset": offset},
        },
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


# LOF: no LOF is in the corpus, so these files are written here to the layout Bio-Formats'
# LOFReader and Leica's own readers document, from a corpus LIF series' XML element and
# its real memory block.
LOF_TYPE = "LMS_Object_File"
#: the series made a LOF below, and its memory block in the LIF (version 2 blocks)
LOF_SERIES = "xz"


def _text_block(text: str) -> bytes:
    units = text.encode("utf-16-le")
    return struct.pack("<iiBi", 0x70, 5 + len(units), 0x2A, len(units) // 2) + units


def _lif_memory(data: bytes, wanted: str) -> bytes:
    """The data of the LIF memory block named ``wanted``, walked by its version 2 headers."""
    (units,) = struct.unpack_from("<i", data, 9)
    position = XML_AT + 2 * units
    while position < len(data):
        (size,) = struct.unpack_from("<q", data, position + 9)
        (name_units,) = struct.unpack_from("<i", data, position + 18)
        start = position + 22 + 2 * name_units
        name = data[position + 22 : start].decode("utf-16-le")
        if name == wanted:
            return data[start : start + size]
        position = start + size
    raise AssertionError(f"no memory block {wanted}")


def _lof_parts(corpus: Path, bare: bool = False) -> tuple[bytes, bytes, bytes]:
    """(first block and memory header, memory, XML block) of a LOF of ``LOF_SERIES``."""
    data = (corpus / "lif/xz-example.lif").read_bytes()
    (units,) = struct.unpack_from("<i", data, 9)
    root = parse(data[XML_AT : XML_AT + 2 * units].decode("utf-16-le"))
    element = next(e for e in root.iter("Element") if e.get("Name") == LOF_SERIES)
    memory_element = element.find("Memory")
    assert memory_element is not None
    memory = _lif_memory(data, memory_element.get("MemoryBlockID") or "")
    if bare:  # older LOFs: the image's Data alone, no container or Element
        data_element = element.find("Data")
        assert data_element is not None
        xml = ET.tostring(data_element, encoding="unicode")
    else:
        inner = ET.tostring(element, encoding="unicode")
        xml = f'<LMSDataContainerHeader Version="2">{inner}</LMSDataContainerHeader>'
    head = _text_block(LOF_TYPE) + struct.pack("<BiBiBQ", 0x2A, 2, 0x2A, 0, 0x2A, len(memory))
    return head, memory, _text_block(xml)


def _lof(corpus: Path, folder: Path, name: str = "export.lof", bare: bool = False) -> Path:
    path = folder / name
    path.write_bytes(b"".join(_lof_parts(corpus, bare)))
    return path


def test_a_lof_gives_its_one_image_as_the_lif_series_it_came_from(
    corpus: Path, tmp_path: Path
) -> None:
    path = _lof(corpus, tmp_path)
    reader = FileReader()
    out = _extract(path, reader)
    lif = _extract(corpus / "lif/xz-example.lif").metadata
    from_lif = next(s for s in lif["series"] if s["name"] == LOF_SERIES)
    meta = out.metadata
    assert out.format == "Leica LOF"
    assert meta["series"] == [from_lif]
    assert meta["image"] == {"size_x": 512, "size_z": 512, "size_c": 2, "bits": 8}
    assert meta["pixel_size_um"] == from_lif["pixel_size_um"]
    assert meta["acquired"] == out.started == "2021-03-04T16:42:50.247000Z"
    assert meta["instrument_reported"]["software_version"] == "3.5.7.23225"
    assert meta["objective"]["model"] == "HC PL APO CS2    63x/1.30 GLYC"
    assert [d["model"] for d in meta["detectors"]] == ["HyD 1", "HyD 3"]
    assert [c["fluor"] for c in meta["channels"]] == ["Leica/FITC", "Leica/TRITC"]
    assert meta["laser_lines_nm"] == [488.0, 552.0]
    lof = out.original_metadata["lof"]
    assert lof == {"major_version": 2, "minor_version": 0, "memory_bytes": 512 * 512 * 2}
    # the image memory is skipped, never read: what is read is the two text blocks and the
    # memory header around it
    head, _, xml = _lof_parts(corpus)
    assert reader.bytes_read == len(head) + len(xml)


def test_an_older_lof_with_a_bare_data_fragment_is_named_after_its_file(
    corpus: Path, tmp_path: Path
) -> None:
    meta = _extract(_lof(corpus, tmp_path, "Position 3.lof", bare=True)).metadata
    assert [s["name"] for s in meta["series"]] == ["Position 3"]
    assert meta["image"]["size_x"] == 512
    assert meta["objective"]["na"] == 1.3


def test_a_lof_is_claimed_by_its_head(corpus: Path, tmp_path: Path) -> None:
    path = _lof(corpus, tmp_path)
    head = path.read_bytes()[:4096]
    claim = LifAdapter().claim(FileProbe(path, path.stat().st_size, head), FileReader())
    assert claim is not None
    assert claim.group_key == f"lif:{path}"
    other = _text_block("LMS_Other_File") + head[13 + 30 :]
    assert LifAdapter().claim(FileProbe(path, 4096, other), FileReader()) is None


def _hostile_lofs(head: bytes, memory: bytes, xml: bytes) -> list[tuple[str, bytes, str]]:
    whole = head + memory + xml
    shorter = memory[: len(memory) // 2]
    return [
        ("cut in the type block", whole[:10], "truncated: shorter than the Leica header"),
        ("cut in the memory header", whole[: len(head) - 3], "LOF memory header at 43 cut"),
        ("cut in the memory", whole[: len(head) + 1000], "truncated: the LOF memory declares"),
        ("cut after the memory", head + memory, "the file ends at .* with no XML after it"),
        ("cut in the XML", whole[:-10], "truncated: the XML header declares"),
        (
            "a memory shorter than the XML declares",
            head[:-8] + struct.pack("<Q", len(shorter)) + shorter + xml,
            f"truncated: memory block MemBlock_138 of {len(memory)} bytes is {len(shorter)} bytes",
        ),
        ("no 0x2A before a version", head[:43] + b"\x00" + head[44:] + memory + xml, "no 0x2A"),
        ("no XML block after the memory", head + memory + b"\x00" * 20, "no 0x70 XML block at"),
    ]


@pytest.mark.parametrize(
    "index", range(8), ids=[name for name, _, _ in _hostile_lofs(b"\0" * 62, b"", b"")]
)
def test_a_hostile_lof_is_a_clear_adapter_error(corpus: Path, tmp_path: Path, index: int) -> None:
    name, data, message = _hostile_lofs(*_lof_parts(corpus))[index]
    path = tmp_path / "hostile.lof"
    path.write_bytes(data)
    with pytest.raises(AdapterError, match=message) as caught:
        _extract(path)
    assert str(path) in str(caught.value), name
