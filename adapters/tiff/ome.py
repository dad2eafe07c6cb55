"""OME-XML (an OME-TIFF ImageDescription or a ``.companion.ome`` file) to normalized fields.

Parsed with :mod:`acqharvest.adapters.safexml` (DTDs and entities refused, depth and
size capped); namespaces are ignored so every OME schema year reads the same way.
Every quantity honours its OME unit attribute (``PhysicalSizeXUnit``,
``EmissionWavelengthUnit``, ``ExposureTimeUnit``...) and falls back to the schema's
default unit when the attribute is absent. A quantity that is not a finite positive number
in a known unit, and an ``AcquisitionDate`` that is not RFC 3339, are dropped with a
warning naming the element and attribute.

Beyond sizes and identity, the NBO Tier 1 acquisition settings are read (4DN-BINA-OME,
Hammer et al. 2021): per channel its illumination, contrast method, acquisition mode,
pinhole, light source (through LightSourceSettings), detector settings and filters
(LightPath, else FilterSet); the planes' timing, exposure and stage range; the specimen's
plate, well and field (the WellSample whose ImageRef names the image); the imaging
environment; the objective's correction and working distance. Every quantity is converted
through the unit tables below; a temperature through its own scale.
"""

from __future__ import annotations

import math
import posixpath
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from acqharvest.adapter_api import is_rfc3339
from acqharvest.adapters.safexml import local
from acqharvest.adapters.safexml import parse as parse_xml

__all__ = [
    "CHANNEL_SOURCES",
    "NBO_SOURCES",
    "OmeLinks",
    "keep_xml",
    "links",
    "normalized",
    "parse_xml",
    "plane_count",
    "to_um",
]

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
#: OME UnitsPower symbols as milliwatts per unit.
_MILLIWATTS = {
    "GW": 1e12,
    "MW": 1e9,
    "kW": 1e6,
    "W": 1e3,
    "mW": 1.0,
    "µW": 1e-3,
    "μW": 1e-3,
    "uW": 1e-3,
    "nW": 1e-6,
    "pW": 1e-9,
}
#: OME UnitsFrequency symbols as megahertz per unit.
_MEGAHERTZ = {"GHz": 1e3, "MHz": 1.0, "kHz": 1e-3, "Hz": 1e-6, "mHz": 1e-9}
#: OME UnitsElectricPotential symbols as volts per unit.
_VOLTS = {"MV": 1e6, "kV": 1e3, "V": 1.0, "mV": 1e-3, "µV": 1e-6, "μV": 1e-6, "uV": 1e-6}
#: OME UnitsPressure symbols as millibars per unit.
_MILLIBARS = {
    "MPa": 1e4,
    "kPa": 10.0,
    "hPa": 1.0,
    "Pa": 1e-2,
    "bar": 1e3,
    "dbar": 1e2,
    "cbar": 10.0,
    "mbar": 1.0,
    "atm": 1013.25,
    "psi": 68.947572932,
    "Torr": 1013.25 / 760,
    "mTorr": 1013.25 / 760_000,
    "mm Hg": 1.333223874,
}
#: OME UnitsTemperature symbols as (scale, offset) giving degrees Celsius.
_CELSIUS = {
    "°C": (1.0, 0.0),
    "K": (1.0, -273.15),
    "°F": (5 / 9, -32 * 5 / 9),
    "°R": (5 / 9, -273.15),
}
#: the OME elements that are a LightSource (its substitution group).
_LIGHT_SOURCES = ("Laser", "Arc", "Filament", "LightEmittingDiode", "GenericExcitationSource")
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


def _scaled(
    number: Any, unit: str | None, table: dict[str, float], default: str, *, signed: bool = False
) -> float | None:
    amount = _finite(number) if signed else _positive(number)
    factor = table.get((unit or default).strip())
    if factor is None or amount is None:
        return None
    return round(amount * factor, 9)


def _finite(number: Any) -> float | None:
    """``number`` as a finite float of any sign, else None."""
    try:
        amount = float(number)
    except (TypeError, ValueError):
        return None
    return amount if math.isfinite(amount) else None


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
    *,
    signed: bool = False,
) -> float | None:
    """An attribute in its ``...Unit`` (``default`` when absent), scaled by ``table``.

    Positive unless ``signed`` (a time offset, a stage position). A value that is present
    but unusable is dropped with a note naming the attribute.
    """
    text = element.get(attribute)
    if text is None:
        return None
    unit = element.get(f"{attribute}Unit")
    where = f"{local(element.tag)} {attribute}"
    if table.get((unit or default).strip()) is None:
        notes.append(f"{where}: unit {unit!r} is not known; dropped")
        return None
    scaled = _scaled(text, unit, table, default, signed=signed)
    if scaled is None:
        kind = "finite" if signed else "finite positive"
        notes.append(f"{where}: not a {kind} number; dropped")
    return scaled


