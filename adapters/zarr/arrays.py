"""Zarr array metadata as the OME-Zarr adapter uses it: shape, chunk shape, dtype, bits and
codec, from ``.zarray`` (v2) or ``zarr.json`` (v3) values. Pure; ``store`` reads the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acqharvest.adapter_api import AdapterError


@dataclass(frozen=True, slots=True)
class Array:
    shape: tuple[int, ...]
    chunks: tuple[int, ...] | None
    dtype: str
    #: bits per value, when the dtype is a plain number type
    bits: int | None
    #: "blosc", "none" (stored raw) or another codec's name
    codec: str


def parse_shape(where: Path, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value
    ):
        raise AdapterError(where, f"array shape {value!r} is not a list of sizes")
    return tuple(value)


_NUMPY_KINDS = {"u": "uint", "i": "int", "f": "float", "c": "complex"}


def numpy_dtype(dtype: Any) -> tuple[str | None, int | None]:
    """(name, bits) of a Zarr v2 dtype such as ``<u2`` or ``|b1``."""
    if not isinstance(dtype, str) or len(dtype) < 3 or not dtype[2:].isdigit():
        return None, None
    kind, size = dtype[1], int(dtype[2:])
    if kind == "b":
        return "bool", 8 * size
    if kind not in _NUMPY_KINDS:
        return None, None
    return f"{_NUMPY_KINDS[kind]}{8 * size}", 8 * size


def bits_of_name(dtype: Any) -> int | None:
    """Bits of a Zarr v3 data_type such as ``uint16`` or ``float32``."""
    if dtype == "bool":
        return 8
    digits = "".join(ch for ch in str(dtype) if ch.isdigit())
    return int(digits) if digits else None
