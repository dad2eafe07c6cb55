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

import struct
import warnings

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
from acqharvest.adapters.dicom.normalize import (
    as_integer,
    normalized_metadata,
    original_metadata,
    transfer_syntax_name,
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

_IMAGES_IN_ACQUISITION = 0x00201002
_PET_SERIES_TYPE = 0x00541000
_PET_SLICES = 0x00540081
_PET_TIME_SLICES = 0x00540101
_CLAIM_TAGS = frozenset(
    {SERIES_UID_TAG, _IMAGES_IN_ACQUISITION, _PET_SLICES, _PET_TIME_SLICES, _PET_SERIES_TYPE}
)


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
        # PS3.18 / RFC 3240: every file of a DICOM acquisition, whatever its name
        media_types={"": "application/dicom"},
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
                metadata = normalized_metadata(header, len(draft.members))
                original, trimmed = original_metadata(header)
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
    images = as_integer(_ascii(values.get(_IMAGES_IN_ACQUISITION)))
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
