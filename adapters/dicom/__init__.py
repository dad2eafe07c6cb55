"""DICOM adapter: one acquisition per series and folder, read from one representative header.

Formats and variants: DICOM files in every layout pydicom reads (with or without the
128-byte preamble + ``DICM``, with or without the file meta group: old ACR-NEMA style
files are recognised when their head parses as group 0002/0008 elements) in any transfer
syntax pydicom parses (implicit/explicit VR little endian, the retired explicit VR big
endian, deflated, and every encapsulated syntax: JPEG, JPEG-LS, JPEG 2000, HTJ2K, RLE),
single- and multi-frame, legacy and enhanced (functional groups) objects, Siemens
mosaics, whole-slide (SM) tiled images, SEG, SR and parametric maps; the file name and
extension do not matter. An image header without pixel data that ends exactly after its
last element is read and flagged ``incomplete``; a file cut inside an element is refused.

Fields filled (``info.fields`` names the element each one comes from; the adapter README
table is generated from it): modality; ``acquired`` (RFC 3339, TimezoneOffsetFromUTC
applied); the instrument as reported (SoftwareVersions split into ``software`` and
``software_version`` by a documented rule); image geometry (whole-slide total pixel
matrix, mosaic tiles and slice count, enhanced single-stack depth, optical paths, temporal
positions, frames, bits, pixel type); pixel size in micrometres (PixelSpacing, the
functional groups' PixelMeasuresSequence, else ImagerPixelSpacing, else the ultrasound
regions' PhysicalDeltaX/Y when calibrated in cm) and slice spacing; SM optical paths as
channels and objective; detector; operator; study and series UIDs and descriptions,
protocol, body part (BodyPartExamined, else the AnatomicRegionSequence code meaning), SOP
class and transfer syntax names, field strength,
slice thickness and the number of instances. The claim keys a file on its series UID and
its folder (an exported copy elsewhere is another acquisition) and also reads how many
instances the series announces (ImagesInAcquisition, or the PET slice counts) from the
head bytes, so the group is packaged as soon as they are all there. ``original_metadata``
holds every public, non-binary element of the representative header (patient tags included:
de-identification is the agent's job), sequences to depth 3, each element within a
16 KiB budget.

Deliberately not read: pixel data (reading stops at (7FE0,0010)/(7FE0,0008)/(7FE0,0009);
for encapsulated data only the 8-byte fragment item headers are read, to detect
truncation), binary elements (OB/OW/OF/OD/OL/OV/UN) except the Siemens CSA image header
that holds the mosaic slice count, private tags in ``original_metadata``, values over
64 KiB, and the metadata of any instance of a series except the primary. Every other
instance is checked for truncation only (``reader.check_complete``: a walk of its element
headers to the pixel data, whose declared extent must lie inside the file; the full
header check when the walk cannot tell), and one cut short fails the extraction with an
``AdapterError`` naming it.

Proved by every file under ``dicom/`` in the corpus, notably ``dicom/no-preamble/*`` and
``dicom/ot/OT-PAL-8-face.dcm`` (no preamble, no file meta),
``dicom/ct-enhanced/eCT_Supplemental.dcm`` (functional groups, timezone, one stack),
``dicom/mr-siemens-mosaic/0.dcm`` (mosaic, CSA header), ``dicom/sm-wsi/sm_image.dcm``
(total pixel matrix, optical paths), ``dicom/pt/ACRIN-FLT-Breast_1.dcm`` (announced
instance count), ``dicom/parametric-map/parametric_map_float.dcm`` (float pixels),
``dicom/us/gdcm-US-ALOKA-16.dcm`` (ultrasound regions in cm), ``dicom/mg/MG_Explicit_Little.dcm``
(AnatomicRegionSequence) and ``dicom/rg/RG3_J2KI.dcm`` (headers-only byte budget).
"""

from __future__ import annotations

import json
import math
import re
import struct
import warnings
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
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
from acqharvest.adapters.dicom.head import (
    SERIES_UID_TAG,
    Undecided,
    has_preamble,
    head_values,
    looks_headless,
)
from acqharvest.adapters.dicom.reader import (
    Header,
    check_complete,
    read_header,
    read_series_uid,
    walk_extent,
)
from acqharvest.adapters.dicom.values import (
    convert_all,
    dataset_json,
    first_item,
    rfc3339,
    rfc3339_dt,
    value,
    without_values,
)

