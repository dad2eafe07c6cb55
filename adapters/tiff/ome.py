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
through the unit tables of ``ome_quantities``; a temperature through its own scale.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from acqharvest.adapter_api import is_rfc3339
from acqharvest.adapters.safexml import child, local
from acqharvest.adapters.safexml import parse as parse_xml
from acqharvest.adapters.tiff.ome_quantities import (
    MEGAHERTZ,
    MILLIBARS,
    MILLIWATTS,
    NANOMETRES,
    SECONDS,
    UNITS_UM,
    VOLTS,
    celsius,
    fraction_percent,
    plain_number,
    positive_attribute,
    quantity,
    to_um,
)

__all__ = [
    "CHANNEL_SOURCES",
    "NBO_SOURCES",
    "UNITS_UM",
    "keep_xml",
    "normalized",
    "parse_xml",
    "plane_count",
    "to_um",
]

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


def _children(element: ET.Element | None, name: str) -> list[ET.Element]:
    if element is None:
        return []
    return [child for child in element if local(child.tag) == name]


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
    pixels = child(image, "Pixels")
    instrument = _referenced(_children(root, "Instrument"), child(image, "InstrumentRef"), True)
    if pixels is not None:
        meta["image"] = {
            **_image(pixels),
            "time_increment_s": quantity(pixels, "TimeIncrement", SECONDS, "s", notes),
        }
        meta["pixel_size_um"] = _compact(
            {
                axis.lower(): quantity(pixels, f"PhysicalSize{axis}", UNITS_UM, "µm", notes)
                for axis in ("X", "Y", "Z")
            }
        )
        meta["channels"] = _channels(pixels, instrument, notes)
        meta["planes"] = _planes(pixels, notes)
    meta["specimen"] = _specimen(root, image)
    environment = child(image, "ImagingEnvironment")
    if environment is not None:
        meta["environment"] = {
            "temperature_c": celsius(environment, "Temperature", notes),
            "co2_percent": fraction_percent(environment, "CO2Percent", notes),
            "humidity_percent": fraction_percent(environment, "Humidity", notes),
            "air_pressure_mbar": quantity(environment, "AirPressure", MILLIBARS, "mbar", notes),
        }
    acquired = child(image, "AcquisitionDate")
    if acquired is not None and acquired.text and acquired.text.strip():
        if is_rfc3339(acquired.text.strip()):
            meta["acquired"] = acquired.text.strip()
        else:
            notes.append("Image AcquisitionDate: not an RFC 3339 date-time; dropped")
    microscope = child(instrument, "Microscope")
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
        _children(instrument, "Objective"), child(image, "ObjectiveSettings"), True
    )
    if objective is not None:
        meta["objective"] = _compact(
            {
                "model": objective.get("Model"),
                "manufacturer": objective.get("Manufacturer"),
                "magnification": positive_attribute(objective, "NominalMagnification", notes),
                "na": positive_attribute(objective, "LensNA", notes),
                "immersion": objective.get("Immersion"),
                "correction": objective.get("Correction"),
                "working_distance_um": quantity(
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
        _children(root, "Experimenter"), child(image, "ExperimenterRef"), True
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
    pixels = child(child(root, "Image"), "Pixels")
    if pixels is None:
        return None
    sizes = [_integer(pixels.get(f"Size{axis}")) or 1 for axis in "ZCT"]
    samples = _integer((child(pixels, "Channel") or ET.Element("x")).get("SamplesPerPixel")) or 1
    return sizes[0] * sizes[2] * max(1, sizes[1] // samples)


def _detector(instrument: ET.Element | None, pixels: ET.Element | None) -> ET.Element | None:
    """The detector the first channel's DetectorSettings names, else the instrument's only one."""
    detectors = _children(instrument, "Detector")
    for channel in _children(pixels, "Channel"):
        settings = child(channel, "DetectorSettings")
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
        seconds = quantity(plane, "ExposureTime", SECONDS, "s", notes)
        if seconds is not None:
            exposures[index] = seconds
    channels = []
    for index, channel in enumerate(_children(pixels, "Channel")):
        wavelengths = {
            f"{kind.lower()}_nm": quantity(channel, f"{kind}Wavelength", NANOMETRES, "nm", notes)
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
                    "pinhole_um": quantity(channel, "PinholeSize", UNITS_UM, "µm", notes),
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
    settings = child(channel, "LightSourceSettings")
    if settings is None:
        return {}
    source = _referenced(_children_any(instrument, _LIGHT_SOURCES), settings, False)
    wavelength = quantity(settings, "Wavelength", NANOMETRES, "nm", notes)
    if wavelength is None and source is not None:
        wavelength = quantity(source, "Wavelength", NANOMETRES, "nm", notes)
    return _compact(
        {
            "type": local(source.tag) if source is not None else None,
            "model": source.get("Model") if source is not None else None,
            "wavelength_nm": wavelength,
            "power_mw": quantity(source, "Power", MILLIWATTS, "mW", notes)
            if source is not None
            else None,
            "attenuation_percent": fraction_percent(settings, "Attenuation", notes),
        }
    )


def _detector_settings(channel: ET.Element, notes: list[str]) -> dict[str, Any]:
    settings = child(channel, "DetectorSettings")
    if settings is None:
        return {}
    return _compact(
        {
            "gain": plain_number(settings, "Gain", notes),
            "offset": plain_number(settings, "Offset", notes),
            "binning": settings.get("Binning"),
            "readout_rate_mhz": quantity(settings, "ReadOutRate", MEGAHERTZ, "MHz", notes),
            "voltage_v": quantity(settings, "Voltage", VOLTS, "V", notes, signed=True),
        }
    )


def _filters(
    channel: ET.Element, instrument: ET.Element | None, notes: list[str]
) -> dict[str, Any]:
    """The channel's LightPath, else the FilterSet it names: each filter's model and band."""
    path = child(channel, "LightPath")
    if path is None:
        path = _referenced(
            _children(instrument, "FilterSet"), child(channel, "FilterSetRef"), False
        )
    if path is None:
        return {}
    filters = _children(instrument, "Filter")
    dichroic = _referenced(_children(instrument, "Dichroic"), child(path, "DichroicRef"), False)
    found: dict[str, Any] = {"dichroic": _name_of(dichroic)}
    for kind in ("Excitation", "Emission"):
        chosen = [
            element
            for ref in _children(path, f"{kind}FilterRef")
            if (element := _referenced(filters, ref, False)) is not None
        ]
        names = [name for element in chosen if (name := _name_of(element))]
        found[kind.lower()] = " + ".join(names) or None
        band = child(chosen[0], "TransmittanceRange") if chosen else None
        if band is not None:
            edges = [quantity(band, edge, NANOMETRES, "nm", notes) for edge in ("CutIn", "CutOut")]
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
        widen("delta_t_s", quantity(plane, "DeltaT", SECONDS, "s", notes, signed=True))
        widen("exposure_s", quantity(plane, "ExposureTime", SECONDS, "s", notes))
        for axis in ("X", "Y", "Z"):
            if plane.get(f"Position{axis}Unit") in UNITS_UM:
                position = quantity(plane, f"Position{axis}", UNITS_UM, "µm", notes, signed=True)
                widen(f"position_{axis.lower()}_um", position)
    return _compact({"count": len(planes), **ranges})


def _specimen(root: ET.Element, image: ET.Element | None) -> dict[str, Any]:
    """The plate, well and field (the WellSample naming the image), and the stage label."""
    label = child(image, "StageLabel")
    found: dict[str, Any] = {"stage_label": label.get("Name") if label is not None else None}
    image_id = image.get("ID") if image is not None else None
    for plate in _children(root, "Plate") if image_id else []:
        for well in _children(plate, "Well"):
            samples = _children(well, "WellSample")
            for field_index, sample in enumerate(samples):
                ref = child(sample, "ImageRef")
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
