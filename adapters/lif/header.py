"""The LIF or LOF header's XML, the memory blocks' headers, and the fields they give.

A LIF is a text block (0x70, its length, 0x2A, the XML as UTF-16) and then named memory
blocks. A LOF (one image exported by LAS X) starts with the same kind of text block, but
its text is ``LMS_Object_File``; then 0x2A and a major version, 0x2A and a minor version,
0x2A and the memory size (8 bytes), that many bytes of image memory, and last a second
text block holding the XML (Bio-Formats' LOFReader, Leica's own MATLAB reader and
liffile agree on this order).
"""

from __future__ import annotations

import datetime as dt
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, BinaryIO

from acqharvest.adapter_api import AdapterError, AdapterOutput, Reader
from acqharvest.adapters import safexml
from acqharvest.adapters.safexml import MAX_BYTES, XmlBroken, XmlRefused, parse

_MAGIC = 0x70
_MEMORY = 0x2A
#: magic, length of what follows, 0x2A, XML length in UTF-16 code units
_HEADER = struct.Struct("<iiBi")
#: a memory block starts: magic, length of its description part, 0x2A
_BLOCK = struct.Struct("<iiB")
#: the text of a LOF's first block, in place of the XML
LOF_TYPE = "LMS_Object_File"
#: after it: 0x2A, major version, 0x2A, minor version, 0x2A, memory size
_LOF_MEMORY = struct.Struct("<BiBiBQ")
#: DimID -> image key
_DIMENSIONS = {1: "size_x", 2: "size_y", 3: "size_z", 4: "size_t", 10: "tiles"}
_AXES = {1: "x", 2: "y", 3: "z"}
#: metres per unit of a DimensionDescription's Length
_METRES = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "nm": 1e-9}
#: FILETIME (100 ns ticks since 1601-01-01 UTC)
_FILETIME_EPOCH = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)
_VERSIONED = re.compile(r"^(.*?)\s+v?(\d[\w.\-]*)$")


def read_lif(path: Path, reader: Reader) -> AdapterOutput:
    """A LIF (a project of series) or a LOF (one exported image): they differ in layout only."""
    lof: dict[str, int] | None = None
    blocks: dict[str, int] = {}
    with reader.open(path) as handle:
        size = handle.seek(0, 2)
        handle.seek(0)
        text = _xml_text(path, handle, size)
        if text == LOF_TYPE:
            lof = _lof_memory(path, handle, size)
            text = _xml_text(path, handle, size)
        else:
            blocks = _blocks(path, handle, handle.tell(), size)
    try:
        root = parse(text)
    except (XmlRefused, XmlBroken) as exc:
        raise AdapterError(path, f"XML header: {exc}") from exc
    if lof is not None:
        root = _lof_root(root, path)
        # a LOF's one memory block has no name of its own: the XML's Memory is that block
        blocks = {m.get("MemoryBlockID") or "": lof["memory_bytes"] for m in root.iter("Memory")}
    _check_blocks(path, root, blocks)
    fmt = "Leica LIF" if lof is None else "Leica LOF"
    series = [_series(element, name) for element, name in _images(root)]
    if not series:
        what = "the project holds no image series" if lof is None else "the object is no image"
        return AdapterOutput(format=fmt, metadata={}, warnings=(what,))
    first = series[0]
    metadata: dict[str, Any] = {
        key: first[key] for key in ("image", "pixel_size_um") if key in first
    }
    metadata.update(first["settings"])
    metadata["acquired"] = first.get("acquired")
    metadata["series"] = [
        _clean({key: item.get(key) for key in ("name", "image", "pixel_size_um", "acquired")})
        for item in series
    ]
    original: dict[str, Any] = {
        "version": root.get("Version"),
        "series": [item["original"] for item in series],
    }
    if lof is not None:
        original["lof"] = lof
    return AdapterOutput(
        format=fmt,
        metadata=_clean(metadata),
        original_metadata=_clean(original),
        started=first.get("acquired"),
    )