def _celsius(element: ET.Element, attribute: str, notes: list[str]) -> float | None:
    """A temperature in its ``...Unit`` (°C when absent) as degrees Celsius."""
    text = element.get(attribute)
    if text is None:
        return None
    unit = (element.get(f"{attribute}Unit") or "°C").strip()
    scale = _CELSIUS.get(unit)
    amount = _finite(text)
    where = f"{local(element.tag)} {attribute}"
    if scale is None:
        notes.append(f"{where}: unit {unit!r} is not known; dropped")
        return None
    if amount is None or amount * scale[0] + scale[1] < -273.15:
        notes.append(f"{where}: not a temperature; dropped")
        return None
    return round(amount * scale[0] + scale[1], 9)


def _fraction_percent(element: ET.Element, attribute: str, notes: list[str]) -> float | None:
    """An OME PercentFraction (0 to 1) as percent; outside that range it is dropped."""
    text = element.get(attribute)
    amount = _finite(text)
    if text is None:
        return None
    if amount is None or not 0 <= amount <= 1:
        notes.append(f"{local(element.tag)} {attribute}: not a fraction from 0 to 1; dropped")
        return None
    return round(amount * 100, 9)


def _plain_number(element: ET.Element, attribute: str, notes: list[str]) -> float | None:
    """A unitless number of any sign (a gain, an offset); noted when unusable."""
    text = element.get(attribute)
    amount = _finite(text)
    if text is not None and amount is None:
        notes.append(f"{local(element.tag)} {attribute}: not a finite number; dropped")
    return amount


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
        meta["image"] = {
            **_image(pixels),
            "time_increment_s": _quantity(pixels, "TimeIncrement", _SECONDS, "s", notes),
        }
        meta["pixel_size_um"] = _compact(
            {
                axis.lower(): _quantity(pixels, f"PhysicalSize{axis}", UNITS_UM, "µm", notes)
                for axis in ("X", "Y", "Z")
            }
        )
        meta["channels"] = _channels(pixels, instrument, notes)
        meta["planes"] = _planes(pixels, notes)
    meta["specimen"] = _specimen(root, image)
    environment = _child(image, "ImagingEnvironment")
    if environment is not None:
        meta["environment"] = {
            "temperature_c": _celsius(environment, "Temperature", notes),
            "co2_percent": _fraction_percent(environment, "CO2Percent", notes),
            "humidity_percent": _fraction_percent(environment, "Humidity", notes),
            "air_pressure_mbar": _quantity(environment, "AirPressure", _MILLIBARS, "mbar", notes),
        }
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
                "correction": objective.get("Correction"),
                "working_distance_um": _quantity(
                    objective, "WorkingDistance", UNITS_UM, "µm", notes
                ),
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
        list(dict.fromkeys(notes)),  # a bad first-plane exposure is seen twice
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


def _channels(
    pixels: ET.Element, instrument: ET.Element | None, notes: list[str]
) -> list[dict[str, Any]]:
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
                    "illumination": channel.get("IlluminationType"),
                    "contrast_method": channel.get("ContrastMethod"),
                    "acquisition_mode": channel.get("AcquisitionMode"),
                    "pinhole_um": _quantity(channel, "PinholeSize", UNITS_UM, "µm", notes),
                    "light_source": _light_source(channel, instrument, notes),
                    "detector_settings": _detector_settings(channel, notes),
                    "filters": _filters(channel, instrument, notes),
                }
            )
        )
    return [c for c in channels if c]


