"""Calibration and instrument fields from vendor TIFF variants tifffile has no flag for,
or whose useful part tifffile leaves as raw tags or text.

Each reader takes page 0 (and the file, for readers that need a second IFD) and returns
normalized fields as nested dicts, or ``{}`` when the file is not that vendor's. The
caller merges them with ``setdefault`` semantics: earlier sources win.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import struct
from typing import Any

import tifffile

from acqharvest.adapters.safexml import XmlBroken, XmlRefused, local
from acqharvest.adapters.tiff import ome

#: Gatan DigitalMicrograph private tags: (scale x, y, z) and their unit tags.
_DM_SCALES = {"x": (65009, 65003), "y": (65010, 65004), "z": (65011, 65005)}
#: ResolutionUnit code to metres per unit (JEOL SightX writes the detector pitch there).
_METRES_PER_UNIT = {2: 0.0254, 3: 0.01}


def gatan(page: tifffile.TiffPage) -> dict[str, Any]:
    """DigitalMicrograph-exported TIFF: pixel size from tags 65009-65011 in 65003-65005 units."""
    size = {}
    for axis, (scale_code, unit_code) in _DM_SCALES.items():
        scale, unit = page.tags.valueof(scale_code), page.tags.valueof(unit_code)
        if isinstance(scale, (int, float)) and isinstance(unit, str):
            um = ome.to_um(scale, unit.strip("\x00 "))
            if um is not None:
                size[axis] = um
    return {"pixel_size_um": size} if size else {}


def jeol_sightx(page: tifffile.TiffPage) -> dict[str, Any]:
    """JEOL SightX TEM: the TemReporter XML in ImageDescription; MAG-mode pixel size.

    In MAG mode the specimen pixel is the detector pitch (written as the resolution tags)
    divided by the magnification (ImageFormingSystem SelectorValue).
    """
    text = page.description or ""
    if "<TemReporter" not in text[:512]:
        return {}
    try:
        root = ome.parse_xml(text)
    except (XmlRefused, XmlBroken):
        return {}
    values = {local(e.tag): (e.text or "").strip() for e in root}
    forming = next((e for e in root.iter() if local(e.tag) == "ImageFormingSystem"), None)
    forming_values = {local(e.tag): (e.text or "").strip() for e in forming or ()}
    meta: dict[str, Any] = {
        "instrument_reported": {
            "manufacturer": values.get("Manufacturer"),
            "model": values.get("Instruments"),
        },
        "acquired": values.get("DateTime"),
        "operator": values.get("Operator"),
    }
    magnification = _float(forming_values.get("SelectorValue"))
    pitch = _detector_pitch_um(page)
    if forming_values.get("ModeString") == "MAG" and magnification and pitch:
        um = round(pitch / magnification, 9)
        meta["pixel_size_um"] = {"x": um, "y": um}
    return meta


def _detector_pitch_um(page: tifffile.TiffPage) -> float | None:
    unit = page.tags.valueof(296)
    resolution = page.tags.valueof(282)
    metres = _METRES_PER_UNIT.get(int(unit)) if unit is not None else None
    if metres is None or not isinstance(resolution, tuple) or not resolution[0]:
        return None
    return float(metres * 1e6 * resolution[1] / resolution[0])


def olympus_sis(tif: tifffile.TiffFile) -> dict[str, Any]:
    """Olympus Soft Imaging Solutions: tag 33560/33471, on page 0 or (after a preview) 1."""
    for index in range(min(2, len(tif.pages))):
        page = tif.pages[index]
        sis = None
        if isinstance(page, tifffile.TiffPage):
            sis = page.tags.valueof(33560) or page.tags.valueof(33471)
        if isinstance(sis, dict):
            return {
                "pixel_size_um": {
                    axis: um
                    for axis in ("x", "y")
                    if (um := ome.to_um(sis.get(f"pixelsize{axis}"), "m")) is not None
                },
                "detector": {"model": sis.get("cameraname")},
                "acquired": _iso(sis.get("datetime")),
            }
    return {}


def tvips(data: dict[str, Any] | None) -> dict[str, Any]:
    """TVIPS camera header (tag 37706): pixel size in nm, camera, microscope name, date."""
    if not data:
        return {}
    return {
        "pixel_size_um": {
            axis: um
            for axis in ("x", "y")
            if (um := ome.to_um(data.get(f"PixelSize{axis.upper()}"), "nm")) is not None
        },
        "detector": {"model": data.get("CameraType"), "manufacturer": "TVIPS"},
        "instrument_reported": {"model": data.get("TemType")},
        "acquired": _tvips_time(data.get("Date"), data.get("Time")),
    }


def _tvips_time(date: Any, seconds: Any) -> str | None:
    """EM-MENU packs the date as year << 16 | month << 8 | day, the time as seconds of the day.

    Checked on the corpus TVIPS file: 0x07E1040C is 2017-04-12, the date in its image name,
    and 32477 s is the 9:01:17 HyperSpy reads from it.
    """
    if not isinstance(date, int) or not isinstance(seconds, int) or not 0 <= seconds < 86400:
        return None
    try:
        day = dt.date(date >> 16, (date >> 8) & 0xFF, date & 0xFF)
    except ValueError:
        return None
    clock = dt.time(seconds // 3600, seconds // 60 % 60, seconds % 60)
    return dt.datetime.combine(day, clock).isoformat()


#: Micro-Manager's markers in the block it writes between the TIFF header and the first IFD.
_MM_NDTIFF = 483729
_MM_SUMMARY = 2355492
#: Summaries are a few KiB; a longer declared length is a damaged or hostile file.
MM_SUMMARY_CAP = 1 << 20


def micromanager_summary(handle: tifffile.FileHandle, byteorder: str) -> dict[str, Any]:
    """The dataset summary JSON Micro-Manager writes after the 8-byte TIFF header.

    Three layouts: multipage TIFF and NDTiff v1 (summary marker and length at byte 32),
    NDTiff v2 (483729 at byte 8, marker at 16) and v3 (483729, minor version, marker at
    20, length at 24). ``{}`` for anything else, or a summary over ``MM_SUMMARY_CAP``.
    """
    handle.seek(8)
    words = handle.read(32)
    if len(words) < 32:
        return {}
    word = struct.unpack(byteorder + "8I", words)
    if word[0] == _MM_NDTIFF and word[2] == _MM_SUMMARY:
        length, start = word[3], 24
    elif word[0] == _MM_NDTIFF and word[3] == _MM_SUMMARY:
        length, start = word[4], 28
    elif word[6] == _MM_SUMMARY:
        length, start = word[7], 40
    else:
        return {}
    if length > MM_SUMMARY_CAP:
        return {}
    handle.seek(start)
    data = handle.read(length)
    try:
        summary = json.loads(data) if len(data) == length else None
    except ValueError:  # also UnicodeDecodeError
        return {}
    return summary if isinstance(summary, dict) else {}


def micromanager(page: tifffile.TiffPage, summary: dict[str, Any]) -> dict[str, Any]:
    """Micro-Manager's per-image JSON (tag 51123), then its dataset summary for the rest.

    The image tag gives pixel size, camera, the exposure of its own channel, time and
    user; the summary adds the z step, the intended z/c/t sizes and every channel name.
    """
    data = page.tags.valueof(51123)
    if not isinstance(data, dict):
        return {}
    exposure_ms = _float(data.get("Exposure-ms"))
    exposure_s = round(exposure_ms / 1000, 9) if exposure_ms else None
    own = {k: v for k, v in (("name", data.get("Channel")), ("exposure_s", exposure_s)) if v}
    names = [name for name in summary.get("ChNames") or () if isinstance(name, str) and name]
    channels = [own if name == own.get("name") else {"name": name} for name in names]
    size = ome.to_um(data.get("PixelSizeUm"), "µm") or ome.to_um(summary.get("PixelSize_um"), "µm")
    z_step = ome.to_um(summary.get("z-step_um"), "µm")
    version = data.get("MicroManagerVersion") or summary.get("MicroManagerVersion")
    intended = summary.get("IntendedDimensions")
    intended = intended if isinstance(intended, dict) else {}
    return {
        "pixel_size_um": ({"x": size, "y": size} if size else {})
        | ({"z": z_step} if z_step else {}),
        "image": {
            "size_z": _count(intended.get("z"), summary.get("Slices")),
            "size_c": _count(intended.get("channel"), summary.get("Channels")),
            "size_t": _count(intended.get("time"), summary.get("Frames")),
        },
        "detector": {"model": data.get("Camera") or data.get("Core-Camera")},
        "channels": channels or ([own] if own else []),
        "acquired": _micromanager_time(data.get("Time") or summary.get("StartTime")),
        "operator": data.get("UserName") or summary.get("UserName"),
        "instrument_reported": {
            "station_name": data.get("ComputerName") or summary.get("ComputerName"),
            "software": "Micro-Manager" if version else None,
            "software_version": version,
        },
    }


def _count(*candidates: Any) -> int | None:
    """The first candidate that is a positive whole number (JSON ints; not bools)."""
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def leica_scn(text: str | None) -> dict[str, Any]:
    """Leica SCN slide XML: scanner, objective, creation date, and pixel size of image 0.

    The view is given in nanometres; the full-resolution ``dimension`` (r=0) in pixels.
    """
    if not text:
        return {}
    try:
        root = ome.parse_xml(text)
    except (XmlRefused, XmlBroken):
        return {}
    elements = {local(e.tag): e for e in reversed(list(root.iter()))}
    device, view = elements.get("device"), elements.get("view")
    dimensions = [e for e in root.iter() if local(e.tag) == "dimension" and e.get("r") == "0"]
    meta: dict[str, Any] = {
        "instrument_reported": {
            "manufacturer": "Leica" if device is not None else None,
            "model": device.get("model") if device is not None else None,
            "software_version": device.get("version") if device is not None else None,
        },
        "objective": {
            "magnification": _float(_text(elements.get("objective"))),
            "na": _float(_text(elements.get("numericalAperture"))),
        },
        "acquired": _text(elements.get("creationDate")),
    }
    if view is not None and dimensions:
        for axis in ("x", "y"):
            pixels = _float(dimensions[0].get(f"size{axis.upper()}"))
            extent = ome.to_um(view.get(f"size{axis.upper()}"), "nm")
            if pixels and extent:
                meta.setdefault("pixel_size_um", {})[axis] = round(extent / pixels, 9)
    return meta


def _text(element: Any) -> str | None:
    return (element.text or "").strip() or None if element is not None else None


def _float(text: Any) -> float | None:
    try:
        number = float(text)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else None


_MM_TIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d+)?)(?: ([+-]\d{2})(\d{2}))?$"
)


def _micromanager_time(value: Any) -> str | None:
    """``2017-09-18 14:20:46.123 -0700`` as RFC 3339."""
    match = _MM_TIME.match(str(value or "").strip())
    if not match:
        return None
    date, time, hours, minutes = match.groups()
    return f"{date}T{time}{f'{hours}:{minutes}' if hours else ''}"


#: Philips TIFF writes its label and macro images into the XML, base64-encoded JPEG.
_PHILIPS_IMAGE = re.compile(r'(<Attribute\s+Name="PIM_DP_IMAGE_DATA"[^>]*>)([^<]*)(<)')


def philips_description(text: str) -> str:
    """The Philips XML without its base64 images: binary data is not metadata, and the
    label image shows the slide's label, barcode and all."""
    return _PHILIPS_IMAGE.sub(
        lambda match: f"{match[1]}[{len(match[2])} characters of image data left out]{match[3]}",
        text,
    )
