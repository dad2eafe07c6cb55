"""Hand-made hostile files: empty, truncated, huge declared sizes, and hostile OME-XML.

Each goes through the real adapters in this process (``tests/fuzz/harness.py``): the
outcome is a clean ``AdapterError``, no claim, or a harmless success, never another
exception, a hang or a file read from outside the watched folder.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict
from pathlib import Path

import numpy
import pytest
import tifffile

from tests.fuzz.harness import SEEDS, placed, run_adapters, seed_bytes, time_bound

_SEED_BYTES = seed_bytes()


def outcome_of(path: Path) -> dict[str, str | None]:
    with time_bound():
        return run_adapters(path).by_adapter


def test_a_zero_byte_file_is_claimed_by_nobody(tmp_path: Path) -> None:
    for name in ("empty.dcm", "empty.ome.tif", "empty"):
        (tmp_path / name).write_bytes(b"")
        assert set(outcome_of(tmp_path / name).values()) == {None}


@pytest.mark.parametrize("seed", SEEDS)
def test_truncated_headers_fail_cleanly(tmp_path: Path, seed: str) -> None:
    data = _SEED_BYTES[seed]
    path = placed(tmp_path, seed)
    path.parent.mkdir(exist_ok=True)
    claimed_failures = 0
    for length in sorted({1, 4, 8, 16, 128, 132, 136, 200, 512, len(data) // 2, len(data) - 1}):
        path.write_bytes(data[:length])
        outcome = outcome_of(path)
        claimed_failures += sum(v not in (None, "ok") for v in outcome.values())
    # some cut must be noticed: the test would pass vacuously if nothing claimed anything
    assert claimed_failures > 0


def _explicit_vr_dicom(elements: bytes) -> bytes:
    """A Part 10 file, explicit VR little endian, with the given data set bytes."""
    syntax = b"1.2.840.10008.1.2.1\0"
    meta_element = b"\x02\x00\x10\x00UI" + struct.pack("<H", len(syntax)) + syntax
    group_length = b"\x02\x00\x00\x00UL\x04\x00" + struct.pack("<I", len(meta_element))
    return b"\0" * 128 + b"DICM" + group_length + meta_element + elements


def _element(group: int, number: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    declared = len(value) if length is None else length
    if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
        return (
            struct.pack("<HH", group, number) + vr + b"\0\0" + struct.pack("<I", declared) + value
        )
    return struct.pack("<HH", group, number) + vr + struct.pack("<H", declared) + value


@pytest.mark.parametrize(
    "declared", [0xFFFFFFF0, 0x7FFFFFFF, 0x10000000], ids=["4GiB", "2GiB", "256MiB"]
)
def test_a_dicom_element_declaring_a_huge_length_fails_cleanly(
    tmp_path: Path, declared: int
) -> None:
    modality = _element(0x0008, 0x0060, b"CS", b"MR")
    huge = _element(0x0011, 0x1010, b"UN", b"x" * 16, length=declared)
    path = tmp_path / "huge.dcm"
    path.write_bytes(_explicit_vr_dicom(modality + huge))
    outcome = outcome_of(path)
    assert outcome["dicom"] is not None  # it is DICOM: claimed, then read or refused


def test_a_tiff_tag_declaring_a_huge_count_fails_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "huge.tif"
    tifffile.imwrite(path, numpy.zeros((4, 4), numpy.uint8), description="x" * 64)
    data = bytearray(path.read_bytes())
    (first,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[first : first + 2])
    for index in range(count):
        entry = first + 2 + 12 * index
        if struct.unpack("<H", data[entry : entry + 2])[0] == 270:  # ImageDescription
            data[entry + 4 : entry + 8] = struct.pack("<I", 0x3FFFFFFF)
    path.write_bytes(bytes(data))
    outcome = outcome_of(path)
    assert outcome["tiff"] is not None


def _ome_tiff(path: Path, xml: str) -> Path:
    tifffile.imwrite(path, numpy.zeros((4, 4), numpy.uint8), description=xml, metadata=None)
    return path


_OME = '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">{}</OME>'
_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE OME [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i else "&lol;" * 10}">' for i in range(9))
    + ']><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
    '<Image ID="Image:0" Name="&lol8;"/></OME>'
)
_EXTERNAL = (
    '<?xml version="1.0"?><!DOCTYPE OME [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
    '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
    '<Image ID="Image:0" Name="&secret;"/></OME>'
)
_QUADRATIC = (
    f'<?xml version="1.0"?><!DOCTYPE OME [<!ENTITY a "{"a" * 50_000}">]>'
    '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
    f'<Image ID="Image:0" Name="{"&a;" * 50_000}"/></OME>'
)
HOSTILE_XML = {
    "deeply-nested": _OME.format("<Image>" * 200_000 + "</Image>" * 200_000),
    "billion-laughs": _LAUGHS,
    "quadratic-blowup": _QUADRATIC,
    "external-entity": _EXTERNAL,
    "huge-attribute": _OME.format(f'<Image ID="Image:0" Name="{"N" * 20_000_000}"/>'),
    "unclosed": _OME.format("<Image ID='Image:0'>")[:-6],
    # declared encodings expat refuses with a ValueError or a LookupError, not an
    # ExpatError (both found by tests/fuzz/test_atheris.py)
    "utf7-declared": '<?xml version="1.0" encoding="UTF-7"?>' + _OME.format(""),
    "unknown-encoding": '<?xml version="1.0" encoding="MMMUTF-8"?>' + _OME.format(""),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_XML))
def test_hostile_ome_xml_fails_cleanly_and_reads_nothing_else(tmp_path: Path, kind: str) -> None:
    path = _ome_tiff(tmp_path / f"{kind}.ome.tif", HOSTILE_XML[kind])
    with time_bound():
        outcome = run_adapters(path)
    assert outcome.by_adapter["tiff"] is not None, "an OME-TIFF must be claimed by the tiff adapter"
    text = json.dumps([asdict(output) for output in outcome.outputs.values()], default=str)
    assert "root:" not in text, "an external entity was resolved"
    assert "lollollol" not in text, "entities were expanded"
