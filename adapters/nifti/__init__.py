"""NIfTI adapter: NIfTI-1 and NIfTI-2 headers, single files and ``.hdr`` + ``.img`` pairs.

Formats and variants: ``.nii`` (magic ``n+1`` / ``n+2``), ``.nii.gz`` (the same,
gzip-compressed: only the header and the extension headers are inflated), and the pair
layout (magic ``ni1`` / ``ni2`` in a ``.hdr``: the standard says the voxels are in the
``.img`` of the same name), both byte orders. The header's own magic decides the layout:
a ``.hdr`` whose magic says "pair" is the primary and expects its ``.img``; an ``.img``
is a member of the pair whose ``.hdr`` beside it says so, and one that arrives first
waits for its header. Header values are read by ``nibabel`` (the ``nifti`` extra),
imported only inside ``extract``.

Fields filled: image size (dims 1 to 5: x, y, z, t, then components as c), bits and data
type, pixel size in micrometres from the zooms in the header's spatial unit (metre,
millimetre, micron), the repetition time in seconds from the fourth zoom in its time
unit, the description, the intent, and what the qform and sform map to.

Deliberately not read: voxels and extension contents (the extension chain's 8-byte
headers are walked to find where the voxels start). Truncation: a ``.nii`` or ``.img``
must hold the voxels its header declares after ``vox_offset``; a ``.nii.gz``'s gzip
trailer (its last 4 bytes, the uncompressed size) must match header, extensions and
voxels, which tells a cut-short stream without inflating it (a BGZF file, whose last
block is an empty marker, is accepted as it stands).
"""

from __future__ import annotations

import gzip
import io
import math
import os
import stat
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

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

__all__ = ["NiftiAdapter"]

_SINGLE = {b"n+1\0": 1, b"n+2\0\r\n\x1a\n": 2}
_PAIR = {b"ni1\0": 1, b"ni2\0\r\n\x1a\n": 2}
#: sizeof_hdr -> NIfTI version
_SIZES = {348: 1, 540: 2}
#: a valid magic is strong evidence; an .img waiting for its header is only a guess.
CONFIDENCE = 0.9
IMG_WAITING_CONFIDENCE = 0.3
#: spatial units as micrometres, time units as seconds (nibabel's names)
_SPACE_UM = {"meter": 1e6, "mm": 1e3, "micron": 1.0}
_TIME_S = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}
#: the last 28 bytes of a BGZF file: an empty block whose trailer says 0 bytes
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
#: extension headers walked past at most this far before the voxels are taken to start
_EXTENSIONS_CAP = 64 * 1024 * 1024

_FIELDS = normalized_fields(
    {
        "image.size_x": "dim[1]",
        "image.size_y": "dim[2]",
        "image.size_z": "dim[3]",
        "image.size_t": "dim[4]",
        "image.size_c": "dim[5] (vector or statistic components)",
        "image.bits": "bitpix",
        "image.pixel_type": "datatype, as nibabel names it (uint8, int16, float32, RGB...)",
        "pixel_size_um.x": "pixdim[1] in the xyzt_units spatial unit (metre, mm, micron); "
        "not reported when the unit is unknown",
        "pixel_size_um.y": "pixdim[2], the same",
        "pixel_size_um.z": "pixdim[3], the same",
        "repetition_time_s": "pixdim[4] in the xyzt_units time unit (sec, msec, usec), "
        "for a header with a fourth dimension",
        "description": "descrip",
        "nifti.intent": "intent_code, as nibabel names it (none, t test, ...)",
        "nifti.qform": "qform_code (unknown, scanner, aligned, talairach, mni)",
        "nifti.sform": "sform_code, the same",
        "instances": "files in the acquisition (2 for a pair)",
    }
)