__all__ = ["DicomAdapter", "transfer_syntax_name"]

_FIELDS = normalized_fields(
    {
        "modality": "Modality (0008,0060)",
        "acquired": "AcquisitionDateTime (0008,002A); else the first frame's "
        "FrameAcquisitionDateTime (0018,9074); else the first of AcquisitionDate+Time, "
        "ContentDate+Time, SeriesDate+Time, StudyDate+Time, a date alone taking its time "
        "from the first later pair of the same day; TimezoneOffsetFromUTC (0008,0201) applied",
        "operator": "OperatorsName (0008,1070), joined with '; '",
        "instrument_reported.manufacturer": "Manufacturer (0008,0070)",
        "instrument_reported.model": "ManufacturerModelName (0008,1090)",
        "instrument_reported.serial_number": "DeviceSerialNumber (0018,1000)",
        "instrument_reported.software": "SoftwareVersions (0018,1020): the name part of one "
        "'NAME VERSION' value, else every value that is not a bare version, joined with '; '",
        "instrument_reported.software_version": "SoftwareVersions (0018,1020): the version "
        "part of one 'NAME VERSION' value, or values that are all bare versions",
        "instrument_reported.station_name": "StationName (0008,1010)",
        "image.size_x": "TotalPixelMatrixColumns (0048,0006) for whole-slide images; a "
        "Siemens mosaic's tile width (Columns over the ceil(sqrt(slices)) grid when it "
        "divides, else AcquisitionMatrix (0018,1310) or AcquisitionMatrixText (0051,100B)); "
        "else Columns (0028,0011)",
        "image.size_y": "TotalPixelMatrixRows (0048,0007) for whole-slide images; a Siemens "
        "mosaic's tile height, found as its width is; else Rows (0028,0010)",
        "image.size_z": "Siemens NumberOfImagesInMosaic (0019,100A) or the CSA image header "
        "(0029,1010); else the distinct InStackPositionNumber (0020,9057) of an enhanced "
        "object with one StackID (0020,9056)",
        "image.size_c": "NumberOfOpticalPaths (0048,0302), else the OpticalPathSequence "
        "(0048,0105) items (SM only)",
        "image.size_t": "NumberOfTemporalPositions (0020,0105); else the distinct "
        "TemporalPositionIndex (0020,9128) of an enhanced object when more than one; PET "
        "NumberOfTimeSlices (0054,0101)",
        "image.frames": "NumberOfFrames (0028,0008), 1 when absent",
        "image.bits": "BitsAllocated (0028,0100)",
        "image.pixel_type": "BitsAllocated + PixelRepresentation (0028,0103); float32/float64 "
        "for (Double)FloatPixelData; bit for 1-bit",
        "image.samples_per_pixel": "SamplesPerPixel (0028,0002)",
        "image.photometric": "PhotometricInterpretation (0028,0004)",
        "pixel_size_um.x": "column spacing: PixelSpacing[1] (0028,0030), else the shared then "
        "the first per-frame PixelMeasuresSequence (0028,9110), else ImagerPixelSpacing[1] "
        "(0018,1164); mm x 1000; else the PhysicalDeltaX (0018,602C) the "
        "SequenceOfUltrasoundRegions (0018,6011) agree on in cm (PhysicalUnitsXDirection "
        "(0018,6024) 3); cm x 10000",
        "pixel_size_um.y": "row spacing: element [0] of the same source; mm x 1000; else the "
        "ultrasound regions' PhysicalDeltaY (0018,602E) in cm; cm x 10000",
        "pixel_size_um.z": "SpacingBetweenSlices (0018,0088), top level or PixelMeasuresSequence;"
        " else SliceThickness for CT, MR, PT and NM; mm x 1000",
        "channels": "SM OpticalPathSequence (0048,0105): name from OpticalPathDescription "
        "(0048,0107) or OpticalPathIdentifier (0048,0106), excitation_nm from "
        "IlluminationWaveLength (0022,0055)",
        "objective.magnification": "ObjectiveLensPower (0048,0113) of the first optical path",
        "objective.na": "ObjectiveLensNumericalAperture (0048,0114) of the first optical path",
        "detector.model": "DetectorManufacturerModelName (0018,702B)",
        "detector.manufacturer": "DetectorManufacturerName (0018,702A)",
        "detector.type": "DetectorType (0018,7004)",
        "study_uid": "StudyInstanceUID (0020,000D)",
        "series_uid": "SeriesInstanceUID (0020,000E)",
        "series_description": "SeriesDescription (0008,103E)",
        "protocol_name": "ProtocolName (0018,1030)",
        "body_part": "BodyPartExamined (0018,0015); else the CodeMeaning (0008,0104) of "
        "AnatomicRegionSequence (0008,2218), top level, else in the shared then the first "
        "per-frame FrameAnatomySequence (0020,9071)",
        "sop_class": "SOPClassUID (0008,0016), else MediaStorageSOPClassUID, as its name",
        "transfer_syntax": "TransferSyntaxUID (0002,0010) name, or 'inferred: ...' without "
        "file meta",
        "magnetic_field_t": "MagneticFieldStrength (0018,0087)",
        "slice_thickness_mm": "SliceThickness (0018,0050), else the shared PixelMeasuresSequence",
        "instances": "number of files in the series acquisition",
    }
)

