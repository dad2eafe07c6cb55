"""Reads a CZI file's header, its metadata segment's XML, and checks its segment chain.

Imported by ``CziAdapter.extract`` only: czifile and numpy load where CZI files arrive.
"""

from __future__ import annotations

import struct
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, BinaryIO

import czifile
import tifffile

from acqharvest.adapter_api import AdapterError, AdapterOutput, Reader
from acqharvest.adapters import safexml
from acqharvest.adapters.czi import MAGIC
from acqharvest.adapters.safexml import XmlBroken, XmlRefused, parse

#: a segment header: 16-byte id, allocated size, used size (both int64, little-endian)
_SEGMENT = struct.Struct("<16sqq")
#: the metadata segment's own header before its XML: XML size, attachment size, spare
_METADATA_HEADER = 256
#: PixelType -> (pixel type, samples per pixel)
_PIXEL_TYPES = {
    "Gray8": ("uint8", 1),
    "Gray16": ("uint16", 1),
    "Gray32": ("uint32", 1),
    "Gray32Float": ("float32", 1),
    "Gray64Float": ("float64", 1),
    "Gray64ComplexFloat": ("complex64", 1),
    "Bgr24": ("uint8", 3),
    "Bgr48": ("uint16", 3),
    "Bgr96Float": ("float32", 3),
    "Bgra32": ("uint8", 4),
    "Bgr192ComplexFloat": ("complex64", 3),
}
#: Information/Image/Size* -> image key
_SIZES = {
    "SizeX": "size_x",
    "SizeY": "size_y",
    "SizeZ": "size_z",
    "SizeC": "size_c",
    "SizeT": "size_t",
    "SizeS": "scenes",
    "SizeM": "tiles",
}
#: element-to-mapping conversion stops this deep (the sections read are about 8 deep)
_MAX_DEPTH = 16


