"""Truncation check: every byte range a TIFF's structures declare must lie inside the file.

tifffile tolerates a file whose declared extents run past its end: it drops tags whose
values it cannot read and ends the page list at an IFD it cannot reach, so a cut-short
file would otherwise extract as if whole. This walks the structures by hand from the raw
IFD entries: the whole IFD chain (every page, not only those the adapter reports), the
Exif, GPS, Interoperability and SubIFD trees, every out-of-line tag value, every strip
and tile (from the offset and byte-count arrays, never the pixel data) and the Olympus
SIS block with its records. It reads IFD entries, offset arrays and the SIS record table
only, so a headers-only byte budget holds.

Bytes no structure points to (a vendor's trailing block that only its own software
knows about) cannot be checked: a copy cut inside them reads as complete.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from acqharvest.adapter_api import AdapterError, Reader

#: bytes per value of each TIFF field type (unknown types declare no extent).
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
TYPE_SIZES.update({16: 8, 17: 8, 18: 8})
_ARRAY_FORMATS = {3: "H", 4: "I", 13: "I", 16: "Q", 18: "Q"}
#: data offset tag -> its byte-count tag (strips, tiles, free space).
DATA_TAGS = {273: 279, 324: 325, 288: 289}
#: tags whose values are offsets of further IFDs: SubIFDs, Exif, GPS, Interoperability.
IFD_TAGS = frozenset({330, 34665, 34853, 40965})
OLYMPUS_SIS = 33560
#: ImageWidth and ImageLength: an IFD with both over 0 holds an image.
IMAGE_WIDTH, IMAGE_LENGTH = 256, 257
#: an offset array larger than this is checked by its last entry only (strips and tiles
#: are written in order), so a gigapixel slide's tile table is not read whole.
ARRAY_BUDGET = 64 * 1024
#: more IFDs than this in one file is a loop or a lie, not an acquisition.
MAX_IFDS = 1_000_000
#: bytes tifffile reads from an SIS type-1 (calibration) record.
SIS_CALIBRATION_BYTES = 112


@dataclass(frozen=True, slots=True)
class _Layout:
    byteorder: str
    big: bool

    @property
    def count_format(self) -> str:
        return self.byteorder + ("Q" if self.big else "H")

    @property
    def entry_format(self) -> str:
        return self.byteorder + ("HHQ8s" if self.big else "HHI4s")

    @property
    def offset_format(self) -> str:
        return self.byteorder + ("Q" if self.big else "I")

    @property
    def inline_bytes(self) -> int:
        return 8 if self.big else 4


@dataclass(frozen=True, slots=True)
class _Entry:
    code: int
    dtype: int
    count: int
    raw: bytes

    def length(self) -> int:
        return self.count * TYPE_SIZES.get(self.dtype, 0)


class _Walker:
    def __init__(self, path: Path, handle: BinaryIO, size: int) -> None:
        self.path, self.handle, self.size = path, handle, size
        self.seen: set[int] = set()
        #: True once an IFD gave an ImageWidth and an ImageLength over 0.
        self.imaged = False

    def fail(self, what: str, end: int) -> AdapterError:
        return AdapterError(
            self.path, f"truncated: {what} runs to byte {end}, the file has {self.size}"
        )

    def read(self, offset: int, length: int, what: str) -> bytes:
        if offset + length > self.size:
            raise self.fail(what, offset + length)
        self.handle.seek(offset)
        data = self.handle.read(length)
        if len(data) < length:  # the file shrank while we read it
            raise self.fail(what, offset + length)
        return data

    def layout(self) -> tuple[_Layout, int]:
        head = self.read(0, 16 if self.size >= 16 else 8, "the TIFF header")
        byteorder = {b"II": "<", b"MM": ">"}.get(head[:2])
        if byteorder is None:
            raise AdapterError(self.path, "not a TIFF: no byte-order mark")
        (version,) = struct.unpack_from(byteorder + "H", head, 2)
        layout = _Layout(byteorder, big=version == 43)
        at = 8 if layout.big else 4
        if len(head) < at + (8 if layout.big else 4):
            raise self.fail("the TIFF header", at + 8)
        (first,) = struct.unpack_from(layout.offset_format, head, at)
        return layout, first

    def chain(self, layout: _Layout, offset: int, what: str) -> None:
        """Check the IFD at ``offset`` and every IFD its next-links and sub-IFD tags reach."""
        pending = [(offset, what)]
        while pending:
            offset, what = pending.pop()
            while offset:
                if offset in self.seen:
                    break  # a loop: tifffile reports it; the extents were checked once
                if len(self.seen) >= MAX_IFDS:
                    raise AdapterError(self.path, f"more than {MAX_IFDS} IFDs")
                self.seen.add(offset)
                entries, offset = self.ifd(layout, offset, what)
                pending.extend(self.values(layout, entries))
                what = "an IFD"

    def ifd(self, layout: _Layout, offset: int, what: str) -> tuple[list[_Entry], int]:
        count_size = 8 if layout.big else 2
        (count,) = struct.unpack(
            layout.count_format, self.read(offset, count_size, f"{what} at byte {offset}")
        )
        entry_size = 20 if layout.big else 12
        next_size = 8 if layout.big else 4
        block = self.read(
            offset + count_size, count * entry_size + next_size, f"{what} at byte {offset}"
        )
        entries = [
            _Entry(*struct.unpack_from(layout.entry_format, block, index * entry_size))
            for index in range(count)
        ]
        (following,) = struct.unpack_from(layout.offset_format, block, count * entry_size)
        if not self.imaged:
            self.imaged = min(self.extent(layout, entries)) > 0
        if following and following + count_size > self.size:
            raise self.fail(f"the next IFD after byte {offset}", following + count_size)
        return entries, following

    def values(self, layout: _Layout, entries: list[_Entry]) -> Iterator[tuple[int, str]]:
        """Check each entry's extent; yield the sub-IFDs they point to."""
        by_code = {entry.code: entry for entry in entries}
        for entry in entries:
            length = entry.length()
            if length > layout.inline_bytes:
                (start,) = struct.unpack(layout.offset_format, entry.raw)
                if start + length > self.size:
                    raise self.fail(f"the value of tag {entry.code}", start + length)
            if entry.code in DATA_TAGS and DATA_TAGS[entry.code] in by_code:
                self.data(layout, entry, by_code[DATA_TAGS[entry.code]])
            elif entry.code in IFD_TAGS or entry.dtype in (13, 18):
                for offset in self.array(layout, entry, last_only=False):
                    yield offset, f"the IFD of tag {entry.code}"
            elif entry.code == OLYMPUS_SIS:
                self.sis(layout, entry)

    def array(self, layout: _Layout, entry: _Entry, *, last_only: bool) -> tuple[int, ...]:
        code = _ARRAY_FORMATS.get(entry.dtype)
        if code is None or entry.count == 0:
            return ()
        width = TYPE_SIZES[entry.dtype]
        length = entry.count * width
        if length <= layout.inline_bytes:
            data = entry.raw[:length]
        else:
            (start,) = struct.unpack(layout.offset_format, entry.raw)
            skip = length - width if last_only else 0
            data = self.read(start + skip, length - skip, f"the value of tag {entry.code}")
        return struct.unpack(f"{layout.byteorder}{len(data) // width}{code}", data)

    def extent(self, layout: _Layout, entries: list[_Entry]) -> tuple[int, int]:
        """(width, height) an IFD declares, 0 for a dimension it lacks."""
        sizes = {IMAGE_WIDTH: 0, IMAGE_LENGTH: 0}
        for entry in entries:
            if entry.code in sizes and entry.count == 1:
                sizes[entry.code] = next(iter(self.array(layout, entry, last_only=True)), 0)
        return sizes[IMAGE_WIDTH], sizes[IMAGE_LENGTH]

    def data(self, layout: _Layout, offsets: _Entry, counts: _Entry) -> None:
        big = max(offsets.length(), counts.length()) > ARRAY_BUDGET
        starts = self.array(layout, offsets, last_only=big)
        lengths = self.array(layout, counts, last_only=big)
        ends = [s + n for s, n in zip(starts, lengths, strict=False) if s and n]
        if ends and max(ends) > self.size:
            raise self.fail("image data", max(ends))

    def sis(self, layout: _Layout, entry: _Entry) -> None:
        """Olympus SIS: a 60-byte header, an 8-byte record table, calibration record."""
        (start,) = self.array(layout, entry, last_only=True)[-1:] or (0,)
        if not start:
            return
        header = self.read(start, 60, "the Olympus SIS block")
        if header[:4] != b"SIS0":
            return  # not the structure tifffile reads; tifffile notes it
        (records,) = struct.unpack_from("<H", header, 58)
        table = self.read(start + 60, 8 * records, "the Olympus SIS record table")
        for index in range(records):
            kind, _, offset = struct.unpack_from("<hhI", table, index * 8)
            length = SIS_CALIBRATION_BYTES if kind == 1 else 1
            if offset + length > self.size:
                raise self.fail(f"Olympus SIS record {index}", offset + length)


def check_extents(path: Path, handle: BinaryIO, size: int) -> int:
    """Raise ``AdapterError`` naming ``path`` when a declared extent lies past ``size``,
    or when no IFD declares an image (width and height over 0).

    Returns the number of IFDs checked.
    """
    walker = _Walker(path, handle, size)
    layout, first = walker.layout()
    if not first:
        raise AdapterError(path, "no IFD: the header's first-IFD offset is 0")
    walker.chain(layout, first, "the first IFD")
    if not walker.imaged:
        # A sparse or self-referencing file would otherwise read as a complete 0x0 image.
        raise AdapterError(
            path, "no image with an extent: no IFD has an ImageWidth and ImageLength over 0"
        )
    return len(walker.seen)


def check_member(path: Path, reader: Reader) -> None:
    """``check_extents`` for a file of a multi-file set, whose other metadata is not read."""
    with reader.open(path) as handle:
        size = handle.seek(0, 2)
        if size == 0:
            raise AdapterError(path, "empty file")
        check_extents(path, handle, size)
