"""Normalized fields from the vendor metadata tifffile parses for a flagged flavour.

Each reader takes what tifffile returns for its flavour (a metadata dict, or page 0 when
the metadata sits in plain tags) and gives normalized fields as nested dicts, ``{}`` when
there is nothing usable; the caller merges them after the OME-XML, so OME wins. A value
is mapped only when the format states it: a wavelength range is not an emission
wavelength, a calibration without a length unit is not a pixel size.

Proved by ``tiff-vendor/zeiss-lsm/test.lsm`` (LSM) and, for MetaMorph STK, Olympus
FluoView, NIH Image and ScanImage, which have no corpus file, by the synthetic files of
``tests/adapters/test_tiff_flavours.py`` laid out as those programs write them.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

import numpy

from acqharvest.adapters.tiff import ome

#: ``40x/1.30`` in a Zeiss (and most makers') objective name: magnification, then NA.
_MAGNIFICATION_NA = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*[xX]\s*/\s*(\d+(?:\.\d+)?)(?![\w.])")
#: immersion words written after the NA, as OME's Immersion values.
_IMMERSION = {"oil": "Oil", "w": "Water", "water": "Water", "glyc": "Glycerol"}
#: days since 1899-12-30 (tifffile's ``excel_datetime``, which it names for LSM stamps).
_LSM_EPOCH = dt.datetime(1899, 12, 30)  # noqa: DTZ001 - LSM gives local instrument time
#: NIH Image UnitsID, as ImageJ's TiffDecoder reads it (header version above 153).
_NIH_UNITS = {5: "nm", 6: "µm", 7: "mm", 8: "cm", 9: "m", 10: "km", 11: "inch", 12: "ft"}


def lsm(data: dict[str, Any] | None) -> dict[str, Any]:
    """Zeiss LSM ScanInformation: channels, objective, detector and Sample0time."""
    scan = (data or {}).get("ScanInformation") or {}
    channels: list[dict[str, Any]] = []
    detectors: list[str] = []
    for track in _acquired(scan.get("Tracks")):
        excitation = _single_wavelength(_acquired(track.get("IlluminationChannels")))
        for detection in _acquired(track.get("DetectionChannels")):
            channel = {
                "name": _text(detection.get("ChannelName")),
                "excitation_nm": excitation,
                "fluor": _text(detection.get("DyeName")),
            }
            channels.append({k: v for k, v in channel.items() if v is not None})
            if name := _text(detection.get("PointDetectorName")):
                detectors.append(name)
    return {
        "channels": [c for c in channels if c],
        "objective": objective_from_name(_text(scan.get("Objective"))),
        "detector": {"model": detectors[0] if detectors else None},
        "acquired": _lsm_time(scan.get("Sample0time")),
    }


def objective_from_name(name: str | None) -> dict[str, Any]:
    """Model as written; magnification, NA and immersion parsed from ``40x/1.30 Oil``."""
    if not name:
        return {}
    out: dict[str, Any] = {"model": name}
    match = _MAGNIFICATION_NA.search(name)
    if match:
        magnification, na = float(match.group(1)), float(match.group(2))
        if magnification > 0:
            out["magnification"] = magnification
        if 0 < na < 2:  # no objective reaches NA 2: "63x/160" is a tube length
            out["na"] = na
        after = name[match.end() :].split()
        if after and (immersion := _IMMERSION.get(after[0].lower())):
            out["immersion"] = immersion
    return out


def stk(data: dict[str, Any] | None) -> dict[str, Any]:
    """MetaMorph UIC tags: X/YCalibration in CalibrationUnits per pixel, when calibrated."""
    data = data or {}
    if not data.get("SpatialCalibration", 1):
        return {}  # MetaMorph keeps the last calibration even when it is switched off
    unit = _text(data.get("CalibrationUnits"))
    size = {
        axis: um
        for axis in ("x", "y")
        if unit and (um := ome.to_um(data.get(f"{axis.upper()}Calibration"), unit)) is not None
    }
    return {"pixel_size_um": size}


def fluoview(data: dict[str, Any] | None) -> dict[str, Any]:
    """FluoView MM_Header Dimensions: the X, Y and Z resolution in each dimension's unit."""
    size: dict[str, float] = {}
    for dimension in (data or {}).get("Dimensions") or ():
        name, count, _origin, resolution, unit = dimension
        axis, unit = str(name).strip().lower(), str(unit).strip()
        # to_um reads a missing unit as µm; a FluoView dimension without one stays unread
        if axis in ("x", "y", "z") and count and unit and (um := ome.to_um(resolution, unit)):
            size.setdefault(axis, um)
    return {"pixel_size_um": size}