#: transfer syntaxes the standard added after the pydicom releases we support name theirs.
_NEWER_SYNTAXES = {
    "1.2.840.10008.1.2.8.1": "Deflated Image Frame Compression",
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
}
_IMAGES_IN_ACQUISITION = 0x00201002
_PET_SERIES_TYPE = 0x00541000
_PET_SLICES = 0x00540081
_PET_TIME_SLICES = 0x00540101
_CLAIM_TAGS = frozenset(
    {SERIES_UID_TAG, _IMAGES_IN_ACQUISITION, _PET_SLICES, _PET_TIME_SLICES, _PET_SERIES_TYPE}
)
#: serialized size one ``original_metadata`` element may take; longer lists keep a prefix.
ELEMENT_BUDGET = 16 * 1024
#: PhysicalUnitsX/YDirection code for centimetres (PS3.3 Ultrasound Region Calibration).
_CENTIMETRES = 3
#: modalities whose SliceThickness is the spacing of a reconstructed volume.
_VOLUME_MODALITIES = frozenset({"CT", "MR", "PT", "NM"})
_NAME_VERSION = re.compile(r"^(?P<name>.*[A-Za-z].*?)\s+[vV]?(?P<version>\d[\w.()\[\]-]*)$")
_BARE_VERSION = re.compile(r"^[vV]?\d[\w.()\[\]-]*$")
#: Siemens AcquisitionMatrixText, phase steps first: ``128p*128``, ``104*128s``.
_MATRIX_TEXT = re.compile(r"^(?P<phase>\d+)p?\*(?P<frequency>\d+)s?$")


