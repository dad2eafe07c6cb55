"""The conformance kit over the built-in adapters and every relevant corpus file.

One ``AdapterConformance`` subclass per built-in entry point, reading the golden cases in
``adapters/<name>/cases/`` against the corpus, with format-specific lies: a DICOM element
or pixel data length past the end of the file; a TIFF IFD offset, tag count or strip
offset past the end of the file. Every case must get at least one lie (the kit fails a
case without one), so a new sample whose layout these helpers cannot patch (a deflated or
big-endian DICOM data set) needs a lie taught here. Regenerate the goldens with
``pytest tests/adapters/test_builtin_conformance.py --acqharvest-regenerate``.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import io
import json
import re
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import ClassVar

import tifffile
from pydicom.dataelem import RawDataElement
from pydicom.filereader import _read_file_meta_info, data_element_generator, read_preamble
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from acqharvest.registry import GROUP
from acqharvest.testing import AdapterConformance
from tests.conftest import CORPUS, REPO

BUILTINS = ("dicom", "tiff", "czi", "nd2", "lif", "zarr", "nifti", "imzml")
#: a length no file in the corpus reaches, yet not DICOM's "undefined length" marker.
PAST_EOF = 0x7FFFFFF0
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


def test_every_builtin_entry_point_has_a_conformance_class() -> None:
    names = {ep.name for ep in importlib.metadata.entry_points(group=GROUP)}
    assert set(BUILTINS) <= names
    from tests.adapters.test_czi import TestCziConformance
    from tests.adapters.test_lif import TestLifConformance
    from tests.adapters.test_nd2 import TestNd2Conformance

    classes = (
        TestDicomConformance,
        TestTiffConformance,
        TestCziConformance,
        TestNd2Conformance,
        TestLifConformance,
        TestZarrConformance,
        TestNiftiConformance,
        TestImzmlConformance,
    )
    assert {cls.entry_point for cls in classes} == set(BUILTINS)
    # a built-in lies about its own headers: a waiver is for formats with no header to lie in
    assert all(cls.header_lies_waiver is None for cls in classes)
    for name in BUILTINS:
        assert list((REPO / "adapters" / name / "cases").glob("*.yaml")), name


class _Builtin(AdapterConformance):
    samples_root: ClassVar[Path | None] = CORPUS
    corpus_root: ClassVar[Path | None] = CORPUS


class TestDicomConformance(_Builtin):
    entry_point = "dicom"
    cases_dir = REPO / "adapters" / "dicom" / "cases"

    def truncations(self, data: bytes) -> dict[str, int]:
        cuts = super().truncations(data)
        elements = list(_dicom_elements(data))
        # inside the value of an element of the data set, well before any pixel data (a
        # cut between two elements is a header that ends cleanly: packaged incomplete)
        inside = [tell + 1 for _, tell, _, length in elements if 2 <= length < 0xFFFFFFFF]
        if len(inside) > 2:
            cuts["inside the data set"] = inside[len(inside) // 2]
        return cuts

    def wrong_magic(self, data: bytes) -> bytes:
        if data[128:132] == b"DICM":
            return data[:128] + b"NOPE" + data[132:]
        return super().wrong_magic(data)  # no preamble: the first elements are the magic

    def header_lies(self, data: bytes) -> Iterator[tuple[str, bytes]]:
        elements = list(_dicom_elements(data))
        header = [e for e in elements if 0x0008 <= e[0] >> 16 < 0x7FE0 and e[3] != 0xFFFFFFFF]
        long_field = next((e for e in header if e[2] == 4), None)
        # a 2-byte length only reaches past the end of a small file
        short_field = next((e for e in header if e[1] + 0xFFFF > len(data)), None)
        for tag, tell, field_size, _ in filter(None, (long_field or short_field,)):
            lie = struct.pack("<I", PAST_EOF) if field_size == 4 else b"\xff\xff"
            yield f"element {_tag(tag)} length past EOF", _patch(data, tell - field_size, lie)
        pixels = next((e for e in elements if e[0] in PIXEL_TAGS), None)
        if pixels is None:
            return
        tag, tell, _, length = pixels
        yield f"{_tag(tag)} length past EOF", _patch(data, tell - 4, struct.pack("<I", PAST_EOF))
        if length == 0xFFFFFFFF:  # encapsulated: the first item (the offset table) lies too
            yield (
                "first pixel data item length past EOF",
                _patch(data, tell + 4, struct.pack("<I", PAST_EOF)),
            )


class TestTiffConformance(_Builtin):
    entry_point = "tiff"
    cases_dir = REPO / "adapters" / "tiff" / "cases"

    def truncations(self, data: bytes) -> dict[str, int]:
        """The default cuts, made inside the bytes the TIFF structures declare.

        A vendor may append a block no TIFF structure points to (the Olympus SIS sample
        ends in 60 KB of an undocumented property stream after its last IFD); a headers-only
        reader cannot tell such a tail is missing, so cuts are measured on the declared part.
        A companion ``.ome`` file (XML) gets the default cuts.
        """
        if not _is_tiff(data):
            return super().truncations(data)
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            first_ifd = tif.pages.first.offset
            declared = _tiff_declared_end(tif)
        cuts = super().truncations(data[:declared])
        return {**cuts, "inside the first IFD": first_ifd + 6}

    def header_lies(self, data: bytes) -> Iterator[tuple[str, bytes]]:
        if not _is_tiff(data):
            # a companion .ome file: its XML declaration names an encoding its bytes are not in
            declared = b'encoding="UTF-8"'
            if declared in data[:100]:
                yield "XML declares UTF-16", data.replace(declared, b'encoding="UTF-16"', 1)
            return
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            layout, page = tif.tiff, tif.pages.first
            order = layout.byteorder
            first_ifd = 8 if layout.version == 43 else 4
            yield (
                "first IFD offset past EOF",
                _patch(data, first_ifd, struct.pack(layout.offsetformat, len(data) + 4096)),
            )
            count_at = layout.tagsize - layout.offsetsize * 2  # code + type, then the count
            for tag in page.tags.values():
                if tag.valueoffset != tag.offset + count_at + layout.offsetsize:
                    yield (
                        f"{tag.name} count past EOF",
                        _patch(
                            data,
                            tag.offset + count_at,
                            struct.pack(order + layout.offsetformat[1], len(data)),
                        ),
                    )
                    break
            strips = page.tags.get("StripOffsets") or page.tags.get("TileOffsets")
            if strips is not None and strips.dtype in (4, 16):
                fmt = order + ("I" if strips.dtype == 4 else "Q")
                yield (
                    f"first {strips.name} value past EOF",
                    _patch(data, strips.valueoffset, struct.pack(fmt, len(data) + 4096)),
                )


class TestZarrConformance(_Builtin):
    entry_point = "zarr"
    cases_dir = REPO / "adapters" / "zarr" / "cases"

    def header_lies(self, data: bytes) -> Iterator[tuple[str, bytes]]:
        # the root metadata names a level-0 dataset the store does not hold
        lie = {"multiscales": [{"axes": ["y", "x"], "datasets": [{"path": "99"}]}]}
        yield "multiscales dataset not in the store", json.dumps(lie).encode()


class TestNiftiConformance(_Builtin):
    entry_point = "nifti"
    cases_dir = REPO / "adapters" / "nifti" / "cases"

    def header_lies(self, data: bytes) -> Iterator[tuple[str, bytes]]:
        packed = data[:2] == b"\x1f\x8b"
        raw = gzip.decompress(data) if packed else data
        size = struct.unpack("<i", raw[:4])[0]
        order = "<" if size in (348, 540) else ">"
        version_2 = struct.unpack(f"{order}i", raw[:4])[0] == 540
        # dim[1] (the width) and vox_offset, each far past the voxels the file holds
        dim1, dim_format = (24, "q") if version_2 else (42, "h")
        offset, offset_format = (168, "q") if version_2 else (108, "f")
        lies = {
            "dim[1] past the end": _patch(raw, dim1, struct.pack(f"{order}{dim_format}", 30000)),
            "vox_offset past the end": _patch(
                raw, offset, struct.pack(f"{order}{offset_format}", len(raw) * 16)
            ),
        }
        for label, lie in lies.items():
            yield label, gzip.compress(lie, mtime=0) if packed else lie


class TestImzmlConformance(_Builtin):
    entry_point = "imzml"
    cases_dir = REPO / "adapters" / "imzml" / "cases"

    def truncations(self, data: bytes) -> dict[str, int]:
        cuts = super().truncations(data)
        # the last byte is a newline nobody needs: cut inside the closing tag instead
        cuts["last byte missing"] = data.rstrip().rindex(b">")
        return cuts

    def header_lies(self, data: bytes) -> Iterator[tuple[str, bytes]]:
        offsets = list(re.finditer(rb'accession="IMS:1000102"[^>]*?value="(\d+)"', data))
        if offsets:
            start, end = offsets[-1].span(1)
            yield "last external offset past the .ibd", data[:start] + b"999999999" + data[end:]


def _is_tiff(data: bytes) -> bool:
    return data[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


def _tiff_declared_end(tif: tifffile.TiffFile) -> int:
    """The end of the furthest IFD, tag value or strip/tile that tifffile finds."""
    ends = [8]
    for page in tif.pages:
        if not isinstance(page, tifffile.TiffPage):
            continue
        layout = tif.tiff
        ends.append(
            page.offset + layout.tagnosize + len(page.tags) * layout.tagsize + layout.offsetsize
        )
        for tag in page.tags.values():
            if tag.valuebytecount > layout.tagoffsetthreshold:
                ends.append(tag.valueoffset + tag.valuebytecount)
        ends += [o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=False) if c]
    return max(ends)


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _patch(data: bytes, offset: int, replacement: bytes) -> bytes:
    return data[:offset] + replacement + data[offset + len(replacement) :]


def _dicom_elements(data: bytes) -> Iterable[tuple[int, int, int, int]]:
    """(tag, value offset, size of the length field, length) of each top-level element.

    Covers little-endian, non-deflated data sets with or without preamble and file meta;
    yields nothing for the others (their lies would need re-encoding).
    """
    handle = io.BytesIO(data)
    read_preamble(handle, force=True)
    meta = _read_file_meta_info(handle)
    syntax = meta.get("TransferSyntaxUID")
    if syntax in (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian):
        return
    start = handle.tell()
    implicit = syntax == ImplicitVRLittleEndian or (
        syntax is None and not data[start + 4 : start + 6].isalpha()
    )
    for raw in data_element_generator(handle, implicit, True, defer_size=256):
        if not isinstance(raw, RawDataElement):
            continue
        long_length = implicit or raw.VR in {
            "OB",
            "OD",
            "OF",
            "OL",
            "OV",
            "OW",
            "SQ",
            "UC",
            "UN",
            "UR",
            "UT",
            "SV",
            "UV",
        }
        yield int(raw.tag), raw.value_tell, 4 if long_length else 2, raw.length