def _version(head: bytes) -> tuple[int, bool] | None:
    """(NIfTI version, pair layout) when ``head`` opens with a NIfTI header: its
    sizeof_hdr (either byte order) and its magic agree."""
    if len(head) < 12:
        return None
    size = {struct.unpack(f"{order}i", head[:4])[0] for order in "<>"}
    if 348 in size and len(head) >= 348 and head[344:348] in _SINGLE | _PAIR:
        return 1, head[344:348] in _PAIR
    if 540 in size and head[4:12] in _SINGLE | _PAIR:
        return 2, head[4:12] in _PAIR
    return None


def _inflated_head(head: bytes) -> bytes:
    try:
        return zlib.decompressobj(wbits=31).decompress(head, 1024)
    except zlib.error:
        return b""


def _is_gz(path: Path) -> bool:
    return path.name.lower().endswith(".nii.gz")


class NiftiAdapter:
    """NIfTI-1/-2 ``.nii``, ``.nii.gz`` and ``.hdr``/``.img`` pairs, headers via nibabel."""

    info = AdapterInfo(
        name="nifti",
        title="NIfTI-1 / NIfTI-2",
        version="1.0.0",
        stability="beta",
        formats=(
            FormatSpec(
                name="NIfTI",
                extensions=(".nii", ".nii.gz", ".hdr", ".img"),
                magic="n+1 at 344 (NIfTI-1), n+2 at 4 (NIfTI-2); ni1/ni2 in a .hdr of a pair",
                variants=("NIfTI-1", "NIfTI-2", "gzip", "hdr/img pair"),
            ),
        ),
        fields=_FIELDS,
        # no type is registered for NIfTI: a .nii.gz is a gzip file (RFC 6713)
        media_types={".nii.gz": "application/gzip"},
        samples=(
            "nifti/anatomical.nii",
            "nifti/example4d.nii.gz",
            "nifti/example_nifti2.nii.gz",
        ),
        requires=("nibabel",),
        extra="nifti",
    )

    def claim(self, probe: FileProbe, reader: Reader) -> Claim | None:
        name = probe.path.name.lower()
        if name.endswith(".img"):
            return _claim_img(probe.path, reader)
        head = _inflated_head(probe.head) if name.endswith(".nii.gz") else probe.head
        found = _version(head)
        if found is None:
            return None
        _, pair = found
        if pair and name.endswith(".hdr"):
            return Claim(
                _key(probe.path),
                role="primary",
                confidence=CONFIDENCE,
                expects=(_img_of(probe.path).name,),
            )
        if pair or not name.endswith((".nii", ".nii.gz")):
            return None  # a pair header under another name, or a single file misnamed
        return Claim(_key(probe.path), role="primary", confidence=CONFIDENCE)

    def extract(self, draft: Draft, reader: Reader) -> AdapterOutput:
        headers = [m for m in draft.members if not m.name.lower().endswith(".img")]
        if not headers:
            img = draft.primary
            return AdapterOutput(
                format="NIfTI",
                metadata={"instances": len(draft.members)},
                warnings=(f"{img.name}: its header {_hdr_of(img).name} is not in the acquisition",),
            )
        path = headers[0]
        header, offset = _read_header(path, reader)
        notes: list[str] = []
        metadata = _fields(header, notes)
        data_bytes = math.ceil(math.prod(header.get_data_shape()) * int(header["bitpix"]) / 8)
        pair = bytes(header["magic"]).rstrip(b"\0")[:2] == b"ni"
        if pair:
            images = [m for m in draft.members if m.name.lower().endswith(".img")]
            if not images:
                notes.append(
                    f"{_img_of(path).name}: the pair's image file is not in the acquisition"
                )
            for img in images:
                _check_size(img, reader, int(header["vox_offset"]) + data_bytes)
        elif _is_gz(path):
            _check_gzip(path, reader, offset + data_bytes)
        else:
            _check_size(path, reader, offset + data_bytes)
        metadata["instances"] = len(draft.members)
        version = 2 if int(header["sizeof_hdr"]) == 540 else 1
        return AdapterOutput(
            format=f"NIfTI-{version}",
            metadata=metadata,
            original_metadata=_original(header, offset, pair),
            warnings=tuple(notes),
        )


