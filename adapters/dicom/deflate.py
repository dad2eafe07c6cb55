"""Bounded inflation of a Deflated Explicit VR Little Endian data set: in steps up to the next
pixel data element header, within a byte budget, so a decompression bomb is refused.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import BinaryIO

from acqharvest.adapter_api import AdapterError
from acqharvest.adapters.dicom.head import PIXEL_TAGS

#: inflated bytes a deflated data set may take before its pixel data; past it, refused.
DEFLATED_HEADER_BUDGET = 32 * 1024 * 1024
#: inflated bytes past the header checked (and discarded) for a cut-short stream.
DEFLATED_CHECK_BUDGET = 256 * 1024 * 1024
_INFLATE_CHUNK = 64 * 1024
_PIXEL_TAG_BYTES = tuple(struct.pack("<HH", tag >> 16, tag & 0xFFFF) for tag in PIXEL_TAGS)


class Inflater:
    """Inflates a raw deflate stream from ``start`` in steps, within a byte budget."""

    def __init__(self, path: Path, handle: BinaryIO, start: int) -> None:
        self._path, self._handle = path, handle
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._searched = 0
        self.data = bytearray()
        handle.seek(start)

    def to_next_pixel_tag(self) -> bool:
        """Inflate until a pixel data element header is whole; True when the stream ended."""
        while True:
            found = _find_pixel_tag(self.data, self._searched)
            if found is not None and len(self.data) >= found + 12:
                self._searched = found + 1
                return False
            if self._inflater.eof:
                return True
            self._step()

    def check_rest(self) -> None:
        """Inflate the rest, discarding it, to tell a cut-short stream from a whole one.

        Costs time, not memory; stops unverified after ``DEFLATED_CHECK_BUDGET`` bytes.
        """
        inflated = 0
        while not self._inflater.eof and inflated < DEFLATED_CHECK_BUDGET:
            inflated += len(self._inflate())

    def _step(self) -> None:
        self.data += self._inflate()
        if len(self.data) > DEFLATED_HEADER_BUDGET:
            raise AdapterError(
                self._path,
                f"deflated data set inflates past {DEFLATED_HEADER_BUDGET >> 20} MiB before "
                "its pixel data; refused (headers are never that large)",
            )

    def _inflate(self) -> bytes:
        pending = self._inflater.unconsumed_tail or self._handle.read(_INFLATE_CHUNK)
        if not pending:
            raise AdapterError(self._path, "truncated: the deflated data set ends early")
        try:
            return self._inflater.decompress(pending, _INFLATE_CHUNK)
        except zlib.error as exc:
            raise AdapterError(self._path, f"corrupt deflated data set: {exc}") from exc


def _find_pixel_tag(data: bytearray, start: int) -> int | None:
    found = [i for tag in _PIXEL_TAG_BYTES if (i := data.find(tag, start)) >= 0]
    return min(found) if found else None