class DicomAdapter:
    """DICOM series via pydicom, headers only."""

    info = AdapterInfo(
        name="dicom",
        title="DICOM",
        version="1.4.0",
        stability="beta",
        formats=(
            FormatSpec(
                name="DICOM",
                extensions=(".dcm", ".dicom", ".ima", ""),
                magic="DICM at offset 128, or group 0002/0008 elements at offset 0 (either "
                "byte order)",
                variants=(
                    "Part 10 with preamble",
                    "without preamble, with or without file meta (ACR-NEMA style)",
                    "implicit VR, explicit VR little and big endian",
                    "image header without pixel data (packaged incomplete)",
                    "legacy and enhanced multi-frame",
                    "Siemens mosaic with CSA header",
                    "whole-slide microscopy (SM), tiled",
                    "encapsulated (JPEG, JPEG-LS, JPEG 2000, HTJ2K, RLE)",
                    "deflated",
                ),
            ),
        ),
        fields=_FIELDS,
        samples=(
            "dicom/ct-enhanced/eCT_Supplemental.dcm",
            "dicom/mr-siemens-mosaic/0.dcm",
            "dicom/no-preamble/CT_Implicit_Little_Headless_Retired.dcm",
            "dicom/ot/OT-PAL-8-face.dcm",
            "dicom/parametric-map/parametric_map_float.dcm",
            "dicom/pt/ACRIN-FLT-Breast_1.dcm",
            "dicom/rg/RG3_J2KI.dcm",
            "dicom/sm-wsi/sm_image.dcm",
        ),
    )

    def claim(self, probe: FileProbe, reader: Reader) -> Claim | None:
        if not (has_preamble(probe.head) or looks_headless(probe.head)):
            return None
        uid: str | None = None
        expected: int | None = None
        try:
            values, reached = head_values(probe.head, _CLAIM_TAGS)
            if SERIES_UID_TAG not in values and reached < SERIES_UID_TAG:
                raise Undecided
            uid = _ascii(values.get(SERIES_UID_TAG))
            expected = _expected_instances(values)
        except Undecided:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    uid = read_series_uid(probe.path, reader)
                except Exception:  # noqa: BLE001 - pydicom raises many types on bad input; extract reports it
                    uid = None
        if uid is None:
            return Claim(group_key=f"dicom:file:{probe.path}", role="primary", confidence=0.9)
        return Claim(
            # Per folder: an exported copy of a series elsewhere is not more of the same
            # series, and must not count towards its announced number of instances.
            group_key=f"dicom:{uid}@{probe.path.parent}",
            role="member",
            confidence=0.9,
            collects=True,
            expected_instances=expected,
        )

    def extract(self, draft: Draft, reader: Reader) -> AdapterOutput:
        path = draft.primary
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                header = read_header(path, reader)
                elements = convert_all(header.dataset.file_meta) + convert_all(header.dataset)
                metadata = _normalized(header, len(draft.members))
                original, trimmed = _original(header)
            except AdapterError:
                raise
            except Exception as exc:  # pydicom raises many unrelated types on bad input
                raise AdapterError(path, f"unreadable DICOM: {type(exc).__name__}: {exc}") from exc
        lacking = _check_members(draft, reader, header)
        # Messages quote the values they complain about; a package must not carry them.
        notes = tuple(
            dict.fromkeys(
                f"pydicom: {note}"
                for note in (*elements, *(without_values(str(w.message)) for w in caught))
            )
        )
        return AdapterOutput(
            format="DICOM",
            metadata=metadata,
            original_metadata=original,
            started=metadata.get("acquired"),
            warnings=(*notes, *trimmed),
            incomplete=lacking,
        )


def _check_members(draft: Draft, reader: Reader, primary: Header) -> str | None:
    """Every instance of the series must be whole: the package lists each one.

    Only the completeness of the others is checked (``check_complete``), never their
    metadata, so what pydicom may say about their values is not the package's concern.
    The primary, whose header was parsed, gets the element walk too: it also refuses a
    file that ends inside a sequence, which a header parse may take for a whole one;
    it walks the bytes the parse read (``primary.head``) without reading them again.
    Returns why the series is incomplete (instances that are image headers without
    pixel data, named), or None.
    """
    lacking: dict[str, list[str]] = {}
    for member in draft.members:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if member == draft.primary:
                    reason = primary.incomplete
                    if reason is None:  # else the header read walked it to its end
                        walk_extent(member, reader, primary.head)
                else:
                    reason = check_complete(member, reader)
            except AdapterError:
                raise
            except Exception as exc:  # pydicom raises many unrelated types on bad input
                reason = f"unreadable DICOM: {type(exc).__name__}: {exc}"
                raise AdapterError(member, reason) from exc
        if reason is not None:
            lacking.setdefault(reason, []).append(member.name)
    return "; ".join(f"{reason}: {', '.join(names)}" for reason, names in lacking.items()) or None


# --------------------------------------------------------------------------- claim