def _key(path: Path) -> str:
    """One key per pair: the path without its extension (``.nii.gz`` counts as one)."""
    text = os.path.normpath(path)
    for suffix in (".nii.gz", ".nii", ".hdr", ".img"):
        if text.lower().endswith(suffix):
            return f"nifti:{text[: -len(suffix)]}"
    return f"nifti:{text}"


def _img_of(hdr: Path) -> Path:
    return hdr.with_suffix(".IMG" if hdr.suffix == ".HDR" else ".img")


def _hdr_of(img: Path) -> Path:
    return img.with_suffix(".HDR" if img.suffix == ".IMG" else ".hdr")


def _claim_img(img: Path, reader: Reader) -> Claim | None:
    """An ``.img`` is a pair member when the ``.hdr`` beside it says so; one arriving first
    waits for its header (weakly: other formats use ``.img`` too)."""
    hdr = _hdr_of(img)
    try:
        kind = os.lstat(hdr).st_mode
    except FileNotFoundError:
        return Claim(
            _key(img), role="member", confidence=IMG_WAITING_CONFIDENCE, expects=(hdr.name,)
        )
    if not stat.S_ISREG(kind):
        return None  # a link or anything else is never read (and not this .img's header)
    found = _version(reader.read(hdr, 0, 1024))
    if found is None or not found[1]:
        return None  # the .hdr beside it is not a NIfTI pair header (Analyze, ENVI...)
    return Claim(_key(img), role="member", confidence=CONFIDENCE, expects=(hdr.name,))


def _read_header(path: Path, reader: Reader) -> tuple[Any, int]:
    """The nibabel header and where the voxels start (after header and extensions)."""
    import nibabel  # loaded on use: only hosts that meet NIfTI files need it

    with reader.open(path) as handle:
        stream: IO[bytes] | gzip.GzipFile = (
            gzip.GzipFile(fileobj=handle, mode="rb") if _is_gz(path) else handle
        )
        try:
            first = stream.read(4)
            if len(first) < 4:
                raise AdapterError(path, f"truncated: {len(first)} bytes, no NIfTI header")
            little, big = struct.unpack("<i", first)[0], struct.unpack(">i", first)[0]
            size = little if little in _SIZES else big
            if size not in _SIZES:
                raise AdapterError(path, f"sizeof_hdr is {little}, not 348 or 540: not NIfTI")
            block = first + stream.read(size - 4)
            if len(block) < size:
                raise AdapterError(path, f"truncated: the {size}-byte header is cut short")
            header = _parse(nibabel, path, block, size)
            vox_offset = int(header["vox_offset"])
            if vox_offset < size + 4:
                # 0 (or too small): the voxels follow the extensions, wherever they end
                order = "<" if little == size else ">"
                vox_offset = _extensions_end(stream.read, stream.seek, size, order)
        except (OSError, EOFError, zlib.error) as exc:
            raise AdapterError(path, f"not a readable gzip stream: {exc}") from exc
    return header, vox_offset


def _parse(nibabel: Any, path: Path, block: bytes, size: int) -> Any:
    klass = nibabel.Nifti2Header if size == 540 else nibabel.Nifti1Header
    try:
        header = klass.from_fileobj(io.BytesIO(block + b"\0" * 4), check=True)
        header.get_data_shape()
        header.get_data_dtype()
    except Exception as exc:
        raise AdapterError(path, f"NIfTI header refused: {type(exc).__name__}: {exc}") from exc
    return header


