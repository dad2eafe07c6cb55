"""The TIFF adapter's normalized fields from page 0's tags and the vendor metadata found:
image size, pixel size, instrument, acquisition time and vendor extras.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import tifffile

from acqharvest.adapters.tiff import ome


def fill_image(
    meta: dict[str, Any], page: tifffile.TiffPage, frames: int, vendor: dict[str, Any]
) -> None:
    image = dict(meta.get("image", {}))
    image.setdefault("size_x", int(page.imagewidth))
    image.setdefault("size_y", int(page.imagelength))
    imagej = vendor.get("imagej") or {}
    lsm = vendor.get("lsm") or {}
    for key, ij_key, lsm_key in (
        ("size_z", "slices", "DimensionZ"),
        ("size_c", "channels", "DimensionChannels"),
        ("size_t", "frames", "DimensionTime"),
    ):
        found = imagej.get(ij_key) or lsm.get(lsm_key)
        if found and key not in image:
            image[key] = int(found)
    if "size_c" not in image and page.samplesperpixel > 1:
        image["size_c"] = int(page.samplesperpixel)
    image["bits"] = int(page.bitspersample)
    image.setdefault("pixel_type", str(page.dtype) if page.dtype is not None else None)
    image.setdefault("frames", frames)
    meta["image"] = {k: v for k, v in image.items() if v is not None}


def fill_pixel_size(
    meta: dict[str, Any], page: tifffile.TiffPage, vendor: dict[str, Any], trust_resolution: bool
) -> None:
    """Vendor calibrations, then resolution tags unless OME-XML (the authority) is present."""
    size = dict(meta.get("pixel_size_um", {}))
    for candidate in (
        _lsm_size(vendor.get("lsm")),
        _fei_size(vendor.get("fei")),
        _zeiss_sem_size(vendor.get("sem")),
        _svs_size(vendor.get("svs")),
        _imagej_size(page, vendor.get("imagej")),
        _resolution_size(page) if trust_resolution else {},
    ):
        for axis, value in candidate.items():
            size.setdefault(axis, value)
    if size:
        meta["pixel_size_um"] = size


def _lsm_size(lsm: dict[str, Any] | None) -> dict[str, float]:
    if not lsm:
        return {}
    out = {}
    for axis in ("X", "Y", "Z"):
        metres = lsm.get(f"VoxelSize{axis}")
        # LSM writes 1e-19 for "no Z"; anything under a picometre is not a real spacing
        if isinstance(metres, (int, float)) and metres > 1e-12:
            out[axis.lower()] = round(float(metres) * 1e6, 9)
    return out


def _fei_size(fei: dict[str, Any] | None) -> dict[str, float]:
    scan = (fei or {}).get("Scan") or {}
    out = {}
    for axis, key in (("x", "PixelWidth"), ("y", "PixelHeight")):
        metres = scan.get(key)
        if isinstance(metres, (int, float)) and metres > 0:
            out[axis] = round(float(metres) * 1e6, 9)
    return out


def _zeiss_sem_size(sem: dict[str, Any] | None) -> dict[str, float]:
    entry = (sem or {}).get("ap_pixel_size")
    if isinstance(entry, tuple) and len(entry) >= 3:
        um = ome.to_um(entry[1], str(entry[2]))
        if um is not None:
            return {"x": um, "y": um}
    return {}


def _svs_size(svs: dict[str, Any] | None) -> dict[str, float]:
    mpp = (svs or {}).get("MPP")
    if isinstance(mpp, (int, float)) and mpp > 0:
        return {"x": float(mpp), "y": float(mpp)}
    return {}


def _imagej_size(page: tifffile.TiffPage, imagej: dict[str, Any] | None) -> dict[str, float]:
    if not imagej:
        return {}
    unit = str(imagej.get("unit", "")).replace("\\u00B5", "µ")
    factor = ome.UNITS_UM.get(unit)
    if factor is None:
        return {}
    out: dict[str, float] = {}
    spacing = imagej.get("spacing")
    if isinstance(spacing, (int, float)) and spacing > 0:
        out["z"] = round(float(spacing) * factor, 9)
    if _resolution_unit(page) == 1:
        for axis, name in (("x", "XResolution"), ("y", "YResolution")):
            per_unit = _rational(page, name)
            if per_unit:
                out[axis] = round(factor / per_unit, 9)
    return out


def _resolution_size(page: tifffile.TiffPage) -> dict[str, float]:
    # Only centimetre units: an inch resolution (also the TIFF default) is the print or
    # screen DPI (72, 96, 150...) in every instrument file seen, not the sampling.
    if _resolution_unit(page) != 3:
        return {}
    um_per_unit = 10000.0
    out = {}
    for axis, name in (("x", "XResolution"), ("y", "YResolution")):
        per_unit = _rational(page, name)
        if per_unit:
            out[axis] = round(um_per_unit / per_unit, 9)
    return out


def _resolution_unit(page: tifffile.TiffPage) -> int:
    tag = page.tags.get("ResolutionUnit")
    try:
        return int(tag.value) if tag is not None else 2  # TIFF default: inch
    except (TypeError, ValueError):
        return 0


def _rational(page: tifffile.TiffPage, name: str) -> float | None:
    tag = page.tags.get(name)
    if tag is None:
        return None
    value = tag.value
    try:
        numerator, denominator = (value[0], value[1]) if isinstance(value, tuple) else (value, 1)
        ratio = float(numerator) / float(denominator)
    except (TypeError, ValueError, ZeroDivisionError, IndexError):
        return None
    # 1 pixel per unit is the "not set" placeholder many writers leave
    return ratio if ratio > 0 and ratio != 1 else None


def fill_instrument(meta: dict[str, Any], page: tifffile.TiffPage, vendor: dict[str, Any]) -> None:
    instrument = dict(meta.get("instrument_reported", {}))
    fei_system = (vendor.get("fei") or {}).get("System") or {}
    sem = vendor.get("sem") or {}
    ndpi = vendor.get("ndpi") or {}
    svs = vendor.get("svs") or {}
    streak = vendor.get("streak") or {}
    application = streak.get("Application") or {}
    camera_serial = str((streak.get("Camera") or {}).get("SerialNumber") or "")
    candidates = {
        "manufacturer": (
            _tag_text(page, "Make"),
            # the Aperio header, from a ScanScope (Aperio's scanners) by its own ID
            "Aperio" if svs.get("ScanScope ID") else None,
        ),
        "model": (
            _tag_text(page, "Model"),
            fei_system.get("SystemType"),
            _sem_value(sem, "dp_sem"),
            (streak.get("Streak camera") or {}).get("DeviceName"),
        ),
        "serial_number": (
            fei_system.get("Dnumber"),
            _sem_value(sem, "sv_serial_number"),
            ndpi.get("ScannerSerialNumber"),
            svs.get("ScanScope ID"),
            re.sub(r"^S/N:\s*", "", camera_serial),
        ),
        "software": (
            _tag_text(page, "Software"),
            fei_system.get("Software"),
            application.get("Software"),
        ),
        "software_version": (_sem_value(sem, "sv_version"), application.get("SoftwareVersion")),
        "station_name": (_tag_text(page, "HostComputer"),),
    }
    for key, values in candidates.items():
        for found in values:
            if key not in instrument and found not in (None, ""):
                instrument[key] = str(found).strip()
    if instrument:
        meta["instrument_reported"] = instrument


def fill_acquired(meta: dict[str, Any], page: tifffile.TiffPage, vendor: dict[str, Any]) -> None:
    if "acquired" in meta:
        return
    fei_user = (vendor.get("fei") or {}).get("User") or {}
    svs = vendor.get("svs") or {}
    sem = vendor.get("sem") or {}
    stamp = (
        _us_datetime(fei_user.get("Date"), fei_user.get("Time"))
        or _us_datetime(svs.get("Date"), svs.get("Time"))
        or _day_month_datetime(_sem_value(sem, "ap_date"), _sem_value(sem, "ap_time"))
        or _tiff_datetime(_tag_text(page, "DateTime"))
    )
    if stamp:
        meta["acquired"] = stamp


def fill_vendor_extras(meta: dict[str, Any], vendor: dict[str, Any]) -> None:
    objective = dict(meta.get("objective", {}))
    scan_info = (vendor.get("lsm") or {}).get("ScanInformation") or {}
    for magnification in (
        (vendor.get("svs") or {}).get("AppMag"),
        (vendor.get("ndpi") or {}).get("Magnification"),
    ):
        if isinstance(magnification, (int, float)) and magnification > 0:
            objective.setdefault("magnification", float(magnification))
    if objective:
        meta["objective"] = objective

    detector = dict(meta.get("detector", {}))
    fei_detectors = (vendor.get("fei") or {}).get("Detectors") or {}
    if fei_detectors.get("Name"):
        detector.setdefault("model", str(fei_detectors["Name"]))
        if fei_detectors.get("Mode") not in (None, "", "None"):
            detector.setdefault("type", str(fei_detectors["Mode"]))
    sem_detector = _sem_value(vendor.get("sem") or {}, "dp_detector_channel")
    if sem_detector:
        detector.setdefault("model", str(sem_detector))
    camera = (vendor.get("streak") or {}).get("Camera") or {}
    if camera.get("CameraName"):
        detector.setdefault("model", str(camera["CameraName"]))
    if detector:
        meta["detector"] = detector

    if "operator" not in meta:
        for operator in (
            ((vendor.get("fei") or {}).get("User") or {}).get("User"),
            _sem_value(vendor.get("sem") or {}, "sv_user_name"),
            scan_info.get("User"),
        ):
            if operator:
                meta["operator"] = str(operator)
                break


def _sem_value(sem: dict[str, Any], key: str) -> Any:
    entry = sem.get(key)
    return entry[1] if isinstance(entry, tuple) and len(entry) >= 2 and entry[1] != "" else None


def _tag_text(page: tifffile.TiffPage, name: str) -> str | None:
    tag = page.tags.get(name)
    if tag is None or not isinstance(tag.value, str):
        return None
    return tag.value.strip("\x00 ").strip() or None


_TIFF_DT = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_US_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{2}|\d{4})$")
_US_TIME = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})(?:\.\d+)?\s*([AP]M)?$", re.IGNORECASE)


def _tiff_datetime(text: str | None) -> str | None:
    match = _TIFF_DT.match(text or "")
    if not match:
        return None
    y, mo, d, hh, mm, ss = match.groups()
    if y == "0000" or not 1 <= int(mo) <= 12:
        return None
    return f"{y}-{mo}-{d}T{hh}:{mm}:{ss}"


def _us_datetime(date: Any, time: Any) -> str | None:
    """``MM/DD/YY[YY]`` plus ``HH:MM:SS [AM|PM]`` (FEI, Aperio) as ISO 8601."""
    dmatch = _US_DATE.match(str(date or "").strip())
    if not dmatch:
        return None
    month, day, year = (int(p) for p in dmatch.groups())
    if year < 100:
        year += 2000 if year < 70 else 1900
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    stamp = f"{year:04d}-{month:02d}-{day:02d}"
    tmatch = _US_TIME.match(str(time or "").strip())
    if not tmatch:
        return stamp
    hour, minute, second = (int(p) for p in tmatch.groups()[:3])
    meridiem = (tmatch.group(4) or "").upper()
    if meridiem == "PM" and hour < 12:
        hour += 12
    elif meridiem == "AM" and hour == 12:
        hour = 0
    return f"{stamp}T{hour:02d}:{minute:02d}:{second:02d}"


def _day_month_datetime(date: Any, time: Any) -> str | None:
    """Zeiss SEM ``23 Dec 2015`` plus ``9:40:32`` as ISO 8601."""
    try:
        # the file gives no offset: local instrument time, reported as written
        day = dt.datetime.strptime(str(date).strip(), "%d %b %Y").date()  # noqa: DTZ007
        clock = dt.datetime.strptime(str(time).strip(), "%H:%M:%S").time()  # noqa: DTZ007
    except ValueError:
        return None
    return dt.datetime.combine(day, clock).isoformat()