def _light_source(
    channel: ET.Element, instrument: ET.Element | None, notes: list[str]
) -> dict[str, Any]:
    """The source LightSourceSettings names: its kind, model, power, the wavelength used."""
    settings = _child(channel, "LightSourceSettings")
    if settings is None:
        return {}
    source = _referenced(_children_any(instrument, _LIGHT_SOURCES), settings, False)
    wavelength = _quantity(settings, "Wavelength", _NANOMETRES, "nm", notes)
    if wavelength is None and source is not None:
        wavelength = _quantity(source, "Wavelength", _NANOMETRES, "nm", notes)
    return _compact(
        {
            "type": local(source.tag) if source is not None else None,
            "model": source.get("Model") if source is not None else None,
            "wavelength_nm": wavelength,
            "power_mw": _quantity(source, "Power", _MILLIWATTS, "mW", notes)
            if source is not None
            else None,
            "attenuation_percent": _fraction_percent(settings, "Attenuation", notes),
        }
    )


def _detector_settings(channel: ET.Element, notes: list[str]) -> dict[str, Any]:
    settings = _child(channel, "DetectorSettings")
    if settings is None:
        return {}
    return _compact(
        {
            "gain": _plain_number(settings, "Gain", notes),
            "offset": _plain_number(settings, "Offset", notes),
            "binning": settings.get("Binning"),
            "readout_rate_mhz": _quantity(settings, "ReadOutRate", _MEGAHERTZ, "MHz", notes),
            "voltage_v": _quantity(settings, "Voltage", _VOLTS, "V", notes, signed=True),
        }
    )


def _filters(
    channel: ET.Element, instrument: ET.Element | None, notes: list[str]
) -> dict[str, Any]:
    """The channel's LightPath, else the FilterSet it names: each filter's model and band."""
    path = _child(channel, "LightPath")
    if path is None:
        path = _referenced(
            _children(instrument, "FilterSet"), _child(channel, "FilterSetRef"), False
        )
    if path is None:
        return {}
    filters = _children(instrument, "Filter")
    dichroic = _referenced(_children(instrument, "Dichroic"), _child(path, "DichroicRef"), False)
    found: dict[str, Any] = {"dichroic": _name_of(dichroic)}
    for kind in ("Excitation", "Emission"):
        chosen = [
            element
            for ref in _children(path, f"{kind}FilterRef")
            if (element := _referenced(filters, ref, False)) is not None
        ]
        names = [name for element in chosen if (name := _name_of(element))]
        found[kind.lower()] = " + ".join(names) or None
        band = _child(chosen[0], "TransmittanceRange") if chosen else None
        if band is not None:
            edges = [
                _quantity(band, edge, _NANOMETRES, "nm", notes) for edge in ("CutIn", "CutOut")
            ]
            found[f"{kind.lower()}_nm"] = edges if None not in edges else None
    return _compact(found)


def _name_of(element: ET.Element | None) -> str | None:
    """A filter's or dichroic's Model, else its FilterWheel position's name."""
    if element is None:
        return None
    return element.get("Model") or element.get("FilterWheel") or None


def _children_any(element: ET.Element | None, names: tuple[str, ...]) -> list[ET.Element]:
    if element is None:
        return []
    return [child for child in element if local(child.tag) in names]


def _planes(pixels: ET.Element, notes: list[str]) -> dict[str, Any]:
    """How many Plane elements there are, and the range of their times, exposures and stage
    positions (micrometres).

    Positions without a unit are in the schema's "reference frame" and are not converted.
    """
    planes = _children(pixels, "Plane")
    if not planes:
        return {}
    ranges: dict[str, list[float]] = {}

    def widen(key: str, value: float | None) -> None:
        if value is not None:
            low_high = ranges.setdefault(key, [value, value])
            low_high[0], low_high[1] = min(low_high[0], value), max(low_high[1], value)

    for plane in planes:
        widen("delta_t_s", _quantity(plane, "DeltaT", _SECONDS, "s", notes, signed=True))
        widen("exposure_s", _quantity(plane, "ExposureTime", _SECONDS, "s", notes))
        for axis in ("X", "Y", "Z"):
            if plane.get(f"Position{axis}Unit") in UNITS_UM:
                position = _quantity(plane, f"Position{axis}", UNITS_UM, "µm", notes, signed=True)
                widen(f"position_{axis.lower()}_um", position)
    return _compact({"count": len(planes), **ranges})


def _specimen(root: ET.Element, image: ET.Element | None) -> dict[str, Any]:
    """The plate, well and field (the WellSample naming the image), and the stage label."""
    label = _child(image, "StageLabel")
    found: dict[str, Any] = {"stage_label": label.get("Name") if label is not None else None}
    image_id = image.get("ID") if image is not None else None
    for plate in _children(root, "Plate") if image_id else []:
        for well in _children(plate, "Well"):
            samples = _children(well, "WellSample")
            for field_index, sample in enumerate(samples):
                ref = _child(sample, "ImageRef")
                if ref is None or ref.get("ID") != image_id:
                    continue
                found["plate"] = plate.get("Name")
                found["well"] = _well_name(plate, well)
                found["field"] = field_index
                return _compact(found)
    return _compact(found)