def _xml_text(path: Path, handle: BinaryIO, size: int) -> str:
    """The text of the 0x70 text block at the handle's position (the XML, or a LOF's type)."""
    start = handle.tell()
    raw = handle.read(_HEADER.size)
    if len(raw) < _HEADER.size:
        where = "the Leica header" if start == 0 else f"the XML block at {start}"
        raise AdapterError(path, f"truncated: shorter than {where}")
    magic, length, memory, units = _HEADER.unpack(raw)
    if magic != _MAGIC or memory != _MEMORY:
        if start == 0:
            raise AdapterError(path, "not a LIF or LOF file (no 0x70 header magic)")
        raise AdapterError(path, f"no 0x70 XML block at {start}")
    if length != 1 + 4 + 2 * units or units <= 0:
        raise AdapterError(path, f"header length {length} does not match its XML ({units} chars)")
    if start + _HEADER.size + 2 * units > size:
        raise AdapterError(
            path, f"truncated: the XML header declares {2 * units} bytes, the file ends at {size}"
        )
    if 2 * units > MAX_BYTES:
        raise AdapterError(path, f"XML header of {2 * units} bytes is over the limit")
    data = handle.read(2 * units)
    try:
        return data.decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise AdapterError(path, f"XML header is not UTF-16: {exc}") from exc


def _lof_memory(path: Path, handle: BinaryIO, size: int) -> dict[str, int]:
    """A LOF's versions and memory size; the handle is left on the XML block after the memory."""
    start = handle.tell()
    raw = handle.read(_LOF_MEMORY.size)
    if len(raw) < _LOF_MEMORY.size:
        raise AdapterError(path, f"truncated: LOF memory header at {start} cut short")
    mark1, major, mark2, minor, mark3, length = _LOF_MEMORY.unpack(raw)
    if (mark1, mark2, mark3) != (_MEMORY,) * 3:
        raise AdapterError(path, f"LOF memory header at {start}: no 0x2A before its values")
    memory_at = start + _LOF_MEMORY.size
    # the XML follows the memory: a file that ends inside the memory or right after it
    # has lost its metadata as well as pixels
    if memory_at + length >= size:
        raise AdapterError(
            path,
            f"truncated: the LOF memory declares {length} bytes from {memory_at}, "
            f"the file ends at {size} with no XML after it",
        )
    handle.seek(memory_at + length)
    return {"major_version": major, "minor_version": minor, "memory_bytes": length}


def _lof_root(root: ET.Element, path: Path) -> ET.Element:
    """A LOF's XML as a one-element project: older LOFs hold a bare ``<Data>`` fragment."""
    if root.tag != "Data":
        return root
    wrapped = ET.Element("LMSDataContainerHeader")
    element = ET.SubElement(wrapped, "Element", Name=path.stem)
    element.append(root)
    return wrapped


def _blocks(path: Path, handle: BinaryIO, position: int, size: int) -> dict[str, int]:
    """Memory block id -> size, walked header by header to the end of the file."""
    blocks: dict[str, int] = {}
    while position < size:
        handle.seek(position)
        raw = handle.read(_BLOCK.size + 8 + 1 + 4)
        if len(raw) < _BLOCK.size + 4 + 1 + 4:
            raise AdapterError(path, f"truncated: memory block header at {position} cut short")
        magic, _, memory = _BLOCK.unpack_from(raw)
        if magic != _MAGIC or memory != _MEMORY:
            raise AdapterError(path, f"no memory block at {position}")
        # version 1 blocks give their size in 4 bytes, version 2 in 8; 0x2A follows either
        if raw[_BLOCK.size + 4] == _MEMORY:
            (length,) = struct.unpack_from("<I", raw, _BLOCK.size)
            after = _BLOCK.size + 4 + 1
        elif len(raw) == _BLOCK.size + 13 and raw[_BLOCK.size + 8] == _MEMORY:
            (length,) = struct.unpack_from("<Q", raw, _BLOCK.size)
            after = _BLOCK.size + 8 + 1
        else:
            raise AdapterError(path, f"memory block at {position}: no 0x2A after its size")
        handle.seek(position + after)
        (units,) = struct.unpack("<I", handle.read(4))
        name_at = position + after + 4
        end = name_at + 2 * units + length
        if end > size:
            raise AdapterError(
                path,
                f"truncated: memory block at {position} declares {length} bytes, "
                f"the file ends at {size}",
            )
        name = handle.read(2 * units).decode("utf-16-le", errors="replace")
        blocks[name] = length
        position = end
    return blocks


