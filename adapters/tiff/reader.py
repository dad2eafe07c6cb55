"""Reading TIFF headers with tifffile: page-0 tags, OME-XML, ImageJ and vendor metadata."""

from __future__ import annotations

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
from acqharvest.adapters.safexml import MAX_BYTES, XmlBroken, XmlRefused
from acqharvest.adapters.tiff import FLAVOURS, flavours, ome, ome_links, omeset, vendors
from acqharvest.adapters.tiff.extent import check_extents
from acqharvest.adapters.tiff.identifiers import slide_identifiers
from acqharvest.adapters.tiff.normalize import (
    fill_acquired,
    fill_image,
    fill_instrument,
    fill_pixel_size,
    fill_vendor_extras,
)
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
    fill_image(meta, page, frames, vendor)
    fill_pixel_size(meta, page, vendor, trust_resolution=fmt != "OME-TIFF")
    fill_instrument(meta, page, vendor)
    fill_acquired(meta, page, vendor)
    fill_vendor_extras(meta, vendor)
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
    ome.keep_xml(xml, draft.original_metadata_max_bytes, original, notes)
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
    links = ome_links.links(root, draft.primary.name)
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
