"""JSON-safe copies of TIFF tag values and the metadata dicts tifffile parses."""

from __future__ import annotations

import enum
import math
from typing import Any

import numpy

#: arrays and byte strings larger than this are left out of ``original_metadata``.
MAX_ARRAY_BYTES = 1024
#: longer strings are cut (ImageJ labels, vendor INI blobs); the full text is still in the file.
MAX_TEXT = 64 * 1024
#: tags that locate pixel data or hold binary tables, never metadata.
SKIP_TAGS = frozenset(
    {
        "StripOffsets",
        "StripByteCounts",
        "TileOffsets",
        "TileByteCounts",
        "FreeOffsets",
        "FreeByteCounts",
        "JPEGTables",
        "JPEGQTables",
        "JPEGDCTables",
        "JPEGACTables",
        "ColorMap",
        "IJMetadata",
        "IJMetadataByteCounts",
        "SubIFDs",
        "ExifTag",
        "GPSTag",
        "InterColorProfile",
        "XMP",
        "IPTCNAA",
        "Photoshop",
    }
)


def tag_value(tag: Any) -> Any:
    """A JSON value for one page-0 tag, or None when it is skipped."""
    if tag.name in SKIP_TAGS:
        return None
    if tag.dtype_name != "ASCII" and tag.valuebytecount > MAX_ARRAY_BYTES:
        return None
    try:
        value = tag.value
    except Exception:  # noqa: BLE001 - a malformed tag must not stop the others
        return None
    if isinstance(value, dict):
        return None  # tifffile-parsed vendor structures are copied whole elsewhere
    return jsonable(value)


def jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-serializable copy; binary and oversized array values become None."""
    if value is None or isinstance(value, (bool, str)):
        return value[:MAX_TEXT] if isinstance(value, str) else value
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (int, numpy.integer)):
        return int(value)
    if isinstance(value, (float, numpy.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, (complex, numpy.complexfloating)):
        return [float(value.real), float(value.imag)]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None
    if depth > 8:
        return str(value)[:MAX_TEXT]
    if isinstance(value, numpy.ndarray):
        if value.nbytes > MAX_ARRAY_BYTES or value.dtype.kind in "OV":
            return None
        return jsonable(value.tolist(), depth + 1)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            converted = jsonable(item, depth + 1)
            if converted is not None:
                out[str(key)] = converted
        return out
    if isinstance(value, (list, tuple)):
        if len(value) * 8 > MAX_ARRAY_BYTES * 8 and all(isinstance(v, (int, float)) for v in value):
            return None
        return [jsonable(item, depth + 1) for item in value]
    return str(value)[:MAX_TEXT]
