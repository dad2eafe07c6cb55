"""OME-XML (an OME-TIFF ImageDescription or a ``.companion.ome`` file) to normalized fields.

Parsed with :mod:`acqharvest.adapters.safexml` (DTDs and entities refused, depth and
size capped); namespaces are ignored so every OME schema year reads the same way.
Every quantity honours its OME unit attribute (``PhysicalSizeXUnit``,
``EmissionWavelengthUnit``, ``ExposureTimeUnit``...) and falls back to the schema's
default unit when the attribute is absent. A quantity that is not a finite positive number
in a known unit, and an ``AcquisitionDate`` that is not RFC 3339, are dropped with a
warning naming the element and attribute.
"""

from __future__ import annotations

import math
import posixpath
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from acqharvest.adapter_api import is_rfc3339
from acqharvest.adapters import safexml
from acqharvest.adapters.safexml import local
from acqharvest.adapters.safexml import parse as parse_xml

__all__ = ["OmeLinks", "links", "normalized", "parse_xml", "plane_count", "to_um"]

#: OME UnitsLength symbols (and ImageJ's spellings), as micrometres per unit.
UNITS_UM = {
    "km": 1e9,
    "hm": 1e8,
    "dam": 1e7,
    "m": 1e6,
    "dm": 1e5,
    "cm": 1e4,
    "mm": 1e3,
    "µm": 1.0,  # micro sign U+00B5
    "μm": 1.0,  # greek mu U+03BC
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "pm": 1e-6,
    "fm": 1e-9,
    "Å": 1e-4,
    "angstrom": 1e-4,
    "thou": 25.4,
    "in": 25400.0,
    "inch": 25400.0,
    "ft": 304800.0,
    "yd": 914400.0,
    "pt": 25400.0 / 72,
}
#: OME UnitsTime symbols as seconds per unit.
_SECONDS = {
    "d": 86400.0,
    "h": 3600.0,
    "min": 60.0,
    "s": 1.0,
    "ds": 1e-1,
    "cs": 1e-2,
    "ms": 1e-3,
    "µs": 1e-6,
    "μs": 1e-6,
    "us": 1e-6,
    "ns": 1e-9,
    "ps": 1e-12,
}
_NANOMETRES = {unit: factor * 1e3 for unit, factor in UNITS_UM.items()}
#: bits per sample of each OME PixelType, for when SignificantBits is absent.
_TYPE_BITS = {
    "bit": 1,
    "int8": 8,
    "uint8": 8,
    "int16": 16,
    "uint16": 16,
    "int32": 32,
    "uint32": 32,
    "float": 32,
    "double": 64,
    "complex": 64,
    "double-complex": 128,
}


def to_um(number: Any, unit: str | None) -> float | None:
    """``number`` in ``unit`` (µm when None) as micrometres; None when unknown or not > 0."""
    return _scaled(number, unit, UNITS_UM, "µm")


def _scaled(number: Any, unit: str | None, table: dict[str, float], default: str) -> float | None:
    amount = _positive(number)
    factor = table.get((unit or default).strip())
    if factor is None or amount is None:
        return None
    return round(amount * factor, 9)


def _positive(number: Any) -> float | None:
    """``number`` as a finite float above zero, else None (``inf``, ``NaN``, text, 0)."""
    try:
        amount = float(number)
    except (TypeError, ValueError):
        return None
    return amount if math.isfinite(amount) and amount > 0 else None


def _quantity(
    element: ET.Element,
    attribute: str,
    table: dict[str, float],
    default: str,
    notes: list[str],
) -> float | None:
    """An attribute in its ``...Unit`` (``default`` when absent), scaled by ``table``.

    A value that is present but unusable is dropped with a note naming the attribute.
    """
    text = element.get(attribute)
    if text is None:
        return None
    unit = element.get(f"{attribute}Unit")
    where = f"{local(element.tag)} {attribute}"
    if table.get((unit or default).strip()) is None:
        notes.append(f"{where}: unit {unit!r} is not known; dropped")
        return None
    scaled = _scaled(text, unit, table, default)
    if scaled is None:
        notes.append(f"{where}: not a finite positive number; dropped")
    return scaled


def _positive_attribute(element: ET.Element, attribute: str, notes: list[str]) -> float | None:
    """A unitless positive attribute (a magnification, an NA); noted when unusable."""
    text = element.get(attribute)
    amount = _positive(text)
    if text is not None and amount is None:
        notes.append(f"{local(element.tag)} {attribute}: not a finite positive number; dropped")
    return amount


def _children(element: ET.Element | None, name: str) -> list[ET.Element]:
    if element is None:
        return []
    return [child for child in element if local(child.tag) == name]


def _child(element: ET.Element | None, name: str) -> ET.Element | None:
    found = _children(element, name)
    return found[0] if found else None


