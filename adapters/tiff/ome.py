"""OME-XML (as found in an OME-TIFF ImageDescription) to the TIFF adapter's normalized fields.

Parsed with the standard library's ElementTree; namespaces are ignored so every OME
schema year reads the same way.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

#: length units OME and ImageJ use, as micrometres per unit.
UNITS_UM = {
    "m": 1e6,
    "dm": 1e5,
    "cm": 1e4,
    "mm": 1e3,
    "µm": 1.0,  # micro sign U+00B5
    "μm": 1.0,  # greek mu U+03BC
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "nm": 1e-3,
    "pm": 1e-6,
    "Å": 1e-4,
    "angstrom": 1e-4,
    "in": 25400.0,
    "inch": 25400.0,
}
_SECONDS = {
    "s": 1.0,
    "ms": 1e-3,
    "µs": 1e-6,
    "μs": 1e-6,
    "us": 1e-6,
    "ns": 1e-9,
    "min": 60.0,
    "h": 3600.0,
}
_NANOMETRES = {"nm": 1.0, "µm": 1e3, "μm": 1e3, "um": 1e3, "pm": 1e-3, "Å": 0.1, "m": 1e9}


def to_um(number: Any, unit: str | None) -> float | None:
    """``number`` in ``unit`` as micrometres; None when missing, degenerate or unknown."""
    try:
        amount = float(number)
    except (TypeError, ValueError):
        return None
    factor = UNITS_UM.get((unit or "µm").strip())
    if factor is None or not amount > 0:
        return None
    return round(amount * factor, 9)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element | None, name: str) -> list[ET.Element]:
    if element is None:
        return []
    return [child for child in element if _local(child.tag) == name]


def _child(element: ET.Element | None, name: str) -> ET.Element | None:
    found = _children(element, name)
    return found[0] if found else None


def _by_id(root: ET.Element, name: str, ref: ET.Element | None) -> ET.Element | None:
    """The element called ``name`` whose ID the reference names, else the first one."""
    candidates = [e for e in root.iter() if _local(e.tag) == name]
    wanted = ref.get("ID") if ref is not None else None
    for element in candidates:
        if wanted is not None and element.get("ID") == wanted:
            return element
    return candidates[0] if candidates else None


def _number(text: str | None, integer: bool = False) -> float | int | None:
    if text is None:
        return None
    try:
        return int(text) if integer else float(text)
    except ValueError:
        return None


def _scaled(
    text: str | None, unit: str | None, table: dict[str, float], default: str
) -> float | None:
    amount = _number(text)
    factor = table.get((unit or default).strip())
    if amount is None or factor is None:
        return None
    return round(float(amount) * factor, 9)


def _compact(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v not in (None, "", {}, [])}


def parse(xml: str) -> tuple[dict[str, Any], list[str]]:
    """Normalized fields from OME-XML, and warnings about what could not be read."""
    notes: list[str] = []
    try:
        root = ET.fromstring(xml)  # noqa: S314 - see the import note
    except ET.ParseError as exc:
        return {}, [f"OME-XML does not parse: {exc}"]
    meta: dict[str, Any] = {}
    if _child(root, "BinaryOnly") is not None:
        reference = _child(root, "BinaryOnly")
        name = reference.get("MetadataFile") if reference is not None else None
        notes.append(f"OME-XML is BinaryOnly; the metadata is in {name or 'another file'}")
    image = _child(root, "Image")
    pixels = _child(image, "Pixels")
    if pixels is not None:
        meta["image"] = _compact(
            {
                "size_x": _number(pixels.get("SizeX"), integer=True),
                "size_y": _number(pixels.get("SizeY"), integer=True),
                "size_z": _number(pixels.get("SizeZ"), integer=True),
                "size_c": _number(pixels.get("SizeC"), integer=True),
                "size_t": _number(pixels.get("SizeT"), integer=True),
                "pixel_type": pixels.get("Type"),
                "dimension_order": pixels.get("DimensionOrder"),
            }
        )
        meta["pixel_size_um"] = _compact(
            {
                axis.lower(): to_um(
                    pixels.get(f"PhysicalSize{axis}"), pixels.get(f"PhysicalSize{axis}Unit")
                )
                for axis in ("X", "Y", "Z")
            }
        )
        meta["channels"] = _channels(pixels)
    acquired = _child(image, "AcquisitionDate")
    if acquired is not None and acquired.text:
        meta["acquired"] = acquired.text.strip()
    instrument = _by_id(root, "Instrument", _child(image, "InstrumentRef"))
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
    objective = _pick(instrument, "Objective", _child(image, "ObjectiveSettings"))
    if objective is not None:
        meta["objective"] = _compact(
            {
                "model": objective.get("Model"),
                "manufacturer": objective.get("Manufacturer"),
                "magnification": _number(objective.get("NominalMagnification")),
                "na": _number(objective.get("LensNA")),
                "immersion": objective.get("Immersion"),
            }
        )
    detector = _pick(instrument, "Detector", None)
    if detector is not None:
        meta["detector"] = _compact(
            {
                "model": detector.get("Model") or _plain_id(detector.get("ID")),
                "manufacturer": detector.get("Manufacturer"),
                "type": detector.get("Type"),
            }
        )
    experimenter = _by_id(root, "Experimenter", _child(image, "ExperimenterRef"))
    if experimenter is not None:
        name = " ".join(
            part for part in (experimenter.get("FirstName"), experimenter.get("LastName")) if part
        )
        operator = name or experimenter.get("UserName")
        if operator:
            meta["operator"] = operator
    return _compact(meta), notes


def _pick(instrument: ET.Element | None, name: str, ref: ET.Element | None) -> ET.Element | None:
    found = _children(instrument, name)
    wanted = ref.get("ID") if ref is not None else None
    for element in found:
        if wanted is not None and element.get("ID") == wanted:
            return element
    return found[0] if found else None


def _plain_id(identifier: str | None) -> str | None:
    """Micro-Manager stores the device name in a JSON-ish Detector ID; keep it readable."""
    if not identifier or identifier.startswith("Detector:"):
        return None
    if '"PropVal":"' in identifier:
        return identifier.split('"PropVal":"', 1)[1].split('"', 1)[0] or None
    return None


def _channels(pixels: ET.Element) -> list[dict[str, Any]]:
    exposures: dict[int, float] = {}
    for plane in _children(pixels, "Plane"):
        index = _number(plane.get("TheC"), integer=True)
        seconds = _scaled(plane.get("ExposureTime"), plane.get("ExposureTimeUnit"), _SECONDS, "s")
        if isinstance(index, int) and seconds is not None and index not in exposures:
            exposures[index] = seconds
    channels = []
    for index, channel in enumerate(_children(pixels, "Channel")):
        channels.append(
            _compact(
                {
                    "name": channel.get("Name"),
                    "excitation_nm": _scaled(
                        channel.get("ExcitationWavelength"),
                        channel.get("ExcitationWavelengthUnit"),
                        _NANOMETRES,
                        "nm",
                    ),
                    "emission_nm": _scaled(
                        channel.get("EmissionWavelength"),
                        channel.get("EmissionWavelengthUnit"),
                        _NANOMETRES,
                        "nm",
                    ),
                    "fluor": channel.get("Fluor"),
                    "exposure_s": exposures.get(index),
                }
            )
        )
    return [c for c in channels if c]
