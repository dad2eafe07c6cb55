"""Reading TIFF headers with tifffile: page-0 tags, OME-XML, ImageJ and vendor metadata."""

from __future__ import annotations

import datetime as dt
import re
import warnings
from collections.abc import Callable
from typing import Any

import tifffile
from tifffile.tifffile import (
    TIFF,
    matlabstr2py,
    scanimage_description_metadata,
    svs_description_metadata,
)

from acqharvest.adapter_api import AdapterError, AdapterOutput, Draft, Reader
from acqharvest.adapters.tiff import FLAVOURS, flavours, ome, omeset, vendors
from acqharvest.adapters.tiff.extent import check_extents
from acqharvest.adapters.tiff.identifiers import slide_identifiers
from acqharvest.adapters.tiff.omeset import OME_XML_CAP
from acqharvest.adapters.tiff.safexml import MAX_BYTES, XmlBroken, XmlRefused
from acqharvest.adapters.tiff.values import jsonable, tag_value


def read_tiff(draft: Draft, reader: Reader) -> AdapterOutput:
    """Tags, OME-XML and vendor metadata of a TIFF (and its OME set); never pixel data."""
    path = draft.primary
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with reader.open(path) as handle:
                size = handle.seek(0, 2)
                handle.seek(0)
                if size == 0:
                    raise AdapterError(path, "empty file")
                check_extents(path, handle, size)
                handle.seek(0)
                with tifffile.TiffFile(handle, name=path.name) as tif:
                    output = _read(draft, reader, tif)
        except AdapterError:
            raise
        except Exception as exc:  # tifffile raises many unrelated types on bad input
            raise AdapterError(path, f"unreadable TIFF: {type(exc).__name__}: {exc}") from exc
    notes = tuple(dict.fromkeys(f"tifffile: {w.message}" for w in caught))
    return AdapterOutput(
        format=output.format,
        metadata=output.metadata,
        original_metadata=output.original_metadata,
        started=output.started,
        warnings=(*output.warnings, *notes),
        identifiers=output.identifiers,
    )


def _read(draft: Draft, reader: Reader, tif: tifffile.TiffFile) -> AdapterOutput:
    page = tif.pages.first
    frames = len(tif.pages)
    flags = _flags(tif)
    notes: list[str] = []
    meta: dict[str, Any] = {}
    original: dict[str, Any] = {"tags": _tags(page)}

    ome_xml = tif.ome_metadata if "ome" in flags else None
    fmt = "OME-TIFF" if ome_xml else "TIFF"
    if ome_xml:
        meta = _read_ome(draft, reader, ome_xml, original, notes)
    vendor: dict[str, Any] = {}
    for flag, name, prop in FLAVOURS:
        if flag not in flags:
            continue
        if fmt == "TIFF":
            fmt = name
        if prop is not None:
            data = getattr(tif, prop, None)
            if data:
                vendor[flag] = data
                original[prop] = jsonable(data)
    if "svs" in flags and page.description:
        vendor["svs"] = svs_description_metadata(page.description)
        original["svs_metadata"] = jsonable(vendor["svs"])
    if "ndpi" in flags:
        vendor["ndpi"] = page.ndpi_tags or {}
        original["ndpi_metadata"] = jsonable(vendor["ndpi"])
    mm_summary: dict[str, Any] = {}
    if "micromanager" in flags and not tif.is_bigtiff:
        # Not tifffile's micromanager_metadata: that also reads the index map and display
        # settings at the end of the file, with no cap on their declared lengths.
        mm_summary = vendors.micromanager_summary(tif.filehandle, tif.byteorder)
        if mm_summary:
            original["micromanager_summary"] = jsonable(mm_summary)

    for name, found in (
        ("TIFF (Gatan DigitalMicrograph)", vendors.gatan(page)),
        ("TIFF (JEOL SightX)", vendors.jeol_sightx(page)),
        ("TIFF (Olympus SIS)", vendors.olympus_sis(tif)),
        ("TIFF (TVIPS)", vendors.tvips(vendor.get("tvips"))),
        ("TIFF (Micro-Manager)", vendors.micromanager(page, mm_summary)),
        ("TIFF (Leica SCN)", vendors.leica_scn(tif.scn_metadata if "scn" in flags else None)),
    ):
        if found:
            fmt = name if fmt == "TIFF" else fmt
            _merge(meta, found)
    for found in (
        flavours.lsm(vendor.get("lsm")),
        flavours.stk(vendor.get("stk")),
        flavours.fluoview(vendor.get("fluoview")),
        flavours.nih(vendor.get("nih")),
        flavours.scanimage(*_scanimage_headers(tif)) if "scanimage" in flags else {},
    ):
        _merge(meta, found)
    _fill_image(meta, page, frames, vendor)
    _fill_pixel_size(meta, page, vendor, trust_resolution=fmt != "OME-TIFF")
    _fill_instrument(meta, page, vendor)
    _fill_acquired(meta, page, vendor)
    _fill_vendor_extras(meta, vendor)
    if "philips" in flags and "ImageDescription" in original["tags"]:
        original["tags"]["ImageDescription"] = vendors.philips_description(page.description)
    return AdapterOutput(
        format=fmt,
        metadata=meta,
        original_metadata=original,
        started=meta.get("acquired"),
        warnings=tuple(notes),
        identifiers=slide_identifiers(flags, page, meta, original),
    )