def _referenced(
    candidates: list[ET.Element], ref: ET.Element | None, fallback: bool
) -> ET.Element | None:
    """The candidate whose ID the reference names; else the only (or first) one."""
    wanted = ref.get("ID") if ref is not None else None
    for element in candidates:
        if wanted is not None and element.get("ID") == wanted:
            return element
    if fallback and (len(candidates) == 1 or (candidates and wanted is None)):
        return candidates[0]
    return None


def _integer(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _compact(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v not in (None, "", {}, [])}


def normalized(root: ET.Element) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Normalized fields, an ``original_metadata`` summary, and notes, from an OME root."""
    notes: list[str] = []
    summary: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    images = _children(root, "Image")
    if len(images) > 1:
        notes.append(f"OME-XML describes {len(images)} images; fields are from the first")
        summary["ome_images"] = [
            _compact({"id": i.get("ID"), "name": i.get("Name")}) for i in images
        ]
    image = images[0] if images else None
    pixels = _child(image, "Pixels")
    instrument = _referenced(_children(root, "Instrument"), _child(image, "InstrumentRef"), True)
    if pixels is not None:
        meta["image"] = _image(pixels)
        meta["pixel_size_um"] = _compact(
            {
                axis.lower(): _quantity(pixels, f"PhysicalSize{axis}", UNITS_UM, "µm", notes)
                for axis in ("X", "Y", "Z")
            }
        )
        meta["channels"] = _channels(pixels, notes)
        summary["ome_planes"] = _planes(pixels)
    acquired = _child(image, "AcquisitionDate")
    if acquired is not None and acquired.text and acquired.text.strip():
        if is_rfc3339(acquired.text.strip()):
            meta["acquired"] = acquired.text.strip()
        else:
            notes.append("Image AcquisitionDate: not an RFC 3339 date-time; dropped")
    microscope = _child(instrument, "Microscope")
    if microscope is not None:
        meta["instrument_reported"] = _compact(
            {
                "manufacturer": microscope.get("Manufacturer"),
                "model": microscope.get("Model"),
                "serial_number": microscope.get("SerialNumber"),
                "type": microscope.get("Type"),
            }
        )
    objective = _referenced(
        _children(instrument, "Objective"), _child(image, "ObjectiveSettings"), True
    )
    if objective is not None:
        meta["objective"] = _compact(
            {
                "model": objective.get("Model"),
                "manufacturer": objective.get("Manufacturer"),
                "magnification": _positive_attribute(objective, "NominalMagnification", notes),
                "na": _positive_attribute(objective, "LensNA", notes),
                "immersion": objective.get("Immersion"),
            }
        )
    detector = _detector(instrument, pixels)
    if detector is not None:
        meta["detector"] = _compact(
            {
                "model": detector.get("Model") or _plain_id(detector.get("ID")),
                "manufacturer": detector.get("Manufacturer"),
                "type": detector.get("Type"),
            }
        )
    experimenter = _referenced(
        _children(root, "Experimenter"), _child(image, "ExperimenterRef"), True
    )
    if experimenter is not None:
        name = " ".join(
            p for p in (experimenter.get("FirstName"), experimenter.get("LastName")) if p
        )
        if name or experimenter.get("UserName"):
            meta["operator"] = name or experimenter.get("UserName")
    return (
        _compact({k: _compact(v) if isinstance(v, dict) else v for k, v in meta.items()}),
        (_compact(summary)),
        notes,
    )


def _image(pixels: ET.Element) -> dict[str, Any]:
    pixel_type = pixels.get("Type")
    return {
        "size_x": _integer(pixels.get("SizeX")),
        "size_y": _integer(pixels.get("SizeY")),
        "size_z": _integer(pixels.get("SizeZ")),
        "size_c": _integer(pixels.get("SizeC")),
        "size_t": _integer(pixels.get("SizeT")),
        "bits": _integer(pixels.get("SignificantBits")) or _TYPE_BITS.get(pixel_type or ""),
        "pixel_type": pixel_type,
        "dimension_order": pixels.get("DimensionOrder"),
    }


def plane_count(root: ET.Element) -> int | None:
    """2-D planes in the first image: SizeZ x SizeT x (SizeC / samples per pixel)."""
    pixels = _child(_child(root, "Image"), "Pixels")
    if pixels is None:
        return None
    sizes = [_integer(pixels.get(f"Size{axis}")) or 1 for axis in "ZCT"]
    samples = _integer((_child(pixels, "Channel") or ET.Element("x")).get("SamplesPerPixel")) or 1
    return sizes[0] * sizes[2] * max(1, sizes[1] // samples)


def _detector(instrument: ET.Element | None, pixels: ET.Element | None) -> ET.Element | None:
    """The detector the first channel's DetectorSettings names, else the instrument's only one."""
    detectors = _children(instrument, "Detector")
    for channel in _children(pixels, "Channel"):
        settings = _child(channel, "DetectorSettings")
        if settings is not None:
            return _referenced(detectors, settings, False)
    return _referenced(detectors, None, True)


def _plain_id(identifier: str | None) -> str | None:
    """Micro-Manager stores the device name in a JSON-ish Detector ID; keep it readable."""
    if not identifier or identifier.startswith("Detector:"):
        return None
    if '"PropVal":"' in identifier:
        return identifier.split('"PropVal":"', 1)[1].split('"', 1)[0] or None
    return None


def _channels(pixels: ET.Element, notes: list[str]) -> list[dict[str, Any]]:
    exposures: dict[int, float] = {}
    for plane in _children(pixels, "Plane"):
        index = _integer(plane.get("TheC"))
        if index is None or index in exposures:
            continue
        seconds = _quantity(plane, "ExposureTime", _SECONDS, "s", notes)
        if seconds is not None:
            exposures[index] = seconds
    channels = []
    for index, channel in enumerate(_children(pixels, "Channel")):
        wavelengths = {
            f"{kind.lower()}_nm": _quantity(channel, f"{kind}Wavelength", _NANOMETRES, "nm", notes)
            for kind in ("Excitation", "Emission")
        }
        channels.append(
            _compact(
                {
                    "name": channel.get("Name"),
                    **wavelengths,
                    "fluor": channel.get("Fluor"),
                    "exposure_s": exposures.get(index),
                }
            )
        )
    return [c for c in channels if c]


def _planes(pixels: ET.Element) -> dict[str, Any]:
    """How many Plane elements there are and the stage range they cover, in micrometres.

    Positions without a unit are in the schema's "reference frame" and are not converted.
    """
    planes = _children(pixels, "Plane")
    ranges: dict[str, list[float]] = {}
    for plane in planes:
        for axis in ("X", "Y", "Z"):
            unit = plane.get(f"Position{axis}Unit")
            value = safexml.number(plane.get(f"Position{axis}"))
            factor = UNITS_UM.get(unit) if unit else None
            if value is None or factor is None:
                continue
            um = round(value * factor, 9)
            low_high = ranges.setdefault(axis.lower(), [um, um])
            low_high[0], low_high[1] = min(low_high[0], um), max(low_high[1], um)
    return _compact({"count": len(planes), "position_um_range": ranges})


@dataclass(frozen=True, slots=True)
class OmeLinks:
    """The files an OME-XML block ties together, as names relative to its folder."""

    #: BinaryOnly MetadataFile: where this file's metadata lives (None: it is here).
    metadata_file: str | None
    #: every file the TiffData elements name, this one included.
    files: tuple[str, ...]


def links(root: ET.Element, own_name: str) -> OmeLinks:
    """The metadata file a BinaryOnly block names, or the files TiffData references.

    A UUID equal to this document's own UUID names this file whatever its FileName says,
    so a renamed single-file OME-TIFF does not wait for its old name.
    """
    binary_only = _child(root, "BinaryOnly")
    if binary_only is not None:
        return OmeLinks(_relative(binary_only.get("MetadataFile")), ())
    own_uuid = root.get("UUID")
    files: dict[str, None] = {}
    for element in root.iter():
        if local(element.tag) != "TiffData":
            continue
        uuid = _child(element, "UUID")
        if uuid is None or (own_uuid and (uuid.text or "").strip() == own_uuid):
            files[own_name] = None
            continue
        name = _relative(uuid.get("FileName"))
        if name:
            files[name] = None
    return OmeLinks(None, tuple(files))


_UUID_REF = re.compile(r"<(?:\w+:)?UUID\b([^>]*)>([^<]*)<")
_FILE_NAME = re.compile(r"""FileName\s*=\s*["']([^"']+)["']""")
_METADATA_FILE = re.compile(r"""MetadataFile\s*=\s*["']([^"']+)["']""")
_OWN_UUID = re.compile(r"""<(?:\w+:)?OME\b[^>]*?\sUUID\s*=\s*["']([^"']+)["']""")


def links_from_prefix(prefix: str, own_name: str) -> OmeLinks:
    """Best-effort links from the start of an OME-XML block too large to parse in a claim."""
    if "<BinaryOnly" in prefix and (found := _METADATA_FILE.search(prefix)):
        return OmeLinks(_relative(found.group(1)), ())
    own = _OWN_UUID.search(prefix)
    files: dict[str, None] = {own_name: None}
    for match in _UUID_REF.finditer(prefix):
        named = _FILE_NAME.search(match.group(1))
        if own is not None and match.group(2).strip() == own.group(1):
            continue
        if named and (name := _relative(named.group(1))):
            files[name] = None
    return OmeLinks(None, tuple(files))


def _relative(name: str | None) -> str | None:
    """A referenced name as a normalized relative POSIX path (``..`` kept); None if absolute."""
    if not name:
        return None
    cleaned = posixpath.normpath(name.replace("\\", "/"))
    if cleaned.startswith("/") or cleaned == "." or ":" in cleaned:
        return None
    return cleaned