def _extensions_end(
    read: Callable[[int], bytes], seek: Callable[[int, int], int], size: int, order: str
) -> int:
    """Where the extension chain after the header ends: the first item that is no
    extension (a size under 16 or not a multiple of 16) is where the voxels start."""
    extender = read(4)
    position = size + len(extender)
    if len(extender) < 4 or extender[0] == 0:
        return position
    while position < _EXTENSIONS_CAP:
        item = read(8)
        esize = struct.unpack(f"{order}i", item[:4])[0] if len(item) == 8 else 0
        if esize < 16 or esize % 16:
            return position
        seek(esize - 8, os.SEEK_CUR)
        position += esize
    return position


def _fields(header: Any, notes: list[str]) -> dict[str, Any]:
    shape = header.get_data_shape()
    zooms = header.get_zooms()
    image: dict[str, Any] = {
        f"size_{axis}": int(size)
        for axis, size in zip(("x", "y", "z", "t", "c"), shape, strict=False)
    }
    image["bits"] = int(header["bitpix"])
    image["pixel_type"] = str(header.get_value_label("datatype"))
    metadata: dict[str, Any] = {"image": image}
    try:
        space, time = header.get_xyzt_units()
    except KeyError:  # a units byte whose codes NIfTI does not define: a damaged header
        code = int(header["xyzt_units"])
        space, time = f"code {code % 8}", f"code {code - code % 8}"
    factor = _SPACE_UM.get(space)
    if factor is None:
        notes.append(f"spatial unit {space!r}: the voxel size is not reported")
    else:
        pixel = {
            axis: round(float(zoom) * factor, 9)
            for axis, zoom in zip(("x", "y", "z"), zooms[:3], strict=False)
            if math.isfinite(zoom) and zoom > 0
        }
        if pixel:
            metadata["pixel_size_um"] = pixel
    if len(shape) >= 4 and time in _TIME_S and math.isfinite(zooms[3]) and zooms[3] > 0:
        metadata["repetition_time_s"] = round(float(zooms[3]) * _TIME_S[time], 9)
    description = bytes(header["descrip"]).split(b"\0", 1)[0].decode("latin-1").strip()
    if description:
        metadata["description"] = description
    metadata["nifti"] = {
        "intent": str(header.get_intent()[0]),
        "qform": str(header.get_value_label("qform_code")),
        "sform": str(header.get_value_label("sform_code")),
    }
    return metadata


def _original(header: Any, offset: int, pair: bool) -> dict[str, Any]:
    """The header's fields as read (arrays as lists, bytes as text)."""
    original: dict[str, Any] = {"layout": "pair" if pair else "single", "data_offset": offset}
    for name in header.keys():  # noqa: SIM118 - a nibabel header is no dict
        value = header[name]
        if getattr(value, "dtype", None) is not None and value.dtype.kind == "S":
            value = bytes(value).split(b"\0", 1)[0].decode("latin-1")
        original[name] = value.tolist() if hasattr(value, "tolist") else value
    return original


def _check_size(path: Path, reader: Reader, needed: int) -> None:
    with reader.open(path) as handle:
        size = int(handle.seek(0, os.SEEK_END))
    if size < needed:
        raise AdapterError(
            path, f"truncated: {size} bytes, but the header declares voxels up to byte {needed}"
        )


def _check_gzip(path: Path, reader: Reader, needed: int) -> None:
    """A whole gzip stream's trailer states its uncompressed size (modulo 2**32)."""
    with reader.open(path) as handle:
        size = int(handle.seek(0, os.SEEK_END))
        handle.seek(max(0, size - len(_BGZF_EOF)))
        tail = handle.read(len(_BGZF_EOF))
    if tail == _BGZF_EOF:
        return  # BGZF: the last block says nothing of the whole
    stated = struct.unpack("<I", tail[-4:])[0] if len(tail) >= 4 else -1
    if stated != needed % 2**32:
        raise AdapterError(
            path,
            f"truncated (or not one gzip stream): its trailer says {stated} bytes "
            f"uncompressed, the header declares {needed}",
        )