def _check_blocks(path: Path, root: ET.Element, blocks: dict[str, int]) -> None:
    """Every block the XML declares with data must be in the file with that size."""
    for memory in root.iter("Memory"):
        declared = _int(memory.get("Size")) or 0
        name = memory.get("MemoryBlockID") or ""
        if declared > 0 and blocks.get(name) != declared:
            found = blocks.get(name)
            what = "missing" if found is None else f"{found} bytes"
            raise AdapterError(
                path, f"truncated: memory block {name} of {declared} bytes is {what}"
            )


def _images(root: ET.Element) -> list[tuple[ET.Element, str]]:
    """Every element holding an image, in document order, with its folder path."""
    found: list[tuple[ET.Element, str]] = []

    def walk(element: ET.Element, prefix: str, depth: int) -> None:
        for child in element.findall("Children/Element") if depth else element.findall("Element"):
            name = child.get("Name") or "?"
            # the top element is the project itself: paths start below it
            path = f"{prefix}/{name}" if prefix else ("" if depth == 0 else name)
            if child.find("Data/Image") is not None:
                found.append((child, path or name))
            walk(child, path, depth + 1)

    walk(root, "", 0)
    return found


def _series(element: ET.Element, name: str) -> dict[str, Any]:
    image = element.find("Data/Image")
    assert image is not None  # _images chose it for having one
    dims = image.findall("ImageDescription/Dimensions/DimensionDescription")
    channels = image.findall("ImageDescription/Channels/ChannelDescription")
    sizes: dict[str, Any] = {}
    pixel: dict[str, float] = {}
    for dim in dims:
        dim_id, count = _int(dim.get("DimID")), _int(dim.get("NumberOfElements"))
        if dim_id in _DIMENSIONS and count:
            sizes[_DIMENSIONS[dim_id]] = count
        length = safexml.number(dim.get("Length"))
        metres = _METRES.get((dim.get("Unit") or "").strip())
        if dim_id in _AXES and count and count > 1 and length and metres:
            pixel[_AXES[dim_id]] = abs(length) * metres * 1e6 / (count - 1)
    sizes["size_c"] = len(channels) or None
    sizes["bits"] = _int(channels[0].get("Resolution")) if channels else None
    hardware = image.find("Attachment[@Name='HardwareSetting']")
    definition = _definition(hardware)
    if definition is not None and (sizes.get("size_t") or 0) > 1:
        sizes["time_increment_s"] = _positive(definition.get("CycleTime"))
    detectors = _detectors(definition)
    out = {
        "name": name,
        "image": _clean(sizes),
        "pixel_size_um": pixel or None,
        "acquired": _acquired(image),
        "settings": _clean(_settings(hardware, definition, detectors, len(channels))),
        "original": _clean(
            {
                "name": name,
                "dimensions": [dict(d.attrib) for d in dims],
                "channels": [dict(c.attrib) for c in channels],
                "hardware_setting": dict(hardware.attrib) if hardware is not None else None,
                "setting_definition": dict(definition.attrib) if definition is not None else None,
            }
        ),
    }
    return _clean(out)


def _definition(hardware: ET.Element | None) -> ET.Element | None:
    """The confocal or camera setting definition of a HardwareSetting attachment."""
    if hardware is None:
        return None
    for child in hardware:
        if child.tag.startswith("ATL") and child.tag.endswith("SettingDefinition"):
            return child
    return None


