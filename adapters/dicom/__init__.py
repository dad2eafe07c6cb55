"""DICOM adapter: one acquisition per series, read from one representative header.

Formats and variants: DICOM Part 10 files (128-byte preamble + ``DICM``) in any transfer
syntax pydicom parses (implicit/explicit VR little endian, big endian, deflated, and every
encapsulated syntax: JPEG, JPEG-LS, JPEG 2000, HTJ2K, RLE), single- and multi-frame,
enhanced (functional groups) objects, and old ACR-NEMA style files with no preamble and
no file meta group, whose head parses as group 0002/0008 elements.

Fields filled: modality, acquisition time (``acquired``, RFC 3339, applying
TimezoneOffsetFromUTC), instrument as reported (manufacturer, model, serial number,
software, station name), image geometry (size, frames, bits, pixel type), pixel size in
micrometres (PixelSpacing or the shared/per-frame PixelMeasuresSequence), study and
series UIDs and descriptions, protocol, body part, SOP class and transfer syntax names,
field strength, slice thickness and the number of instances in the series.
``original_metadata`` holds every public, non-binary element of the representative
header (patient tags included: de-identification is the agent's job), sequences to depth 3.

Deliberately not read: pixel data (reading stops at (7FE0,0010)/(7FE0,0008)/(7FE0,0009);
for encapsulated data only the 8-byte fragment item headers are read, to detect
truncation), binary elements (OB/OW/OF/OD/OL/OV/UN), private tags without a keyword,
values over 64 KiB, and any instance of a series except the primary.

Proved by every file under ``dicom/`` in the corpus, notably ``dicom/no-preamble/*`` and
``dicom/ot/OT-PAL-8-face.dcm`` (no preamble, no file meta),
``dicom/ct-enhanced/eCT_Supplemental.dcm`` (functional groups, timezone),
``dicom/parametric-map/parametric_map_float.dcm`` (float pixels) and
``dicom/rg/RG3_J2KI.dcm`` (headers-only byte budget).
"""

from __future__ import annotations

import warnings
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from acqharvest.adapter_api import (
    AdapterError,
    AdapterInfo,
    AdapterOutput,
    Claim,
    Draft,
    FileProbe,
    FormatSpec,
    Reader,
    normalized_fields,
)
from acqharvest.adapters.dicom.reader import (
    Header,
    Undecided,
    dataset_json,
    first_item,
    has_preamble,
    looks_headless,
    read_header,
    read_series_uid,
    rfc3339,
    rfc3339_dt,
    series_uid_in_head,
    value,
)

__all__ = ["DicomAdapter"]

_FIELDS = normalized_fields(
    {
        "modality": "Modality (0008,0060), e.g. CT, MR, SM",
        "acquired": "acquisition start, RFC 3339; date alone if no time",
        "instrument_reported.manufacturer": "Manufacturer (0008,0070)",
        "instrument_reported.model": "ManufacturerModelName (0008,1090)",
        "instrument_reported.serial_number": "DeviceSerialNumber",
        "instrument_reported.software": "SoftwareVersions, joined",
        "instrument_reported.station_name": "StationName (0008,1010)",
        "image.size_x": "Columns",
        "image.size_y": "Rows",
        "image.frames": "NumberOfFrames, 1 when absent",
        "image.bits": "BitsAllocated",
        "image.pixel_type": "e.g. uint16, int16, float32, bit",
        "image.samples_per_pixel": "SamplesPerPixel",
        "image.photometric": "PhotometricInterpretation",
        "pixel_size_um.x": "column spacing (PixelSpacing[1])",
        "pixel_size_um.y": "row spacing (PixelSpacing[0])",
        "study_uid": "StudyInstanceUID",
        "series_uid": "SeriesInstanceUID",
        "series_description": "SeriesDescription",
        "protocol_name": "ProtocolName",
        "body_part": "BodyPartExamined",
        "sop_class": "SOPClassUID, as its registered name",
        "transfer_syntax": "TransferSyntaxUID name, or 'inferred: ...'",
        "magnetic_field_t": "MagneticFieldStrength",
        "slice_thickness_mm": "SliceThickness",
        "instances": "number of files in the series acquisition",
    }
)


