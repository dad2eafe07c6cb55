"""Reads an ND2 file's metadata with the nd2 library, and checks its chunk map.

Imported by ``Nd2Adapter.extract`` only. The library is given the agent's read-only
handle (not the path), so it never opens or memory-maps the file itself and every byte
it reads is counted.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import nd2

from acqharvest.adapter_api import AdapterError, AdapterOutput, Reader
from acqharvest.adapters.nd2 import MAGIC

_T = TypeVar("_T")
#: the last 40 bytes of a modern ND2: this signature and the chunk map's offset
_SIGNATURE = b"ND2 CHUNK MAP SIGNATURE 0000001!"
_TAIL = struct.Struct("<32sQ")
#: a chunk header: magic, name length, data length
_CHUNK = struct.Struct("<IIQ")
_CHUNK_MAGIC = 0x0ABECEDA
#: a chunk map larger than this is not read (a million frames take about 40 MB)
_MAP_CAP = 64 * 2**20
#: the Julian day number of 1970-01-01T00:00:00Z
_JDN_EPOCH = 2440587.5
_LOOPS = {"TimeLoop": "time", "NETimeLoop": "time", "ZStackLoop": "z", "XYPosLoop": "xy"}
_PIXEL_TYPES = {"unsigned": "uint", "signed": "int", "float": "float"}
#: nd2 modalityFlags as OME values, first match wins: the order and values of the nd2
#: library's own OME export (``nd2._ome``, private, so mirrored here rather than imported).
_ACQUISITION_MODES = (
    ("laserScanConfocal", "LaserScanningConfocalMicroscopy"),
    ("spinningDiskConfocal", "SpinningDiskConfocal"),
    ("sweptFieldConfocalPinhole", "SweptFieldConfocal"),
    ("sweptFieldConfocalSlit", "SlitScanConfocal"),
    ("brightfield", "BrightField"),
    ("SIM", "StructuredIllumination"),
    ("TIRF", "TotalInternalReflection"),
    ("multiphoton", "MultiPhotonMicroscopy"),
    ("fluorescence", "WideField"),
)
_CONTRAST_METHODS = (
    ("fluorescence", "Fluorescence"),
    ("brightfield", "Brightfield"),
    ("phaseContrast", "Phase"),
    ("diContrast", "DIC"),
)
_ILLUMINATION_TYPES = (
    ("fluorescence", "Epifluorescence"),
    ("brightfield", "Transmitted"),
    ("multiphoton", "NonLinear"),
)


def read_nd2(path: Path, reader: Reader) -> AdapterOutput:
    notes: list[str] = []
    with reader.open(path) as handle:
        size = handle.seek(0, 2)
        handle.seek(0)
        modern = handle.read(4) == MAGIC
        if modern:
            _check_chunks(path, handle, size)
        handle.seek(0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                # a BinaryIO's read(n) takes None too; nd2's protocol spells it out
                file = nd2.ND2File(handle)  # type: ignore[arg-type]
            except Exception as exc:  # nd2 raises ValueError, struct.error, OSError...
                raise AdapterError(path, f"unreadable ND2: {type(exc).__name__}: {exc}") from exc
            try:
                attributes = _part(notes, "attributes", lambda: file.attributes)
                if attributes is None:
                    raise AdapterError(path, f"unreadable ND2 attributes: {'; '.join(notes)}")
                sizes = dict(_part(notes, "sizes", lambda: file.sizes) or {})
                voxel = _part(notes, "voxel size", file.voxel_size)
                loops = _part(notes, "experiment", lambda: file.experiment) or []
                meta = _part(notes, "metadata", lambda: file.metadata)
                text = dict(_part(notes, "text info", lambda: file.text_info) or {})
                app = (_part(notes, "custom data", lambda: file.custom_data) or {}).get(
                    "AppInfo_V1_0"
                ) or {}
                first = _part(notes, "frame metadata", lambda: file.frame_metadata(0))
                version = _part(notes, "version", lambda: file.version) or ()
            finally:
                file.close()
    notes += [f"nd2: {w.message}" for w in caught]
    metadata = _normalized(attributes, sizes, voxel, loops, meta, text, app, first)
    original = {
        "version": ".".join(str(v) for v in version),
        "attributes": _plain(attributes),
        "sizes": sizes,
        "experiment": [_plain(loop) for loop in loops],
        "text_info": text,
        "app_info": {k: v for k, v in app.items() if isinstance(v, str)},
    }
    return AdapterOutput(
        format="Nikon ND2",
        metadata=metadata,
        original_metadata=original,
        started=metadata.get("acquired"),
        warnings=tuple(notes),
    )


def _part(notes: list[str], what: str, read: Callable[[], _T]) -> _T | None:
    """One section of the metadata; a section nd2 cannot decode is a warning, not a failure."""
    try:
        return read()
    except Exception as exc:  # noqa: BLE001 - the library's decoders raise many types
        notes.append(f"{what} not read: {type(exc).__name__}: {exc}")
        return None


def _check_chunks(path: Path, handle: BinaryIO, size: int) -> None:
    """The chunk map at the end must be there, and every chunk it lists inside the file."""
    if size < _TAIL.size + _CHUNK.size:
        raise AdapterError(path, f"truncated: {size} bytes cannot hold an ND2 chunk map")
    handle.seek(size - _TAIL.size)
    signature, location = _TAIL.unpack(handle.read(_TAIL.size))
    if signature != _SIGNATURE:
        raise AdapterError(path, "truncated: no chunk map signature at the end of the file")
    if location + _CHUNK.size > size:
        raise AdapterError(path, f"truncated: the chunk map at {location} is past the end")
    handle.seek(location)
    magic, name_length, data_length = _CHUNK.unpack(handle.read(_CHUNK.size))
    end = location + _CHUNK.size + name_length + data_length
    if magic != _CHUNK_MAGIC or end > size or data_length > _MAP_CAP:
        raise AdapterError(path, f"the chunk map at {location} is damaged or past the end")
    handle.seek(location + _CHUNK.size + name_length)
    body = handle.read(data_length)
    position = 0
    while True:
        stop = body.find(b"!", position)
        if stop < 0:
            raise AdapterError(path, "the chunk map has no end signature")
        name = body[position : stop + 1]
        if name == _SIGNATURE:
            return
        if stop + 17 > len(body):
            raise AdapterError(path, "the chunk map is cut inside an entry")
        offset, length = struct.unpack_from("<QQ", body, stop + 1)
        if offset + _CHUNK.size + length > size:
            label = name.decode("ascii", errors="replace")
            raise AdapterError(
                path,
                f"truncated: chunk {label} at {offset} declares {length} bytes, "
                f"the file ends at {size}",
            )
        position = stop + 17


def _normalized(
    attributes: Any,
    sizes: dict[str, int],
    voxel: Any,
    loops: list[Any],
    meta: Any,
    text: dict[str, Any],
    app: dict[str, Any],
    first: Any,
) -> dict[str, Any]:
    channels = list(getattr(meta, "channels", None) or [])
    microscope = getattr(channels[0], "microscope", None) if channels else None
    kind = _PIXEL_TYPES.get(str(attributes.pixelDataType))
    memory_bits = attributes.bitsPerComponentInMemory
    image = {
        "size_x": attributes.widthPx,
        "size_y": attributes.heightPx,
        "size_z": sizes.get("Z"),
        "size_c": attributes.channelCount or attributes.componentCount,
        "size_t": sizes.get("T"),
        "scenes": sizes.get("P"),
        "frames": attributes.sequenceCount,
        "bits": attributes.bitsPerComponentSignificant,
        "pixel_type": f"{kind}{memory_bits}" if kind and memory_bits else None,
        "samples_per_pixel": sizes.get("S"),
    }
    pixel: dict[str, float] = {}
    if voxel is not None:
        for axis in ("x", "y", "z"):
            value = getattr(voxel, axis)
            if value and value > 0 and (axis != "z" or "Z" in sizes):
                pixel[axis] = float(value)
    description = str(text.get("description") or "")
    out: dict[str, Any] = {
        "image": _clean(image),
        "pixel_size_um": pixel,
        "loops": [_clean(_loop(loop)) for loop in loops],
        "acquired": _acquired(first),
        "modality": "+".join(getattr(microscope, "modalityFlags", None) or []) or None,
        "instrument_reported": _clean(
            {
                "model": _line(description, "Microscope"),
                "software": _text(app.get("SWNameString")),
                "software_version": _text(app.get("VersionString")),
            }
        ),
        "objective": _clean(
            {
                "model": _text(getattr(microscope, "objectiveName", None))
                or _text(text.get("optics")),
                "magnification": _positive(getattr(microscope, "objectiveMagnification", None)),
                "na": _positive(getattr(microscope, "objectiveNumericalAperture", None)),
            }
        ),
        "detector": _clean({"model": _line(description, "Camera Name")}),
        "channels": [_clean(_channel(c)) for c in channels],
    }
    return _clean(out)


def _loop(loop: Any) -> dict[str, Any]:
    params = getattr(loop, "parameters", None)
    out: dict[str, Any] = {"type": _LOOPS.get(loop.type, loop.type), "count": loop.count}
    if loop.type == "TimeLoop":
        period = getattr(params, "periodMs", None)
        out["period_s"] = period / 1000 if period else None
    if loop.type == "ZStackLoop":
        out["step_um"] = _positive(getattr(params, "stepUm", None))
    return out


def _channel(channel: Any) -> dict[str, Any]:
    meta = channel.channel
    microscope = getattr(channel, "microscope", None)
    flags = set(getattr(microscope, "modalityFlags", None) or ())
    return {
        "name": _text(meta.name),
        "excitation_nm": _positive(meta.excitationLambdaNm),
        "emission_nm": _positive(meta.emissionLambdaNm),
        "acquisition_mode": next((m for f, m in _ACQUISITION_MODES if f in flags), None),
        "contrast_method": next((m for f, m in _CONTRAST_METHODS if f in flags), None),
        "illumination": next((m for f, m in _ILLUMINATION_TYPES if f in flags), None),
        "pinhole_um": _positive(getattr(microscope, "pinholeDiameterUm", None)),
    }


def _acquired(first: Any) -> str | None:
    channels = getattr(first, "channels", None) or []
    time = getattr(channels[0], "time", None) if channels else None
    jdn = getattr(time, "absoluteJulianDayNumber", None)
    if not isinstance(jdn, (int, float)) or jdn < 1:
        return None
    try:
        moment = dt.datetime.fromtimestamp((jdn - _JDN_EPOCH) * 86400, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _line(description: str, label: str) -> str | None:
    """The value after ``label:`` on a line of NIS-Elements' description text."""
    found = re.search(rf"(?:^|[\r\n\s]){re.escape(label)}:[ \t]*([^\r\n]+)", description)
    return _text(found.group(1)) if found else None


def _plain(value: Any) -> Any:
    """A dataclass (nd2's structures) as nested mappings."""
    if hasattr(value, "__dataclass_fields__"):
        return {name: _plain(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _positive(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def _clean(mapping: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if value not in (None, {}, [], "")}
