"""Cheap looks into a file for ``claim``: TIFF magic, the first ImageDescription, OME-XML.

No tifffile here: a claim runs for every settled file, so it parses the first IFD by
hand and reads at most :data:`CLAIM_BUDGET` bytes of description through the agent's
reader (usually none beyond the head the agent already read).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from acqharvest.adapter_api import Reader

MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: bytes of ImageDescription (or companion XML) a claim may read.
CLAIM_BUDGET = 64 * 1024
#: an IFD with more entries than this is not one a claim will walk.
_MAX_ENTRIES = 4096
_IMAGE_DESCRIPTION = 270
#: every OME-XML schema year's namespace starts with this.
OME_NAMESPACE = b"openmicroscopy.org/Schemas/OME/"
#: TIFF types whose values are bytes: BYTE, ASCII, UNDEFINED.
_BYTE_TYPES = (1, 2, 7)


@dataclass(frozen=True, slots=True)
class Text:
    """Leading bytes of a metadata text, and whether they are all of it."""

    data: bytes
    complete: bool


def is_tiff(head: bytes) -> bool:
    return head[:4] in MAGIC


def first_description(path: Path, head: bytes, reader: Reader) -> Text | None:
    """The ImageDescription of IFD 0, up to :data:`CLAIM_BUDGET` bytes; None when absent.

    Uses ``head`` where the IFD and value lie inside it, ``reader.read`` otherwise.
    Never raises for malformed files: they simply have no description here.
    """
    try:
        return _first_description(path, head, reader)
    except (struct.error, OSError, ValueError):
        return None


def _first_description(path: Path, head: bytes, reader: Reader) -> Text | None:
    if not is_tiff(head) or len(head) < 16:
        return None
    order = "<" if head[:2] == b"II" else ">"
    big = head[2:4] in (b"+\x00", b"\x00+")
    if big:
        (ifd,) = struct.unpack_from(order + "Q", head, 8)
        count_format, entry_size, value_size = "Q", 20, 8
    else:
        (ifd,) = struct.unpack_from(order + "I", head, 4)
        count_format, entry_size, value_size = "H", 12, 4
    count_size = struct.calcsize(count_format)

    def span(offset: int, length: int) -> bytes:
        if offset + length <= len(head):
            return head[offset : offset + length]
        return reader.read(path, offset, length)

    (entries,) = struct.unpack(order + count_format, span(ifd, count_size))
    if not 0 < entries <= _MAX_ENTRIES:
        return None
    table = span(ifd + count_size, entries * entry_size)
    entry_format = order + ("HHQ" if big else "HHI")
    for index in range(len(table) // entry_size):
        start = index * entry_size
        code, dtype, number = struct.unpack_from(entry_format, table, start)
        if code != _IMAGE_DESCRIPTION or dtype not in _BYTE_TYPES:
            continue
        value_field = table[start + entry_size - value_size : start + entry_size]
        if number <= value_size:
            data = value_field[:number]
        else:
            (offset,) = struct.unpack(order + ("Q" if big else "I"), value_field)
            data = span(offset, min(number, CLAIM_BUDGET))
        complete = number <= CLAIM_BUDGET and len(data) == number
        return Text(data.rstrip(b"\x00"), complete)
    return None


def companion_text(path: Path, head: bytes, size: int, reader: Reader) -> Text | None:
    """The leading bytes of an OME-XML companion file; None when ``head`` is not OME-XML."""
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not start.startswith(b"<") or OME_NAMESPACE not in head:
        return None
    if size <= len(head):
        return Text(head[:size], True)
    data = reader.read(path, 0, min(size, CLAIM_BUDGET))
    return Text(data, size <= CLAIM_BUDGET and len(data) == size)