def _well_name(plate: ET.Element, well: ET.Element) -> str | None:
    """``B3`` for Row 1, Column 2, as the plate's naming conventions say (letter rows and
    number columns when it names none)."""
    row, column = _integer(well.get("Row")), _integer(well.get("Column"))
    if row is None or column is None or row < 0 or column < 0:
        return None
    parts = [
        _label(index, plate.get(f"{axis}NamingConvention") or default)
        for index, axis, default in ((row, "Row", "letter"), (column, "Column", "number"))
    ]
    separator = "" if parts[0][-1].isalpha() != parts[1][0].isalpha() else "-"
    return separator.join(parts)


def _label(index: int, convention: str) -> str:
    """A 0-based index as a plate label: 0 is ``A`` (letter, then ``AA``...) or ``1``."""
    if convention != "letter":
        return str(index + 1)
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters


def keep_xml(
    text: str, max_bytes: int, original: dict[str, Any], notes: list[str], where: str = "OME-XML"
) -> None:
    """``original["ome_xml"]``: the document whole, or its first ``max_bytes`` bytes
    (whole characters) with ``original["ome_xml_cut"]`` saying how much it was."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        original["ome_xml"] = text
        return
    kept = data[:max_bytes].decode("utf-8", errors="ignore")
    original["ome_xml"] = kept
    original["ome_xml_cut"] = {"size_bytes": len(data), "kept_bytes": len(kept.encode("utf-8"))}
    notes.append(f"{where} is {len(data)} bytes; kept the first {max_bytes} in original_metadata")


#: where the OME-XML fields beyond sizes and identity come from, for the adapters' field
#: tables (the tiff and zarr adapters report the same).
NBO_SOURCES = {
    "image.time_increment_s": "OME Pixels TimeIncrement (+ unit, as s)",
    "planes.count": "OME Plane elements of the first image",
    "planes.delta_t_s": "OME Plane DeltaT (+ unit), lowest and highest, as s",
    "planes.exposure_s": "OME Plane ExposureTime (+ unit), shortest and longest, as s",
    "planes.position_x_um": "OME Plane PositionX in a length unit (not the reference "
    "frame), lowest and highest, as µm",
    "planes.position_y_um": "as x, PositionY",
    "planes.position_z_um": "as x, PositionZ",
    "specimen.plate": "OME Plate Name of the WellSample whose ImageRef names the image",
    "specimen.well": "that Well's Row and Column in the Plate's naming conventions (B3)",
    "specimen.field": "that WellSample's position in its Well, from 0",
    "specimen.stage_label": "OME Image StageLabel Name",
    "environment.temperature_c": "OME ImagingEnvironment Temperature (+ unit: °C, K, °F, °R)",
    "environment.co2_percent": "OME ImagingEnvironment CO2Percent (fraction, as %)",
    "environment.humidity_percent": "OME ImagingEnvironment Humidity (fraction, as %)",
    "environment.air_pressure_mbar": "OME ImagingEnvironment AirPressure (+ unit, as mbar)",
    "objective.correction": "OME Objective Correction",
    "objective.working_distance_um": "OME Objective WorkingDistance (+ unit, as µm)",
}
#: the channels' OME sources, for the field tables.
CHANNEL_SOURCES = (
    "OME Channel Name, Excitation/EmissionWavelength (+ unit, as nm), Fluor, "
    "IlluminationType as illumination, ContrastMethod, AcquisitionMode, PinholeSize (+ unit, "
    "as pinhole_um); the first Plane's ExposureTime (+ unit, as s); light_source from the "
    "Instrument's Laser, Arc, Filament, LightEmittingDiode or GenericExcitationSource its "
    "LightSourceSettings names (element as type, Model, Power as mW, the settings' "
    "Wavelength else the laser's, Attenuation as %); detector_settings Gain, Offset, "
    "Binning, ReadOutRate (MHz), Voltage (V); filters from the LightPath, else the FilterSet "
    "FilterSetRef names: excitation and emission filters' Model (else FilterWheel) and "
    "TransmittanceRange CutIn-CutOut (nm), the Dichroic's Model"
)


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