class DicomAdapter:
    """DICOM series via pydicom, headers only."""

    info = AdapterInfo(
        name="dicom",
        title="DICOM",
        version="1.0.0",
        stability="beta",
        formats=(
            FormatSpec(
                name="DICOM",
                extensions=(".dcm", ".dicom", ".ima", ""),
                magic="DICM at offset 128, or group 0002/0008 elements at offset 0",
                variants=(
                    "Part 10 with preamble",
                    "ACR-NEMA style without preamble or file meta",
                    "enhanced multi-frame",
                    "encapsulated (JPEG, JPEG-LS, JPEG 2000, HTJ2K, RLE)",
                    "deflated",
                ),
            ),
        ),
        fields=_FIELDS,
        samples=(
            "dicom/ct-enhanced/eCT_Supplemental.dcm",
            "dicom/no-preamble/CT_Implicit_Little_Headless_Retired.dcm",
            "dicom/ot/OT-PAL-8-face.dcm",
            "dicom/parametric-map/parametric_map_float.dcm",
            "dicom/rg/RG3_J2KI.dcm",
        ),
    )

    def claim(self, probe: FileProbe, reader: Reader) -> Claim | None:
        if not (has_preamble(probe.head) or looks_headless(probe.head)):
            return None
        uid: str | None = None
        try:
            uid = series_uid_in_head(probe.head)
        except Undecided:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    uid = read_series_uid(probe.path, reader)
                except Exception:  # noqa: BLE001 - pydicom raises many types on bad input; extract reports it
                    uid = None
        if uid is None:
            return Claim(group_key=f"dicom:file:{probe.path}", role="primary", confidence=0.9)
        return Claim(group_key=f"dicom:{uid}", role="member", confidence=0.9, collects=True)

    def extract(self, draft: Draft, reader: Reader) -> AdapterOutput:
        path = draft.primary
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                header = read_header(path, reader)
                metadata = _normalized(header, len(draft.members))
                original = _original(header)
            except AdapterError:
                raise
            except Exception as exc:  # pydicom raises many unrelated types on bad input
                raise AdapterError(path, f"unreadable DICOM: {type(exc).__name__}: {exc}") from exc
        notes = tuple(dict.fromkeys(f"pydicom: {w.message}" for w in caught))
        return AdapterOutput(
            format="DICOM",
            metadata=metadata,
            original_metadata=original,
            started=metadata.get("acquired"),
            warnings=notes,
        )


def _normalized(header: Header, instances: int) -> dict[str, Any]:
    ds = header.dataset
    meta: dict[str, Any] = {}
    _put(meta, "modality", _text(value(ds, "Modality")))
    _put(meta, "acquired", _acquired(ds))
    instrument: dict[str, Any] = {}
    _put(instrument, "manufacturer", _text(value(ds, "Manufacturer")))
    _put(instrument, "model", _text(value(ds, "ManufacturerModelName")))
    _put(instrument, "serial_number", _text(value(ds, "DeviceSerialNumber")))
    _put(instrument, "software", _joined(value(ds, "SoftwareVersions")))
    _put(instrument, "station_name", _text(value(ds, "StationName")))
    _put(meta, "instrument_reported", instrument)
    _put(meta, "image", _image(header))
    _put(meta, "pixel_size_um", _pixel_size(ds))
    _put(meta, "study_uid", _text(value(ds, "StudyInstanceUID")))
    _put(meta, "series_uid", _text(value(ds, "SeriesInstanceUID")))
    _put(meta, "series_description", _text(value(ds, "SeriesDescription")))
    _put(meta, "protocol_name", _text(value(ds, "ProtocolName")))
    _put(meta, "body_part", _text(value(ds, "BodyPartExamined")))
    sop = value(ds, "SOPClassUID") or value(ds.file_meta, "MediaStorageSOPClassUID")
    _put(meta, "sop_class", UID(str(sop)).name if sop else None)
    _put(meta, "transfer_syntax", _transfer_syntax(header))
    _put(meta, "magnetic_field_t", _number(value(ds, "MagneticFieldStrength")))
    thickness = value(ds, "SliceThickness")
    if thickness is None:
        measures = first_item(ds, "SharedFunctionalGroupsSequence", "PixelMeasuresSequence")
        thickness = value(measures, "SliceThickness") if measures is not None else None
    _put(meta, "slice_thickness_mm", _number(thickness))
    meta["instances"] = instances
    return meta