def _ascii(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    return raw.rstrip(b"\x00 ").decode("ascii", "replace").strip() or None


def _expected_instances(values: dict[int, bytes]) -> int | None:
    """How many instances the series announces, when the header says so trustworthily.

    ImagesInAcquisition counts the images of one acquisition, which is the series for
    nearly every scanner; a series of several acquisitions is packaged when the first is
    complete and packaged again, replacing it, when the rest arrive. PET series say
    NumberOfSlices per time slice and NumberOfTimeSlices; only STATIC and WHOLE BODY (one
    time slice) and DYNAMIC series are counted, never GATED ones.
    """
    images = _integer(_ascii(values.get(_IMAGES_IN_ACQUISITION)))
    if images is not None and images > 0:
        return images
    series_type = (_ascii(values.get(_PET_SERIES_TYPE)) or "").split("\\")[0].strip()
    slices = _unsigned_short(values.get(_PET_SLICES))
    if not slices:
        return None
    if series_type in ("STATIC", "WHOLE BODY"):
        return slices
    time_slices = _unsigned_short(values.get(_PET_TIME_SLICES))
    if series_type == "DYNAMIC" and time_slices:
        return slices * time_slices
    return None


def _unsigned_short(raw: bytes | None) -> int | None:
    # The head walk only reads little-endian syntaxes.
    return struct.unpack("<H", raw)[0] if raw is not None and len(raw) == 2 else None


# --------------------------------------------------------------------------- normalized


def _normalized(header: Header, instances: int) -> dict[str, Any]:
    ds = header.dataset
    modality = _text(value(ds, "Modality"))
    meta: dict[str, Any] = {}
    _put(meta, "modality", modality)
    _put(meta, "acquired", _acquired(ds))
    _put(meta, "operator", _joined(value(ds, "OperatorsName")))
    _put(meta, "instrument_reported", _instrument(ds))
    _put(meta, "image", _image(header))
    _put(meta, "pixel_size_um", _pixel_size(ds, modality))
    _put(meta, "channels", _channels(ds) if modality == "SM" else None)
    _put(meta, "objective", _objective(ds))
    _put(meta, "detector", _detector(ds))
    _put(meta, "study_uid", _text(value(ds, "StudyInstanceUID")))
    _put(meta, "series_uid", _text(value(ds, "SeriesInstanceUID")))
    _put(meta, "series_description", _text(value(ds, "SeriesDescription")))
    _put(meta, "protocol_name", _text(value(ds, "ProtocolName")))
    _put(meta, "body_part", _text(value(ds, "BodyPartExamined")) or _anatomic_region(ds))
    sop = value(ds, "SOPClassUID") or value(ds.file_meta, "MediaStorageSOPClassUID")
    _put(meta, "sop_class", UID(str(sop)).name if sop else None)
    _put(meta, "transfer_syntax", _transfer_syntax(header))
    _put(meta, "magnetic_field_t", _number(value(ds, "MagneticFieldStrength")))
    _put(meta, "slice_thickness_mm", _number(_measure(ds, "SliceThickness", shared_only=True)))
    meta["instances"] = instances
    return meta


def _original(header: Header) -> tuple[dict[str, Any], list[str]]:
    out = dataset_json(header.dataset.file_meta)
    out.update(dataset_json(header.dataset))
    for keyword, length in header.skipped.items():
        out.setdefault(keyword, f"<not read: {length} bytes>")
    trimmed: list[str] = []
    for keyword, item in out.items():
        if _json_size(item) > ELEMENT_BUDGET:
            out[keyword], note = _within_budget(keyword, item)
            trimmed.append(note)
    return out, trimmed


def _within_budget(keyword: str, item: Any) -> tuple[Any, str]:
    """A list keeps the items that fit in the element budget; anything else is replaced."""
    if isinstance(item, list):
        kept: list[Any] = []
        size = 2
        for entry in item:
            size += _json_size(entry) + 2  # the ", " json.dumps puts between items
            if size > ELEMENT_BUDGET:
                break
            kept.append(entry)
        return kept, (
            f"original_metadata.{keyword}: kept {len(kept)} of {len(item)} items "
            f"({ELEMENT_BUDGET // 1024} KiB per element)"
        )
    size = _json_size(item)
    return f"<not kept: {size} bytes>", (
        f"original_metadata.{keyword}: {size} bytes, over {ELEMENT_BUDGET // 1024} KiB; not kept"
    )


def _json_size(item: Any) -> int:
    return len(json.dumps(item, ensure_ascii=False).encode("utf-8"))


def _acquired(ds: Dataset) -> str | None:
    offset = value(ds, "TimezoneOffsetFromUTC")
    frame = first_item(ds, "PerFrameFunctionalGroupsSequence", "FrameContentSequence")
    for stamp_value in (
        value(ds, "AcquisitionDateTime"),
        value(frame, "FrameAcquisitionDateTime") if frame is not None else None,
    ):
        stamp = rfc3339_dt(stamp_value, offset)
        if stamp:
            return stamp
    stamps = [
        stamp
        for prefix in ("Acquisition", "Content", "Series", "Study")
        if (stamp := rfc3339(value(ds, f"{prefix}Date"), value(ds, f"{prefix}Time"), offset))
    ]
    if not stamps:
        return None
    # A date alone is refined by the first later source of the same day that has a time.
    day = stamps[0][:10]
    return next((s for s in stamps if s[:10] == day and len(s) > 10), stamps[0])


def _texts(ds: Dataset, keywords: dict[str, str]) -> dict[str, Any]:
    """Field -> the text of its element, for the elements the dataset holds."""
    out: dict[str, Any] = {}
    for key, keyword in keywords.items():
        _put(out, key, _text(value(ds, keyword)))
    return out


def _instrument(ds: Dataset) -> dict[str, Any]:
    instrument = _texts(
        ds,
        {
            "manufacturer": "Manufacturer",
            "model": "ManufacturerModelName",
            "serial_number": "DeviceSerialNumber",
        },
    )
    software, version = _software(value(ds, "SoftwareVersions"))
    _put(instrument, "software", software)
    _put(instrument, "software_version", version)
    _put(instrument, "station_name", _text(value(ds, "StationName")))
    return instrument


def _software(item: Any) -> tuple[str | None, str | None]:
    """(name, version) from SoftwareVersions, by the rule ``info.fields`` documents."""
    values = [part for part in (_text(v) for v in _listed(item)) if part]
    if len(values) == 1 and (match := _NAME_VERSION.match(values[0])):
        return match.group("name").strip(), match.group("version")
    if values and all(_BARE_VERSION.match(v) for v in values):
        return None, "; ".join(values)
    return "; ".join(values) or None, None


def _image(header: Header) -> dict[str, Any]:
    ds = header.dataset
    rows, columns = _integer(value(ds, "Rows")), _integer(value(ds, "Columns"))
    if rows is None or columns is None:
        return {}
    image: dict[str, Any] = {}
    mosaic = _mosaic_images(ds)
    total_x = _integer(value(ds, "TotalPixelMatrixColumns"))
    total_y = _integer(value(ds, "TotalPixelMatrixRows"))
    if total_x and total_y:
        image["size_x"], image["size_y"] = total_x, total_y
    elif mosaic:
        tile = _mosaic_tile(ds, rows, columns, mosaic)
        if tile is not None:
            image["size_x"], image["size_y"] = tile
    else:
        image["size_x"], image["size_y"] = columns, rows
    stacks = _frame_content(ds)
    _put(image, "size_z", mosaic or _single_stack_depth(stacks))
    if value(ds, "Modality") == "SM":
        paths = _integer(value(ds, "NumberOfOpticalPaths"))
        _put(image, "size_c", paths or len(value(ds, "OpticalPathSequence") or ()) or None)
    _put(image, "size_t", _time_points(ds, stacks))
    image["frames"] = _integer(value(ds, "NumberOfFrames")) or 1
    bits = _integer(value(ds, "BitsAllocated"))
    _put(image, "bits", bits)
    _put(
        image,
        "pixel_type",
        _pixel_type(header.pixel_keyword, bits, value(ds, "PixelRepresentation")),
    )
    _put(image, "samples_per_pixel", _integer(value(ds, "SamplesPerPixel")))
    _put(image, "photometric", _text(value(ds, "PhotometricInterpretation")))
    return image


def _mosaic_images(ds: Dataset) -> int | None:
    """Slices in a Siemens mosaic: (0019,100A), else the CSA image header's own count."""
    if "MOSAIC" not in [str(v).upper() for v in _listed(value(ds, "ImageType"))]:
        return None
    count = _integer(_private(ds, 0x0019, "SIEMENS MR HEADER", 0x0A))
    if count:
        return count
    csa = _private(ds, 0x0029, "SIEMENS CSA HEADER", 0x10)
    if isinstance(csa, bytes):
        return _integer(_csa_item(csa, "NumberOfImagesInMosaic"))
    return None


def _mosaic_tile(ds: Dataset, rows: int, columns: int, slices: int) -> tuple[int, int] | None:
    """(width, height) of one mosaic tile, or None when the header does not say.

    Siemens tiles the slices on a square grid of ceil(sqrt(slices)) tiles a side, padded
    with empty tiles, so the frame divides evenly by it. When it does not (a frame shrunk
    after the fact), the tile is the acquisition matrix: AcquisitionMatrix (0018,1310),
    else Siemens AcquisitionMatrixText (0051,100B) read with the phase-encoding direction.
    """
    grid = math.ceil(math.sqrt(slices))
    if rows % grid == 0 and columns % grid == 0:
        return columns // grid, rows // grid
    matrix = [_integer(v) or 0 for v in _listed(value(ds, "AcquisitionMatrix"))]
    if len(matrix) == 4:
        frequency_rows, frequency_columns, phase_rows, phase_columns = matrix
        width, height = frequency_columns or phase_columns, frequency_rows or phase_rows
        if width and height:
            return width, height
    text = _text(_private(ds, 0x0051, "SIEMENS MR HEADER", 0x0B))
    match = _MATRIX_TEXT.match(text or "")
    if match is None:
        return None
    phase, frequency = int(match.group("phase")), int(match.group("frequency"))
    if value(ds, "InPlanePhaseEncodingDirection") == "ROW":
        return phase, frequency  # phase steps run along a row: they count the columns
    return frequency, phase


def _private(ds: Dataset, group: int, creator: str, offset: int) -> Any:
    try:
        return ds.private_block(group, creator)[offset].value
    except KeyError:
        return None


def _csa_item(blob: bytes, name: str) -> str | None:
    """The first item of one tag in a Siemens CSA2 header (``SV10`` layout), or None."""
    if blob[:4] != b"SV10" or len(blob) < 16:
        return None
    (count,) = struct.unpack_from("<I", blob, 8)
    pos = 16
    for _ in range(min(count, 1024)):
        if pos + 84 > len(blob):
            return None
        tag_name = blob[pos : pos + 64].split(b"\x00", 1)[0].decode("ascii", "replace")
        (items,) = struct.unpack_from("<i", blob, pos + 76)
        pos += 84
        first: str | None = None
        for index in range(max(0, min(items, 4096))):
            if pos + 16 > len(blob):
                return None
            length = struct.unpack_from("<i", blob, pos + 4)[0]
            data = blob[pos + 16 : pos + 16 + max(0, length)]
            if index == 0:
                first = data.split(b"\x00", 1)[0].decode("ascii", "replace").strip() or None
            pos += 16 + (max(0, length) + 3) // 4 * 4
        if tag_name == name:
            return first
    return None


def _frame_content(ds: Dataset) -> list[Dataset]:
    frames = value(ds, "PerFrameFunctionalGroupsSequence") or ()
    contents = [value(frame, "FrameContentSequence") for frame in frames]
    return [content[0] for content in contents if content]


def _single_stack_depth(contents: list[Dataset]) -> int | None:
    """Slices of an enhanced object that holds one stack, by InStackPositionNumber."""
    stacks = {str(value(c, "StackID")) for c in contents if value(c, "StackID") is not None}
    if len(stacks) != 1:
        return None
    positions = {value(c, "InStackPositionNumber") for c in contents} - {None}
    return len(positions) or None


def _time_points(ds: Dataset, contents: list[Dataset]) -> int | None:
    declared = _integer(value(ds, "NumberOfTemporalPositions"))
    if declared:
        return declared
    indices = {value(c, "TemporalPositionIndex") for c in contents} - {None}
    if len(indices) > 1:
        return len(indices)
    return _integer(value(ds, "NumberOfTimeSlices"))


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


def _measure(ds: Dataset, keyword: str, *, shared_only: bool = False) -> Any:
    """A pixel-measures value: top level, else the shared (then first per-frame) group."""
    found = value(ds, keyword)
    groups = ["SharedFunctionalGroupsSequence"]
    if not shared_only:
        groups.append("PerFrameFunctionalGroupsSequence")
    for group in groups:
        if found is not None:
            break
        measures = first_item(ds, group, "PixelMeasuresSequence")
        found = value(measures, keyword) if measures is not None else None
    return found


def _pixel_size(ds: Dataset, modality: str | None) -> dict[str, float]:
    size: dict[str, float] = {}
    spacing = _measure(ds, "PixelSpacing")
    if spacing is None:
        spacing = value(ds, "ImagerPixelSpacing")
    try:
        row, column = float(spacing[0]), float(spacing[1])
    except (TypeError, ValueError, IndexError):
        row = column = 0.0
    if row > 0 and column > 0:
        size = {"x": _micrometres(column), "y": _micrometres(row)}
    elif (regions := _ultrasound_spacing(ds)) is not None:
        size = {"x": regions[0], "y": regions[1]}
    between = _number(_measure(ds, "SpacingBetweenSlices"))
    if between is None and modality in _VOLUME_MODALITIES:
        between = _number(_measure(ds, "SliceThickness"))
    if between is not None and between > 0:
        size["z"] = _micrometres(between)
    return size


def _micrometres(millimetres: float) -> float:
    return round(millimetres * 1000, 6)


def _ultrasound_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(x, y) in um from the ultrasound regions calibrated in cm, when they all agree.

    Regions in other units (seconds, cm/s, none) are Doppler, M-mode or graphics and say
    nothing about the image's pixels; regions in cm that disagree (two zoom levels side by
    side) leave no single pixel size to report.
    """
    deltas = set()
    for region in value(ds, "SequenceOfUltrasoundRegions") or ():
        units = (value(region, "PhysicalUnitsXDirection"), value(region, "PhysicalUnitsYDirection"))
        x, y = _number(value(region, "PhysicalDeltaX")), _number(value(region, "PhysicalDeltaY"))
        if units == (_CENTIMETRES, _CENTIMETRES) and x and y and x > 0 and y > 0:
            deltas.add((_micrometres(x * 10), _micrometres(y * 10)))
    return deltas.pop() if len(deltas) == 1 else None


def _anatomic_region(ds: Dataset) -> str | None:
    """The CodeMeaning of the first AnatomicRegionSequence item, wherever the IOD puts it."""
    for path in (
        ("AnatomicRegionSequence",),
        ("SharedFunctionalGroupsSequence", "FrameAnatomySequence", "AnatomicRegionSequence"),
        ("PerFrameFunctionalGroupsSequence", "FrameAnatomySequence", "AnatomicRegionSequence"),
    ):
        region = first_item(ds, *path)
        if region is not None and (meaning := _text(value(region, "CodeMeaning"))):
            return meaning
    return None


def _channels(ds: Dataset) -> list[dict[str, Any]] | None:
    channels: list[dict[str, Any]] = []
    for path in value(ds, "OpticalPathSequence") or ():
        channel: dict[str, Any] = {}
        name = _text(value(path, "OpticalPathDescription"))
        _put(channel, "name", name or _text(value(path, "OpticalPathIdentifier")))
        _put(channel, "excitation_nm", _number(value(path, "IlluminationWaveLength")))
        channels.append(channel)
    return channels if any(channels) else None


def _objective(ds: Dataset) -> dict[str, Any]:
    path = first_item(ds, "OpticalPathSequence")
    if path is None:
        return {}
    objective: dict[str, Any] = {}
    _put(objective, "magnification", _number(value(path, "ObjectiveLensPower")))
    _put(objective, "na", _number(value(path, "ObjectiveLensNumericalAperture")))
    return objective


def _detector(ds: Dataset) -> dict[str, Any]:
    return _texts(
        ds,
        {
            "model": "DetectorManufacturerModelName",
            "manufacturer": "DetectorManufacturerName",
            "type": "DetectorType",
        },
    )


def transfer_syntax_name(uid: str) -> str:
    """The registered name of a transfer syntax UID, the UID itself when unknown."""
    return _NEWER_SYNTAXES.get(uid) or str(UID(uid).name)


def _transfer_syntax(header: Header) -> str:
    uid = value(header.dataset.file_meta, "TransferSyntaxUID")
    if uid:
        return transfer_syntax_name(str(uid))
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


def _listed(item: Any) -> list[Any]:
    if item is None:
        return []
    if isinstance(item, (MultiValue, list, tuple)):
        return list(item)
    return [item]


def _joined(item: Any) -> str | None:
    return "; ".join(p for p in (_text(v) for v in _listed(item)) if p) or None


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