def _read_ome(
    draft: Draft, reader: Reader, xml: str, original: dict[str, Any], notes: list[str]
) -> dict[str, Any]:
    """Normalized fields from the OME-XML, with the set's files when it names others."""
    original["ome_xml"] = xml[:OME_XML_CAP]
    if len(xml) > OME_XML_CAP:
        notes.append(f"OME-XML is {len(xml)} characters; kept the first {OME_XML_CAP}")
    if len(xml.encode("utf-8")) > MAX_BYTES:
        notes.append(f"OME-XML is over {MAX_BYTES} bytes; not parsed, TIFF tags only")
        return {}
    try:
        root = ome.parse_xml(xml)
    except XmlRefused as exc:
        raise AdapterError(draft.primary, f"OME-XML refused: {exc}") from exc
    except XmlBroken as exc:
        notes.append(f"OME-XML {exc}")
        return {}
    meta, summary, ome_notes = ome.normalized(root)
    original.update(summary)
    notes.extend(ome_notes)
    links = ome.links(root, draft.primary.name)
    if links.metadata_file is not None:
        # Had the metadata file been found, it would be the primary: the set is incomplete.
        notes.append(
            f"{links.metadata_file}: the metadata file this BinaryOnly OME-TIFF names is not "
            f"in the acquisition; only the TIFF tags of {len(draft.members)} file(s) were read"
        )
        meta["instances"] = len(draft.members)
    elif len(draft.members) > 1 or len(links.files) > 1:
        original["ome_files"], set_notes = omeset.report(draft, reader, root, meta)
        notes.extend(set_notes)
    return meta


def _scanimage_headers(tif: tifffile.TiffFile) -> tuple[dict[str, Any], dict[str, Any]]:
    """ScanImage's ``SI.*`` settings and page 0's frame data, parsed as tifffile does.

    The settings are in the BigTIFF header block when there is one, else in the Software
    tag (ScanImage 2016 and later); ScanImage 3 writes ``state.*`` lines, which hold no
    calibration and parse to nothing used here.
    """
    page = tif.pages.first
    frame = (tif.scanimage_metadata or {}).get("FrameData")
    if not isinstance(frame, dict):
        frame = _parsed(matlabstr2py, page.software) if page.software.startswith("SI.") else {}
    return frame, _parsed(scanimage_description_metadata, page.description)


def _parsed(parse: Callable[[str], Any], text: str) -> dict[str, Any]:
    """``parse(text)`` when it gives a dict; text tifffile cannot parse calibrates nothing."""
    try:
        value = parse(text)
    except Exception:  # noqa: BLE001 - tifffile's MATLAB-string parser raises many types
        return {}
    return value if isinstance(value, dict) else {}


#: tifffile decides these by reading all of Micro-Manager's non-TIFF block, whatever lengths
#: it declares (index map, display settings, comments); the adapter needs neither flag.
_UNREAD_FLAGS = frozenset({"mmstack", "ndtiff"})


def _flags(tif: tifffile.TiffFile) -> set[str]:
    """``tif.flags`` without those that read beyond the headers the adapter uses."""
    return {name.lower() for name in TIFF.FILE_FLAGS - _UNREAD_FLAGS if getattr(tif, "is_" + name)}


def _merge(meta: dict[str, Any], found: dict[str, Any]) -> None:
    """Add ``found``'s non-empty values to ``meta`` where ``meta`` has none yet."""
    for key, value in found.items():
        if isinstance(value, dict):
            section = meta.setdefault(key, {})
            for sub, item in value.items():
                if item not in (None, ""):
                    section.setdefault(sub, item)
            if not section:
                del meta[key]
        elif value not in (None, "", []):
            meta.setdefault(key, value)


def _tags(page: tifffile.TiffPage) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag in page.tags.values():
        converted = tag_value(tag)
        if converted is not None:
            out[tag.name] = converted
    return out


# --------------------------------------------------------------------------- normalized


def _fill_image(
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


def _fill_pixel_size(
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


def _fill_instrument(meta: dict[str, Any], page: tifffile.TiffPage, vendor: dict[str, Any]) -> None:
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


def _fill_acquired(meta: dict[str, Any], page: tifffile.TiffPage, vendor: dict[str, Any]) -> None:
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


def _fill_vendor_extras(meta: dict[str, Any], vendor: dict[str, Any]) -> None:
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
