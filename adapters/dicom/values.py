"""DICOM values as package JSON: elements converted with pydicom's complaints kept apart (and
their values dropped), scalars and sequences as JSON, DA/TM/DT as RFC 3339 times.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import PersonName

from acqharvest.adapters.dicom.head import PIXEL_TAGS
from acqharvest.adapters.dicom.reader import BINARY_VRS

#: sequences nest at most this deep in ``original_metadata``.
MAX_DEPTH = 3


# --------------------------------------------------------------------------- warnings

#: a value as pydicom quotes it in a message: ``'...'``, ``"..."`` or ``b'...'``.
_QUOTED = re.compile(r"b?'(?:[^'\\]|\\.)*'" + r'|b?"(?:[^"\\]|\\.)*"')


def without_values(message: str) -> str:
    """A pydicom message with the values it quotes replaced: packages must not carry them."""
    text = message.split(" Please see ", 1)[0]
    return _QUOTED.sub("<value>", text).strip()


def convert_all(ds: Dataset, depth: int = 0) -> list[str]:
    """Convert every element now, so each pydicom complaint is tied to the element it is about.

    Returns one note per complaint, naming the tag and keyword and the kind of problem
    (never the value). Later reads of the same elements raise no warning again.
    """
    notes: list[str] = []
    for tag in list(ds.keys()):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            elem = ds[tag]
        name = f"({tag.group:04X},{tag.element:04X}) {elem.keyword or 'private'}"
        notes.extend(f"{name}: {without_values(str(w.message))}" for w in caught)
        if elem.VR == "SQ" and depth < MAX_DEPTH:
            for item in elem.value or ():
                notes.extend(convert_all(item, depth + 1))
    return notes


# --------------------------------------------------------------------------- values


def value(ds: Dataset, keyword: str) -> Any:
    """The element's value, or None when absent or empty."""
    elem = ds.get(keyword)
    if elem is None:
        return None
    result = elem.value if isinstance(elem, DataElement) else elem
    if result is None or result == "" or (isinstance(result, MultiValue) and len(result) == 0):
        return None
    return result


def first_item(ds: Dataset, *keywords: str) -> Dataset | None:
    """Follow ``keywords`` through the first item of each sequence."""
    current: Dataset | None = ds
    for keyword in keywords:
        if current is None:
            return None
        seq = value(current, keyword)
        current = seq[0] if seq else None
    return current


def scalar(item: Any) -> Any:
    """A JSON value for one DICOM value (not a sequence)."""
    if isinstance(item, PersonName):
        return str(item)
    if isinstance(item, BaseTag):
        return f"({item.group:04X},{item.element:04X})"
    if isinstance(item, bool) or item is None:
        return item
    if isinstance(item, int):
        return int(item)
    if isinstance(item, float):
        return float(item)
    if isinstance(item, UID):
        return str(item)
    if isinstance(item, (bytes, bytearray)):
        return None
    if isinstance(item, str):
        return str(item)
    try:  # DSdecimal and other numeric wrappers
        return float(item)
    except (TypeError, ValueError):
        return str(item)


def dataset_json(ds: Dataset, depth: int = 0) -> dict[str, Any]:
    """Keyword -> JSON value for every public, non-binary element of ``ds``."""
    out: dict[str, Any] = {}
    for elem in _elements(ds):
        key = elem.keyword
        if key in out:
            key = f"{key}_{elem.tag.group:04X}"
        converted = element_json(elem, depth)
        if converted is not _SKIP:
            out[key] = converted
    return out


_SKIP = object()


def _elements(ds: Dataset) -> Iterator[DataElement]:
    tags = list(ds.keys())
    for tag in tags:
        if tag.is_private or int(tag) in PIXEL_TAGS:
            continue
        elem = ds[tag]
        if not elem.keyword or elem.VR in BINARY_VRS:
            continue
        yield elem


def element_json(elem: DataElement, depth: int) -> Any:
    if elem.VR == "SQ":
        items = list(elem.value or ())
        if depth + 1 > MAX_DEPTH:
            return f"<sequence of {len(items)} items not expanded>"
        return [dataset_json(item, depth + 1) for item in items]
    raw = elem.value
    if isinstance(raw, (bytes, bytearray)):
        return _SKIP
    if isinstance(raw, (MultiValue, list)):
        return [scalar(v) for v in raw]
    return scalar(raw)


# --------------------------------------------------------------------------- dates

_DA = re.compile(r"^(\d{4})\.?(\d{2})\.?(\d{2})$")
_TM = re.compile(r"^(\d{2}):?(\d{2})?:?(\d{2})?(\.\d{1,6})?\d*$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?\d*([+-]\d{4})?$")
_TZ = re.compile(r"^[+-]\d{4}$")


def rfc3339(date: Any, time: Any, offset: Any) -> str | None:
    """``YYYY-MM-DDTHH:MM:SS[.f][+HH:MM]`` from DA/TM text (old dotted forms too)."""
    match = _DA.match(str(date or "").strip())
    if not match:
        return None
    y, mo, d = match.groups()
    if not (1 <= int(mo) <= 12 and 1 <= int(d) <= 31):
        return None
    day = f"{y}-{mo}-{d}"
    tmatch = _TM.match(str(time or "").strip())
    if not tmatch:
        return day
    hh, mm, ss, frac = tmatch.groups()
    if int(hh) > 23 or int(mm or 0) > 59 or int(ss or 0) > 60:
        return day
    return f"{day}T{hh}:{mm or '00'}:{ss or '00'}{frac or ''}{_offset(offset)}"


def rfc3339_dt(text: Any, offset: Any) -> str | None:
    """The same from a DT value, whose own offset wins over TimezoneOffsetFromUTC."""
    match = _DT.match(str(text or "").strip())
    if not match:
        return None
    y, mo, d, hh, mm, ss, frac, own = match.groups()
    if mo is None or d is None:
        return None
    time = f"{hh}{mm or ''}{ss or ''}{frac or ''}" if hh else None
    return rfc3339(f"{y}{mo}{d}", time, own or offset)


def _offset(offset: Any) -> str:
    text = str(offset or "").strip()
    if not _TZ.match(text):
        return ""
    return f"{text[:3]}:{text[3:]}"
