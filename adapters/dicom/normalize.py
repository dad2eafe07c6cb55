"""The DICOM adapter's normalized fields and ``original_metadata`` from a parsed header:
image geometry, pixel size, times, instrument, software, channels, within a size budget.
"""

from __future__ import annotations

import json
import math
import re
import struct
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from acqharvest.adapters.dicom.reader import Header
from acqharvest.adapters.dicom.values import dataset_json, first_item, rfc3339, rfc3339_dt, value

#: transfer syntaxes the standard added after the pydicom releases we support name theirs.
_NEWER_SYNTAXES = {
    "1.2.840.10008.1.2.8.1": "Deflated Image Frame Compression",
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
}
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


def normalized_metadata(header: Header, instances: int) -> dict[str, Any]:
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


def original_metadata(header: Header) -> tuple[dict[str, Any], list[str]]:
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
    rows, columns = as_integer(value(ds, "Rows")), as_integer(value(ds, "Columns"))
    if rows is None or columns is None:
        return {}
    image: dict[str, Any] = {}
    mosaic = _mosaic_images(ds)
    total_x = as_integer(value(ds, "TotalPixelMatrixColumns"))
    total_y = as_integer(value(ds, "TotalPixelMatrixRows"))
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
        paths = as_integer(value(ds, "NumberOfOpticalPaths"))
        _put(image, "size_c", paths or len(value(ds, "OpticalPathSequence") or ()) or None)
    _put(image, "size_t", _time_points(ds, stacks))
    image["frames"] = as_integer(value(ds, "NumberOfFrames")) or 1
    bits = as_integer(value(ds, "BitsAllocated"))
    _put(image, "bits", bits)
    _put(
        image,
        "pixel_type",
        _pixel_type(header.pixel_keyword, bits, value(ds, "PixelRepresentation")),
    )
    _put(image, "samples_per_pixel", as_integer(value(ds, "SamplesPerPixel")))
    _put(image, "photometric", _text(value(ds, "PhotometricInterpretation")))
    return image


def _mosaic_images(ds: Dataset) -> int | None:
    """Slices in a Siemens mosaic: (0019,100A), else the CSA image header's own count."""
    if "MOSAIC" not in [str(v).upper() for v in _listed(value(ds, "ImageType"))]:
        return None
    count = as_integer(_private(ds, 0x0019, "SIEMENS MR HEADER", 0x0A))
    if count:
        return count
    csa = _private(ds, 0x0029, "SIEMENS CSA HEADER", 0x10)
    if isinstance(csa, bytes):
        return as_integer(_csa_item(csa, "NumberOfImagesInMosaic"))
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
    matrix = [as_integer(v) or 0 for v in _listed(value(ds, "AcquisitionMatrix"))]
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
    declared = as_integer(value(ds, "NumberOfTemporalPositions"))
    if declared:
        return declared
    indices = {value(c, "TemporalPositionIndex") for c in contents} - {None}
    if len(indices) > 1:
        return len(indices)
    return as_integer(value(ds, "NumberOfTimeSlices"))


def _pixel_type(pixel_keyword: str | None, bits: int | None, representation: Any) -> str | None:
    if pixel_keyword == "FloatPixelData":
        return "float32"
    if pixel_keyword == "DoubleFloatPixelData":
        return "float64"
    if bits == 1:
        return "bit"
    if bits in (8, 16, 32, 64):
        return f"{'int' if as_integer(representation) == 1 else 'uint'}{bits}"
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


def as_integer(item: Any) -> int | None:
    try:
        return int(item) if item is not None else None
    except (TypeError, ValueError):
        return None