def _detectors(definition: ET.Element | None) -> list[ET.Element]:
    if definition is None:
        return []
    return [d for d in definition.iter("Detector") if d.get("IsActive") == "1"]


def _settings(
    hardware: ET.Element | None,
    definition: ET.Element | None,
    detectors: list[ET.Element],
    channel_count: int,
) -> dict[str, Any]:
    if hardware is None:
        return {}
    software, version = _software(hardware.get("Software"))
    out: dict[str, Any] = {
        "modality": safexml.text(hardware.get("DataSourceTypeName")),
        "instrument_reported": _clean(
            {
                "model": safexml.text(hardware.get("SystemTypeName")),
                "software": software,
                "software_version": version,
            }
        ),
    }
    if definition is None:
        return out
    out["objective"] = _clean(
        {
            "model": safexml.text(definition.get("ObjectiveName")),
            "magnification": safexml.number(definition.get("Magnification")),
            "na": safexml.number(definition.get("NumericalAperture")),
            "immersion": safexml.text(definition.get("Immersion")),
        }
    )
    out["detectors"] = [
        _clean({"model": safexml.text(d.get("Name")), "type": safexml.text(d.get("Type"))})
        for d in detectors
    ]
    lines = {
        line
        for setting in definition.iter("LaserLineSetting")
        if (safexml.number(setting.get("IntensityDev")) or 0) > 0
        and (line := safexml.number(setting.get("LaserLine"))) is not None
    }
    out["laser_lines_nm"] = sorted(lines)
    if detectors and len(detectors) == channel_count:
        out["channels"] = [_clean(_channel(definition, d)) for d in detectors]
    return out


def _channel(definition: ET.Element, detector: ET.Element) -> dict[str, Any]:
    number = detector.get("Channel")
    band = next(
        (b for b in definition.findall("Spectro/MultiBand") if b.get("Channel") == number), None
    )
    pinhole_m = _positive(definition.get("Pinhole"))
    return {
        "name": safexml.text(detector.get("ChannelName")) or safexml.text(detector.get("Name")),
        "fluor": safexml.text(band.get("DyeName")) if band is not None else None,
        "pinhole_um": round(pinhole_m * 1e6, 6) if pinhole_m is not None else None,
        "detector_settings": _clean(
            {
                "gain": safexml.number(detector.get("Gain")),
                "offset": safexml.number(detector.get("Offset")),
            }
        ),
    }


def _positive(value: str | None) -> float | None:
    number = safexml.number(value)
    return number if number is not None and number > 0 else None


def _software(value: str | None) -> tuple[str | None, str | None]:
    text = safexml.text(value)
    if text is None:
        return None, None
    match = _VERSIONED.match(text)
    return (match.group(1), match.group(2)) if match else (text, None)


def _acquired(image: ET.Element) -> str | None:
    """The first time stamp of a series as RFC 3339 UTC (LIF stores Windows FILETIMEs)."""
    stamps = image.find("TimeStampList")
    ticks: int | None = None
    if stamps is not None and (stamps.text or "").split():
        try:
            ticks = int((stamps.text or "").split()[0], 16)
        except ValueError:
            ticks = None
    if ticks is None:
        stamp = image.find("TimeStampList/TimeStamp")
        if stamp is not None:
            high, low = _int(stamp.get("HighInteger")), _int(stamp.get("LowInteger"))
            ticks = (high << 32) + low if high is not None and low is not None else None
    if not ticks:
        return None
    try:
        moment = _FILETIME_EPOCH + dt.timedelta(microseconds=ticks // 10)
    except OverflowError:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _int(value: str | None) -> int | None:
    number = safexml.number(value)
    return int(number) if number is not None and number.is_integer() and number >= 0 else None


def _clean(mapping: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if value not in (None, {}, [])}