def _original(header: Header) -> dict[str, Any]:
    out = dataset_json(header.dataset.file_meta)
    out.update(dataset_json(header.dataset))
    for keyword, length in header.skipped.items():
        out.setdefault(keyword, f"<not read: {length} bytes>")
    return out


def _acquired(ds: Dataset) -> str | None:
    offset = value(ds, "TimezoneOffsetFromUTC")
    stamp = rfc3339_dt(value(ds, "AcquisitionDateTime"), offset)
    if stamp:
        return stamp
    for prefix in ("Acquisition", "Series", "Study"):
        stamp = rfc3339(value(ds, f"{prefix}Date"), value(ds, f"{prefix}Time"), offset)
        if stamp:
            return stamp
    return None


def _image(header: Header) -> dict[str, Any]:
    ds = header.dataset
    rows, columns = _integer(value(ds, "Rows")), _integer(value(ds, "Columns"))
    if rows is None or columns is None:
        return {}
    bits = _integer(value(ds, "BitsAllocated"))
    image: dict[str, Any] = {
        "size_x": columns,
        "size_y": rows,
        "frames": _integer(value(ds, "NumberOfFrames")) or 1,
    }
    _put(image, "bits", bits)
    _put(
        image,
        "pixel_type",
        _pixel_type(header.pixel_keyword, bits, value(ds, "PixelRepresentation")),
    )
    _put(image, "samples_per_pixel", _integer(value(ds, "SamplesPerPixel")))
    _put(image, "photometric", _text(value(ds, "PhotometricInterpretation")))
    return image


def _pixel_type(pixel_keyword: str | None, bits: int | None, representation: Any) -> str | None:
    if pixel_keyword == "FloatPixelData":
        return "float32"
    if pixel_keyword == "DoubleFloatPixelData":
        return "float64"
    if bits == 1:
        return "bit"
    if bits in (8, 16, 32, 64):
        return f"{'int' if _integer(representation) == 1 else 'uint'}{bits}"
    return None


def _pixel_size(ds: Dataset) -> dict[str, float]:
    spacing = value(ds, "PixelSpacing")
    if spacing is None:
        for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            measures = first_item(ds, group, "PixelMeasuresSequence")
            if measures is not None and value(measures, "PixelSpacing") is not None:
                spacing = value(measures, "PixelSpacing")
                break
    try:
        row, column = float(spacing[0]), float(spacing[1])
    except (TypeError, ValueError, IndexError):
        return {}
    if row <= 0 or column <= 0:
        return {}
    return {"x": round(column * 1000, 6), "y": round(row * 1000, 6)}


def _transfer_syntax(header: Header) -> str:
    uid = value(header.dataset.file_meta, "TransferSyntaxUID")
    if uid:
        return str(UID(str(uid)).name)
    implicit, little = header.dataset.original_encoding
    vr = "Implicit" if implicit else "Explicit"
    endian = "Little" if little is not False else "Big"
    return f"inferred: {vr} VR {endian} Endian"


def _put(target: dict[str, Any], key: str, item: Any) -> None:
    if item is not None and item != {} and item != "":
        target[key] = item


def _text(item: Any) -> str | None:
    if item is None:
        return None
    text = str(item).strip()
    return text or None


def _joined(item: Any) -> str | None:
    if item is None:
        return None
    if not isinstance(item, str) and hasattr(item, "__iter__"):
        parts = [str(p).strip() for p in item if str(p).strip()]
        return "; ".join(parts) or None
    return _text(item)


def _number(item: Any) -> float | None:
    try:
        return float(item) if item is not None else None
    except (TypeError, ValueError):
        return None


def _integer(item: Any) -> int | None:
    try:
        return int(item) if item is not None else None
    except (TypeError, ValueError):
        return None