def nih(data: dict[str, Any] | None) -> dict[str, Any]:
    """NIH Image header, read as ImageJ reads it: XScale pixels per unit, aspect, spacing."""
    data = data or {}
    version, scale = int(data.get("Version") or 0), _number(data.get("XScale"))
    if version <= 106 or not scale:
        return {}
    units = int(data.get("UnitsID") or 0) + (5 if version <= 153 else 0)
    unit = _NIH_UNITS.get(units)
    width = ome.to_um(1 / scale, unit) if unit else None
    if width is None:
        return {}
    aspect = _number(data.get("PixelAspectRatio")) if version > 140 else None
    size = {"x": width, "y": round(width / aspect, 9) if aspect else width}
    if int(data.get("nSlices") or 0) >= 2 and (z := ome.to_um(data.get("SliceSpacing"), unit)):
        size["z"] = z
    return {"pixel_size_um": size}


def scanimage(frame: dict[str, Any], description: dict[str, Any]) -> dict[str, Any]:
    """ScanImage 2016+: pixel size from the FOV corners in µm, start from the frame epoch.

    ``frame`` is the ``SI.*`` header (the Software tag, or the BigTIFF header block),
    ``description`` page 0's frame data. ScanImage 3 headers (``state.*``) give neither.
    """
    meta: dict[str, Any] = {"acquired": _epoch(description.get("epoch"))}
    corners = frame.get("SI.hRoiManager.imagingFovUm")
    if isinstance(corners, list) and corners and all(_is_point(c) for c in corners):
        spans = [max(c[i] for c in corners) - min(c[i] for c in corners) for i in (0, 1)]
        pixels = (
            frame.get("SI.hRoiManager.pixelsPerLine"),
            frame.get("SI.hRoiManager.linesPerFrame"),
        )
        meta["pixel_size_um"] = {
            axis: round(span / count, 9)
            for axis, span, count in zip(("x", "y"), spans, pixels, strict=True)
            if isinstance(count, int) and count > 0 and span > 0
        }
    return meta


def _acquired(items: Any) -> list[dict[str, Any]]:
    """Entries switched on (LSM spells the flag ``Acquire``, and ``Aquire`` for lasers)."""
    if not isinstance(items, list):
        return []
    return [
        item
        for item in items
        if isinstance(item, dict) and item.get("Acquire", item.get("Aquire", 1))
    ]


def _single_wavelength(illuminations: list[dict[str, Any]]) -> float | None:
    """The track's excitation when one laser line is on; several cannot be told apart."""
    lines = {w for item in illuminations if (w := _number(item.get("Wavelength")))}
    return lines.pop() if len(lines) == 1 else None


def _lsm_time(days: Any) -> str | None:
    amount = _number(days)
    if amount is None:
        return None
    # a double of ~40000 days resolves microseconds only as noise: keep milliseconds
    return _iso(_LSM_EPOCH + dt.timedelta(milliseconds=round(amount * 86_400_000)))


def _epoch(value: Any) -> str | None:
    """ScanImage ``epoch = [2020 3 14 12 30 45.5]`` (local time) as ISO 8601."""
    if not (isinstance(value, list) and len(value) == 6 and all(_is_number(v) for v in value)):
        return None
    year, month, day, hour, minute, seconds = value
    try:
        # local time, as ScanImage writes it
        start = dt.datetime(int(year), int(month), int(day), int(hour), int(minute))  # noqa: DTZ001
    except ValueError:
        return None
    return _iso(start + dt.timedelta(milliseconds=round(seconds * 1000)))


def _iso(stamp: dt.datetime) -> str:
    return stamp.isoformat(timespec="milliseconds" if stamp.microsecond else "seconds")


def _is_point(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)


def _is_number(value: Any) -> bool:
    # tifffile returns numpy scalars from binary headers; a bool is not a measurement
    real = isinstance(value, (int, float, numpy.integer, numpy.floating))
    return real and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any) -> float | None:
    return float(value) if _is_number(value) and value > 0 else None


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None