def read_czi(path: Path, reader: Reader) -> AdapterOutput:
    """Header, completeness and the normalized fields of one CZI file."""
    with reader.open(path) as handle:
        size = handle.seek(0, 2)
        starts = _segment_starts(path, handle, size)
        handle.seek(0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                czi = czifile.CziFile(tifffile.FileHandle(handle, name=path.name, size=size))
                header = czi.header
                xml = _metadata_xml(path, handle, header.metadata_position, starts)
            except (ValueError, struct.error, czifile.SegmentNotFoundError) as exc:
                raise AdapterError(path, f"unreadable CZI header: {exc}") from exc
    notes = [f"czifile: {w.message}" for w in caught]
    file_header = {
        "version": ".".join(str(v) for v in header.version),
        "file_guid": str(header.file_guid),
        "primary_file_guid": str(header.primary_file_guid),
        "file_part": header.file_part,
        "update_pending": header.update_pending,
    }
    if xml is None:
        notes.append(
            "no metadata segment"
            + (f" (file part {header.file_part} of a multi-file CZI)" if header.file_part else "")
        )
        return AdapterOutput(
            format="Zeiss CZI",
            metadata={},
            original_metadata={"file_header": file_header},
            warnings=tuple(notes),
        )
    try:
        root = parse(xml)
    except (XmlRefused, XmlBroken) as exc:
        raise AdapterError(path, f"metadata segment: {exc}") from exc
    metadata, acquired = _normalized(root)
    original: dict[str, Any] = {"file_header": file_header}
    for section in ("Information", "Scaling"):
        found = root.find(f"Metadata/{section}")
        if found is not None:
            original[section.lower()] = _as_mapping(found)
    return AdapterOutput(
        format="Zeiss CZI",
        metadata=metadata,
        original_metadata=original,
        started=acquired,
        warnings=tuple(notes),
    )


def _segment_starts(path: Path, handle: BinaryIO, size: int) -> set[int]:
    """Offsets of every segment, walked from the file header to the end of the file.

    The cheapest whole-file test a CZI allows: each segment header says how far the next
    one is, so a file cut short (or a header lying about a size) ends inside a segment.
    Only 32 bytes are read per segment; subblocks themselves are skipped over.
    """
    starts = set()
    position = 0
    while position < size:
        handle.seek(position)
        raw = handle.read(_SEGMENT.size)
        if len(raw) < _SEGMENT.size:
            raise AdapterError(path, f"truncated: segment header at {position} cut short")
        sid, allocated, _ = _SEGMENT.unpack(raw)
        name = sid.rstrip(b"\0").decode("ascii", errors="replace")
        # czifile takes any other id for an unknown segment and fails on it with an
        # AttributeError (found by atheris: "ZISRAWFILE" followed by a stray byte)
        if position == 0 and sid.rstrip(b"\0") != MAGIC:
            raise AdapterError(path, f"not a CZI file (no ZISRAWFILE header: {sid!r})")
        if not sid.startswith((b"ZISRAW", b"DELETED")):
            raise AdapterError(path, f"no segment at {position} (found {sid[:16]!r})")
        end = position + _SEGMENT.size + allocated
        if allocated < 0 or end > size:
            raise AdapterError(
                path,
                f"truncated: segment {name} at {position} declares {allocated} bytes, "
                f"the file ends at {size}",
            )
        starts.add(position)
        position = end
    return starts


def _metadata_xml(path: Path, handle: BinaryIO, position: int, starts: set[int]) -> str | None:
    """The metadata segment's XML, or None when the file header points to none."""
    if position == 0:
        return None
    if position not in starts:
        raise AdapterError(path, f"the file header's metadata position {position} is no segment")
    segment = czifile.Segment(handle, position)
    if segment.sid != czifile.MetadataSegment.SID:
        raise AdapterError(path, f"the segment at {position} is {segment.sid}, not metadata")
    data = segment.data()
    room = segment.used_size - _METADATA_HEADER
    if not 0 <= data.xml_size <= room:
        raise AdapterError(
            path, f"metadata XML size {data.xml_size} exceeds its segment ({room} bytes)"
        )
    text: str = data.data(raw=True)
    return text


def _normalized(root: ET.Element) -> tuple[dict[str, Any], str | None]:
    info = root.find("Metadata/Information")
    image = info.find("Image") if info is not None else None
    out: dict[str, Any] = {}
    if info is None or image is None:
        return _with_scaling(root, out), None
    sizes = {key: _int(image.findtext(tag)) for tag, key in _SIZES.items()}
    # ZEN writes the pixel type for the image, or (older files) only for each channel
    first = image.find("Dimensions/Channels/Channel")
    stated = image.findtext("PixelType") or _find(first, "PixelType") or ""
    pixel_type, samples = _PIXEL_TYPES.get(stated, (None, None))
    picture = {
        **sizes,
        "pixel_type": pixel_type,
        "bits": _int(image.findtext("ComponentBitCount") or _find(first, "ComponentBitCount")),
        "samples_per_pixel": samples if samples and samples > 1 else None,
    }
    out["image"] = _clean(picture)
    acquired = _date(image.findtext("AcquisitionDateAndTime")) or _date(
        image.findtext("Dimensions/T/StartTime")
    )
    out["acquired"] = acquired
    out["operator"] = safexml.text(info.findtext("Document/UserName")) or safexml.text(
        info.findtext("User/UserName")
    )
    instrument = info.find("Instrument")
    microscope = _chosen(instrument, "Microscopes/Microscope", image.find("MicroscopeRef"))
    out["instrument_reported"] = _clean(
        {
            "manufacturer": safexml.text(_find(microscope, "Manufacturer/Manufacturer")),
            "model": _model(microscope),
            "serial_number": safexml.text(_find(microscope, "Manufacturer/SerialNumber")),
            "type": safexml.text(_find(microscope, "Type")),
            "software": safexml.text(info.findtext("Application/Name")),
            "software_version": safexml.text(info.findtext("Application/Version")),
        }
    )
    settings = image.find("ObjectiveSettings")
    objective = _chosen(
        instrument,
        "Objectives/Objective",
        settings.find("ObjectiveRef") if settings is not None else None,
    )
    out["objective"] = _clean(
        {
            "model": _model(objective),
            "manufacturer": safexml.text(_find(objective, "Manufacturer/Manufacturer")),
            "magnification": safexml.number(_find(objective, "NominalMagnification")),
            "na": safexml.number(_find(objective, "LensNA")),
            "immersion": safexml.text(_find(objective, "Immersion"))
            or safexml.text(settings.findtext("Medium") if settings is not None else None),
            # ZEN writes it in micrometres
            "working_distance_um": _positive(_find(objective, "WorkingDistance")),
        }
    )
    channels = image.findall("Dimensions/Channels/Channel")
    first_detector = channels[0].find("DetectorSettings/Detector") if channels else None
    detector = _chosen(instrument, "Detectors/Detector", first_detector, only=False)
    out["detector"] = _detector(detector)
    every = instrument.findall("Detectors/Detector") if instrument is not None else []
    out["detectors"] = [d for d in (_detector(e) for e in every) if d] or None
    out["channels"] = [c for c in (_channel(e, instrument) for e in channels) if c] or None
    out["modality"] = safexml.text(channels[0].findtext("AcquisitionMode")) if channels else None
    return _with_scaling(root, _clean(out)), acquired


def _with_scaling(root: ET.Element, out: dict[str, Any]) -> dict[str, Any]:
    sizes = {}
    for distance in root.findall("Metadata/Scaling/Items/Distance"):
        axis = (distance.get("Id") or "").lower()
        metres = safexml.number(distance.findtext("Value"))
        if axis in ("x", "y", "z") and metres is not None and metres > 0:
            sizes[axis] = metres * 1e6
    if sizes:
        out["pixel_size_um"] = sizes
    return out


def _channel(element: ET.Element, instrument: ET.Element | None) -> dict[str, Any]:
    exposure_ns = safexml.number(element.findtext("ExposureTime"))
    binning = safexml.text(element.findtext("DetectorSettings/Binning"))
    return _clean(
        {
            "name": safexml.text(element.get("Name")),
            "fluor": safexml.text(element.findtext("Fluor")),
            "excitation_nm": safexml.number(element.findtext("ExcitationWavelength")),
            "emission_nm": safexml.number(element.findtext("EmissionWavelength")),
            "exposure_s": exposure_ns / 1e9 if exposure_ns is not None else None,
            "illumination": safexml.text(element.findtext("IlluminationType")),
            "contrast_method": safexml.text(element.findtext("ContrastMethod")),
            "acquisition_mode": safexml.text(element.findtext("AcquisitionMode")),
            # ZEN writes "1,1" where OME writes "1x1"
            "detector_settings": _clean(
                {"binning": binning.replace(",", "x") if binning else None}
            ),
            "light_source": _light_source(element, instrument),
            "filters": _filters(element, instrument),
        }
    )


def _light_source(channel: ET.Element, instrument: ET.Element | None) -> dict[str, Any]:
    """The first LightSource the channel's settings name: its kind and model."""
    ref = channel.find("LightSourcesSettings/LightSourceSettings/LightSource")
    if ref is None:
        return {}
    source = _by_id(instrument, "LightSources/LightSource", ref)
    kind = source.find("LightSourceType") if source is not None else None
    return _clean(
        {
            "type": kind[0].tag if kind is not None and len(kind) else None,
            "model": _model(source),
        }
    )


def _filters(channel: ET.Element, instrument: ET.Element | None) -> dict[str, Any]:
    """The FilterSet the channel names: its filters' models and pass bands (nm)."""
    ref = channel.find("FilterSetRef")
    if ref is None:
        return {}
    filter_set = _by_id(instrument, "FilterSets/FilterSet", ref)
    found: dict[str, Any] = {}
    for kind in ("Excitation", "Emission"):
        element = _by_id(
            instrument,
            "Filters/Filter",
            filter_set.find(f"{kind}Filters/{kind}FilterRef") if filter_set is not None else None,
        )
        band = element.find("TransmittanceRange") if element is not None else None
        edges = (
            [_positive(band.findtext(edge)) for edge in ("CutIn", "CutOut")]
            if band is not None
            else []
        )
        found[kind.lower()] = _model(element) if element is not None else None
        found[f"{kind.lower()}_nm"] = edges if edges and None not in edges else None
    return _clean(found)


def _positive(value: str | None) -> float | None:
    number = safexml.number(value)
    return number if number is not None and number > 0 else None


def _detector(element: ET.Element | None) -> dict[str, Any]:
    return _clean(
        {
            "model": _model(element),
            "manufacturer": safexml.text(_find(element, "Manufacturer/Manufacturer")),
            "type": safexml.text(_find(element, "Type")),
        }
    )


def _chosen(
    instrument: ET.Element | None, path: str, ref: ET.Element | None, *, only: bool = True
) -> ET.Element | None:
    """The element ``ref`` points to by Id; else the only one (``only``) or the first."""
    if instrument is None:
        return None
    candidates = instrument.findall(path)
    wanted = ref.get("Id") if ref is not None else None
    for candidate in candidates:
        if wanted is not None and candidate.get("Id") == wanted:
            return candidate
    if only:
        return candidates[0] if len(candidates) == 1 else None
    return candidates[0] if candidates else None


def _by_id(instrument: ET.Element | None, path: str, ref: ET.Element | None) -> ET.Element | None:
    """The element at ``path`` whose Id ``ref`` names; None when it names none of them."""
    wanted = ref.get("Id") if ref is not None else None
    if instrument is None or wanted is None:
        return None
    return next((e for e in instrument.findall(path) if e.get("Id") == wanted), None)


def _model(element: ET.Element | None) -> str | None:
    if element is None:
        return None
    return safexml.text(element.findtext("Manufacturer/Model")) or safexml.text(element.get("Name"))


def _find(element: ET.Element | None, path: str) -> str | None:
    return element.findtext(path) if element is not None else None


def _int(value: str | None) -> int | None:
    number = safexml.number(value)
    return int(number) if number is not None and number.is_integer() and number > 0 else None


def _date(value: str | None) -> str | None:
    """An RFC 3339 date-time as the file writes it (7 fraction digits), not year 1."""
    text = safexml.text(value)
    if text is None or text.startswith("0001-"):
        return None
    return text


def _clean(mapping: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if value not in (None, {}, [])}


def _as_mapping(element: ET.Element, depth: int = 0) -> Any:
    """An element as nested mappings: attributes, children by tag (lists when repeated)."""
    children = list(element)
    text = safexml.text(element.text)
    if not children and not element.attrib:
        return text
    if depth >= _MAX_DEPTH:
        return "<nested too deep>"
    out: dict[str, Any] = {f"@{k}": v for k, v in element.attrib.items()}
    for child in children:
        value = _as_mapping(child, depth + 1)
        if child.tag in out:
            existing = out[child.tag]
            out[child.tag] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            out[child.tag] = value
    if text is not None:
        out["#text"] = text
    return out
