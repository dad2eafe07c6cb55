"""Low-level DICOM header access for the DICOM adapter: sniffing, bounded reads, JSON values.

Everything here reads through the agent's ``Reader`` handle and stops before pixel data;
the only bytes read past the header are the 8-byte item headers of encapsulated pixel
data, to tell a complete file from a truncated one. A deflated data set is inflated in
steps only as far as its pixel data, within ``DEFLATED_HEADER_BUDGET`` (a decompression
bomb is refused, not inflated); the rest of the stream is inflated and discarded, up to
``DEFLATED_CHECK_BUDGET``, only to tell a cut-short file from a whole one.
"""

from __future__ import annotations

import os
import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.filereader import read_dataset, read_partial
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import PersonName

from acqharvest.adapter_api import HEAD_BYTES, AdapterError, Reader

SERIES_UID_TAG = 0x0020000E
PIXEL_TAGS = {
    0x7FE00010: "PixelData",
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
}
#: values longer than this are skipped, not loaded (large private blobs, overlays, icons).
DEFER_SIZE = 64 * 1024
#: VRs that hold binary data; never copied into metadata.
BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN", "OB or OW", "US or OW"})
#: encapsulated pixel data with more fragments than this is not walked to the end.
MAX_FRAGMENTS = 100_000
#: sequences nest at most this deep in ``original_metadata``.
MAX_DEPTH = 3
#: inflated bytes a deflated data set may take before its pixel data; past it, refused.
DEFLATED_HEADER_BUDGET = 32 * 1024 * 1024
#: inflated bytes past the header checked (and discarded) for a cut-short stream.
DEFLATED_CHECK_BUDGET = 256 * 1024 * 1024
_INFLATE_CHUNK = 64 * 1024
#: widest window ``check_complete`` reads for one element before it parses the header instead.
WALK_BUDGET = 1024 * 1024
#: header bytes ``read_header`` keeps for the walk of the same file that follows.
KEEP_HEAD = WALK_BUDGET
#: how far into a file its file meta group is looked for, at most.
_META_HEAD = 64 * 1024
#: a raw deflate stream holding nothing: one empty final block.
_EMPTY_DEFLATE = b"\x03\x00"
_PIXEL_TAG_BYTES = tuple(struct.pack("<HH", tag >> 16, tag & 0xFFFF) for tag in PIXEL_TAGS)

_EXPLICIT_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC"} | {b"UN", b"UR", b"UT", b"UV"}
)
_ITEM = 0xFFFEE000
_SEQ_DELIMITER = 0xFFFEE0DD


# --------------------------------------------------------------------------- sniffing


def has_preamble(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def looks_headless(head: bytes) -> bool:
    """True when the head parses as at least two group 0002/0008 elements from offset 0.

    Old ACR-NEMA style files and datasets written without a preamble have no ``DICM``;
    they start directly with the file meta group or the dataset, in implicit or explicit VR
    little endian, or in (retired) explicit VR big endian.
    """
    if head[:2] == b"\x02\x00" and _UID.fullmatch(_file_meta(head, 0)[1] or ""):
        return True  # a file meta group that names a transfer syntax, however short
    return any(_walk(head, explicit, little) >= 2 for explicit, little in _LAYOUTS)


_UID = re.compile(r"[0-9]+(\.[0-9]+)+")


#: (explicit VR, little endian) of the encodings a dataset may be written in, the likeliest
#: first; implicit VR big endian is no transfer syntax.
_LAYOUTS = ((False, True), (True, True), (True, False))


def _walk(head: bytes, explicit: bool, little: bool) -> int:
    pos, count, last = 0, 0, -1
    order = "<" if little else ">"
    while count < 4 and pos + 8 <= len(head):
        group, element = struct.unpack_from(order + "HH", head, pos)
        tag = group << 16 | element
        if group not in (0x0002, 0x0008) or tag <= last:
            break
        if group == 0x0002 and not little:
            break  # the file meta group is always explicit VR little endian
        if explicit:
            vr = head[pos + 4 : pos + 6]
            if not (vr.isalpha() and vr.isupper()):
                break
            if vr in _EXPLICIT_LONG_VRS:
                if pos + 12 > len(head):
                    break
                (length,) = struct.unpack_from(order + "I", head, pos + 8)
                pos += 12
            else:
                (length,) = struct.unpack_from(order + "H", head, pos + 6)
                pos += 8
        else:
            (length,) = struct.unpack_from(order + "I", head, pos + 4)
            pos += 8
        count += 1
        if length == 0xFFFFFFFF:
            break  # a sequence of undefined length; elements so far are convincing enough
        if length > 0xFFFF:
            return 0  # header elements in these groups are short; this is not DICOM
        pos += length
        last = tag
    return count


# --------------------------------------------------------------------------- fast group key


class Undecided(Exception):
    """The head bytes alone cannot tell the SeriesInstanceUID; parse the file instead."""


class _Short(Undecided):
    """The bytes walked end inside an element header."""


_IMPLICIT_LE = "1.2.840.10008.1.2"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_ITEM_DELIMITER = 0xFFFEE00D
_UNDEFINED = 0xFFFFFFFF


def series_uid_in_head(head: bytes) -> str | None:
    """The top-level SeriesInstanceUID found by walking the head bytes, or None if absent.

    Runs for every file a folder receives, where a pydicom parse costs ten times more. It
    skips elements by their lengths (sequences of undefined length item by item) and raises
    :class:`Undecided` whenever the head is not enough or the encoding is one it does not
    walk (big endian, deflated); the claim then falls back to pydicom.
    """
    values, reached = head_values(head, frozenset({SERIES_UID_TAG}))
    if SERIES_UID_TAG in values:
        return values[SERIES_UID_TAG].rstrip(b"\x00 ").decode("ascii", "replace") or None
    if reached > SERIES_UID_TAG:
        return None
    raise Undecided


def head_values(head: bytes, tags: frozenset[int]) -> tuple[dict[int, bytes], int]:
    """Raw values of the top-level ``tags`` in the head, and the last tag walked past.

    Stops at the last wanted tag or where the head ends; raises :class:`Undecided` when the
    encoding is not one it walks (its callers read values as little endian), or the
    elements are out of order.
    """
    pos, explicit, little = dataset_start(head)
    if not little:
        raise Undecided
    found: dict[int, bytes] = {}
    last, stop = -1, max(tags)
    try:
        while last < stop:
            tag, length, value = _element(head, pos, explicit)
            if tag <= last:
                raise Undecided  # out of order: a misread, not a DICOM dataset we understand
            if tag in tags and length != _UNDEFINED:
                if value + length > len(head):
                    break
                found[tag] = head[value : value + length]
            pos = _end_of(head, pos, length, value, explicit)
            last = tag
    except Undecided:
        if last < 0:
            raise
    return found, last


def dataset_start(head: bytes) -> tuple[int, bool, bool]:
    """(offset, explicit VR, little endian) of the dataset the head holds.

    Every layout pydicom reads: with or without the preamble, with or without the file
    meta group (whose transfer syntax then names the encoding), and without it the
    encoding the first elements parse in. Raises :class:`Undecided` for a deflated data
    set, a file meta group longer than the head, or a head that parses in no encoding.
    """
    pos = 132 if has_preamble(head) else 0
    if head[pos : pos + 2] == b"\x02\x00":
        pos, syntax = _file_meta(head, pos)
        if syntax is None or syntax == DeflatedExplicitVRLittleEndian:
            raise Undecided
        return pos, syntax != _IMPLICIT_LE, syntax != _BIG_ENDIAN
    for explicit, little in _LAYOUTS:
        if _walk(head[pos:], explicit, little) >= 2:
            return pos, explicit, little
    raise Undecided


def _file_meta(head: bytes, pos: int) -> tuple[int, str | None]:
    syntax = None
    while pos + 12 <= len(head) and struct.unpack_from("<H", head, pos)[0] == 0x0002:
        tag, length, value = _element(head, pos, explicit=True)
        if tag == 0x00020010:
            syntax = head[value : value + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = value + length
    return pos, syntax


def _element(head: bytes, pos: int, explicit: bool, little: bool = True) -> tuple[int, int, int]:
    """(tag, value length, value offset) of the element at ``pos``."""
    if pos + 8 > len(head):
        raise _Short
    order = "<" if little else ">"
    group, element = struct.unpack_from(order + "HH", head, pos)
    tag = group << 16 | element
    if explicit and group != 0xFFFE:
        vr = head[pos + 4 : pos + 6]
        if vr in _EXPLICIT_LONG_VRS:
            if pos + 12 > len(head):
                raise _Short
            return tag, struct.unpack_from(order + "I", head, pos + 8)[0], pos + 12
        return tag, struct.unpack_from(order + "H", head, pos + 6)[0], pos + 8
    return tag, struct.unpack_from(order + "I", head, pos + 4)[0], pos + 8


def _end_of(
    head: bytes, pos: int, length: int, value: int, explicit: bool, little: bool = True
) -> int:
    """Offset after the element at ``pos`` (its value at ``value``, of ``length``)."""
    if length != _UNDEFINED:
        return value + length
    if explicit and head[pos + 4 : pos + 6] == b"UN":
        # An undefined-length UN holds its items in implicit VR little endian (PS3.5 6.2.2).
        if not little:
            raise Undecided
        explicit = False
    return _skip_sequence(head, value, explicit, little)


def _skip_sequence(head: bytes, pos: int, explicit: bool, little: bool = True) -> int:
    """Offset after an undefined-length sequence (or encapsulated data) starting at ``pos``."""
    while True:
        tag, length, value = _element(head, pos, False, little)
        if tag == _SEQ_DELIMITER:
            return value
        if tag != _ITEM:
            raise Undecided
        undefined = length == _UNDEFINED
        pos = _skip_item(head, value, explicit, little) if undefined else value + length


def _skip_item(head: bytes, pos: int, explicit: bool, little: bool) -> int:
    while True:
        tag, length, value = _element(head, pos, explicit, little)
        if tag == _ITEM_DELIMITER:
            return value
        pos = _end_of(head, pos, length, value, explicit, little)


# --------------------------------------------------------------------------- reading


def read_series_uid(path: Path, reader: Reader) -> str | None:
    """The SeriesInstanceUID, reading only up to element (0020,000E)."""
    with reader.open(path) as opened:
        meta, syntax, head = _peek_file_meta(opened)
        handle = _Prefixed(opened, head, path).as_binary()
        if syntax == DeflatedExplicitVRLittleEndian:
            ds, _ = _read_deflated(path, handle, meta, whole=False)
        else:
            ds = read_partial(
                handle,
                stop_when=lambda tag, vr, length: tag > SERIES_UID_TAG,
                defer_size=1024,
                force=True,
                specific_tags=[BaseTag(SERIES_UID_TAG)],
            )
    value = ds.get(SERIES_UID_TAG)
    text = str(value.value).strip() if value is not None and value.value else ""
    return text or None


@dataclass(slots=True)
class Header:
    """One file's header, with what was learned about its pixel data and size."""

    dataset: FileDataset
    file_size: int
    #: keyword of the pixel data element the read stopped at, None when the file has none.
    pixel_keyword: str | None = None
    #: keywords of elements too large to load (their values were skipped).
    skipped: dict[str, int] = field(default_factory=dict)
    #: the file's first bytes as the parse read them, for a later walk to reuse.
    head: bytes = b""
    #: why the file, whole as written, lacks data its header announces (``NO_PIXEL_DATA``).
    incomplete: str | None = None


#: why an image header that ends cleanly after its last element is packaged incomplete.
NO_PIXEL_DATA = "image header but no pixel data element (the file ends after a whole element)"
#: why a header without SOP class and pixel data is packaged incomplete.
NO_SOP_CLASS = "no SOPClassUID and no pixel data element (the file ends after a whole element)"
#: SOP classes with pixel data whose names do not say "Image Storage".
_PIXEL_SOP_CLASSES = frozenset(
    {"Parametric Map Storage", "Enhanced US Volume Storage", "Segmentation Storage"}
)

#: what :func:`walk_extent` proved: the pixel data lies inside the file, or the file has
#: none and ends exactly where its last element does.
Extent = Literal["pixels", "end"]


@dataclass(slots=True)
class _PixelStop:
    tag: int | None = None
    vr: str | None = None
    length: int = 0

    def __call__(self, tag: BaseTag, vr: str | None, length: int) -> bool:
        if int(tag) in PIXEL_TAGS:
            self.tag, self.vr, self.length = int(tag), vr, length
            return True
        return False


def read_header(path: Path, reader: Reader) -> Header:
    """Parse the header up to pixel data and check the file is not cut short.

    An image header without pixel data is refused as truncated unless the element walk
    proves the file ends where its last element does (then ``Header.incomplete`` says so):
    a writer that stopped after the header, or a header exported on its own.
    """
    with reader.open(path) as opened:
        size = opened.seek(0, os.SEEK_END)
        opened.seek(0)
        if size == 0:
            raise AdapterError(path, "empty file")
        meta, syntax, head = _peek_file_meta(opened)
        deflated = syntax == DeflatedExplicitVRLittleEndian
        # The header is parsed from the bytes the peek already read, then from the file;
        # what is read on is kept (not for deflated data, whose rest is only checked).
        cached = _Prefixed(opened, head, path, keep=0 if deflated else KEEP_HEAD)
        handle = cached.as_binary()
        if deflated:
            ds, stop = _read_deflated(path, handle, meta)
        else:
            stop = _PixelStop()
            try:
                ds = read_partial(handle, stop_when=stop, defer_size=DEFER_SIZE, force=True)
            except Exception:
                # pydicom says where its parse broke (an unclosed sequence has it read the
                # next bytes as an item), not why: the walk names the element cut short.
                walk_extent(path, reader, cached.prefix)
                raise
        if stop.tag is not None and not deflated:
            _check_pixel_extent(path, handle, handle.tell(), stop, ds, size)
    tags = list(ds.keys())
    if not any(int(tag) >> 16 == 0x0008 for tag in tags):
        if not deflated:
            # pydicom drops the elements it read when a value it must find the end of
            # (an unclosed undefined-length one) runs to the end of the file: say so.
            walk_extent(path, reader, cached.prefix)
        found = "no DICOM identifying elements (group 0008)" if tags else "no DICOM data elements"
        raise AdapterError(path, f"{found} found")
    if not deflated:
        _check_elements_fit(path, ds, size)
    incomplete = None if stop.tag is not None else _without_pixels(path, reader, ds, cached)
    pixel_keyword = PIXEL_TAGS.get(stop.tag) if stop.tag is not None else None
    header = Header(ds, size, pixel_keyword, head=cached.prefix, incomplete=incomplete)
    _drop_deferred(ds, header.skipped)
    return header


def _without_pixels(path: Path, reader: Reader, ds: Dataset, cached: _Prefixed) -> str | None:
    """Why a header without pixel data is incomplete; None for an object that has none.

    An image header lacks its pixels; a header without SOPClassUID, Type 1 in every
    object, lacks what follows too. Either is refused as truncated unless the element walk
    proves the file ends where its last element does: pydicom takes a file cut inside an
    element header for one that ends there.
    """
    if _is_image(ds):
        reason = NO_PIXEL_DATA
    elif "SOPClassUID" not in ds:
        reason = NO_SOP_CLASS
    else:
        return None
    if walk_extent(path, reader, cached.prefix) != "end":
        raise AdapterError(path, f"truncated: {reason.split(' (')[0]}")
    return reason


def check_complete(path: Path, reader: Reader) -> str | None:
    """Raise ``AdapterError`` naming ``path`` when it is cut short; read headers only.

    For the other instances of a series, whose metadata is not reported: first
    :func:`walk_extent`; what it cannot vouch for gets the full check of
    :func:`read_header`, which also names the problem. Returns ``Header.incomplete``.
    """
    if walk_extent(path, reader) == "pixels":
        return None
    return read_header(path, reader).incomplete


def walk_extent(path: Path, reader: Reader, head: bytes = b"") -> Extent | None:
    """What a walk of the element headers proves about the file's end; None when it cannot.

    ``"pixels"``: the pixel data lies inside the file; ``"end"``: there is none, and the
    last element ends exactly at the end of the file. Raises ``AdapterError`` when the
    walk proves the file cut short: an element or the pixel data (by its declared length,
    or its fragment item headers when encapsulated) runs past the end, or the file ends
    inside an element header or an undefined-length sequence, which the full header
    parse may take for a whole file. No values are parsed, so it costs a small part of a
    header parse. It cannot tell for deflated data sets, a sequence larger than
    ``WALK_BUDGET``, or anything that looks wrong.

    The walk reads a window of the file at a time: a value that ends past the window is
    skipped by moving the window after it, never read. ``head``, the file's first bytes
    when a header parse already read them, is not read again.
    """
    with reader.open(path) as opened:
        handle = _Prefixed(opened, head, path).as_binary()
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return None
        window = _Window(handle, size)
        try:
            pos, explicit, little = dataset_start(window.at(0))
        except Undecided:
            return None  # deflated, a file meta group past the head, or not DICOM at all
        last = -1
        while pos < size:
            tag = length = None
            try:
                tag, length, value = _element(window.data, pos - window.start, explicit, little)
                if tag <= last:
                    return None
                if tag in PIXEL_TAGS:
                    value += window.start
                    return _pixels_inside(path, handle, value, length, size, little)
                relative = pos - window.start
                end = window.start + _end_of(window.data, relative, length, value, explicit, little)
            except _Short:
                if window.start + len(window.data) >= size:
                    raise AdapterError(path, _ends_inside(pos, tag, length)) from None
                if not window.move(pos):
                    return None
                continue
            except Undecided:
                return None
            if end > size:
                raise AdapterError(path, f"truncated inside element {_tag_text(tag)}")
            pos, last = end, tag
        return "end"


def _ends_inside(pos: int, tag: int | None, length: int | None) -> str:
    if tag is None:
        return f"truncated: the file ends inside the element header at byte {pos}"
    if length == _UNDEFINED:
        return (
            f"truncated: the file ends inside element {_tag_text(tag)} at byte {pos}, "
            "an undefined-length sequence whose items or sequence delimiter never come"
        )
    return f"truncated: the file ends inside element {_tag_text(tag)} at byte {pos}"


def _pixels_inside(
    path: Path, handle: BinaryIO, value: int, length: int, size: int, little: bool
) -> Extent:
    if length != _UNDEFINED:
        if value + length > size:
            raise AdapterError(
                path, f"truncated: pixel data needs {value + length} bytes, file has {size}"
            )
        return "pixels"
    problem = _fragments_problem(handle, value, size, little)
    if problem is not None:
        raise AdapterError(path, problem)
    return "pixels"


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


@dataclass(slots=True)
class _Window:
    """The bytes of a file from ``start``: ``HEAD_BYTES`` of them, more for long sequences."""

    handle: BinaryIO
    size: int
    start: int = 0
    length: int = HEAD_BYTES
    data: bytes = b""

    def at(self, start: int) -> bytes:
        self.start = start
        self.handle.seek(start)
        self.data = self.handle.read(min(self.length, self.size - start))
        return self.data

    def move(self, pos: int) -> bool:
        """Read from ``pos`` (wider when the element there did not fit); False at the limit."""
        if pos == self.start:
            if self.length >= WALK_BUDGET:
                return False
            self.length *= 4
        self.at(pos)
        return True


def _peek_file_meta(handle: BinaryIO) -> tuple[bytes, str | None, bytes]:
    """The preamble and file meta group's bytes, the transfer syntax they name, the head read.

    The group may come without the preamble. Reads the head, more of it only while the
    group goes on, and leaves the handle at 0.
    """
    size, syntax, end = HEAD_BYTES, None, 0
    while True:
        handle.seek(0)
        head = handle.read(size)
        start = 132 if has_preamble(head) else 0
        if head[start : start + 2] != b"\x02\x00":
            break
        end, syntax = _file_meta(head, start)
        if end + 8 <= len(head) or len(head) < size or size >= _META_HEAD:
            break
        size *= 4
    handle.seek(0)
    return head[:end], syntax, head


class _Prefixed:
    """A read-only file whose first bytes are already in memory: reading them costs no I/O.

    Bytes read on from the end of the prefix are appended to it, up to ``keep`` bytes in
    all, so a later pass over the same header (the element walk after the parse) need not
    read them again. Everything but ``read``, ``seek`` and ``tell`` goes to the file.
    """

    def __init__(self, handle: BinaryIO, prefix: bytes, path: Path, *, keep: int = 0) -> None:
        self._handle = handle
        # pydicom names the file in its messages; the agent's handle is a descriptor's
        # (``name`` an int), which made pydicom fail with a TypeError instead.
        self.name = str(path)
        self._prefix = bytearray(prefix)
        self._keep = keep
        self._pos = 0

    @property
    def prefix(self) -> bytes:
        return bytes(self._prefix)

    def as_binary(self) -> BinaryIO:
        """This file where a ``BinaryIO`` is asked for: its users only read, seek and tell."""
        return cast(BinaryIO, self)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END:
            self._pos = self._handle.seek(offset, os.SEEK_END)
        else:
            self._pos = offset + (self._pos if whence == os.SEEK_CUR else 0)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        cached = len(self._prefix)
        data = b""
        if self._pos < cached:
            end = cached if size < 0 else min(cached, self._pos + size)
            data = bytes(self._prefix[self._pos : end])
            self._pos = end
            if size >= 0:
                size -= len(data)
                if size == 0:
                    return data
        if self._handle.tell() != self._pos:
            self._handle.seek(self._pos)
        more = self._handle.read(size)
        if self._pos == cached and cached + len(more) <= self._keep:
            self._prefix += more
        self._pos += len(more)
        return data + more

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _read_deflated(
    path: Path, handle: BinaryIO, meta: bytes, *, whole: bool = True
) -> tuple[FileDataset, _PixelStop]:
    """A Deflated Explicit VR Little Endian file, inflated only as far as its pixel data.

    pydicom inflates the whole data set, pixels included, in one call: a file of a few
    hundred KiB could ask for gigabytes. Here pydicom reads the file meta alone (followed
    by an empty deflate stream) and the data set is parsed from a bounded inflation.
    ``whole`` checks the rest of the stream is there too (see ``_Inflater.check_rest``).
    """
    shell = read_partial(BytesIO(meta + _EMPTY_DEFLATE), force=True)
    inflater = _Inflater(path, handle, len(meta))
    while True:
        ended = inflater.to_next_pixel_tag()
        stop = _PixelStop()
        dataset = read_dataset(
            BytesIO(inflater.data),
            is_implicit_VR=False,
            is_little_endian=True,
            stop_when=stop,
            defer_size=DEFER_SIZE,
        )
        if stop.tag is not None or ended:
            break  # else the tag's bytes were inside a value: inflate on to the next ones
    if whole:
        inflater.check_rest()
    ds = FileDataset(str(path), dataset, shell.preamble, shell.file_meta, False, True)
    charset = dataset.get("SpecificCharacterSet")
    ds.set_original_encoding(False, True, charset.value if charset is not None else None)
    return ds, stop


class _Inflater:
    """Inflates a raw deflate stream from ``start`` in steps, within a byte budget."""

    def __init__(self, path: Path, handle: BinaryIO, start: int) -> None:
        self._path, self._handle = path, handle
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._searched = 0
        self.data = bytearray()
        handle.seek(start)

    def to_next_pixel_tag(self) -> bool:
        """Inflate until a pixel data element header is whole; True when the stream ended."""
        while True:
            found = _find_pixel_tag(self.data, self._searched)
            if found is not None and len(self.data) >= found + 12:
                self._searched = found + 1
                return False
            if self._inflater.eof:
                return True
            self._step()

    def check_rest(self) -> None:
        """Inflate the rest, discarding it, to tell a cut-short stream from a whole one.

        Costs time, not memory; stops unverified after ``DEFLATED_CHECK_BUDGET`` bytes.
        """
        inflated = 0
        while not self._inflater.eof and inflated < DEFLATED_CHECK_BUDGET:
            inflated += len(self._inflate())

    def _step(self) -> None:
        self.data += self._inflate()
        if len(self.data) > DEFLATED_HEADER_BUDGET:
            raise AdapterError(
                self._path,
                f"deflated data set inflates past {DEFLATED_HEADER_BUDGET >> 20} MiB before "
                "its pixel data; refused (headers are never that large)",
            )

    def _inflate(self) -> bytes:
        pending = self._inflater.unconsumed_tail or self._handle.read(_INFLATE_CHUNK)
        if not pending:
            raise AdapterError(self._path, "truncated: the deflated data set ends early")
        try:
            return self._inflater.decompress(pending, _INFLATE_CHUNK)
        except zlib.error as exc:
            raise AdapterError(self._path, f"corrupt deflated data set: {exc}") from exc


def _find_pixel_tag(data: bytearray, start: int) -> int | None:
    found = [i for tag in _PIXEL_TAG_BYTES if (i := data.find(tag, start)) >= 0]
    return min(found) if found else None


def _is_image(ds: Dataset) -> bool:
    sop = ds.get("SOPClassUID")
    name = UID(str(sop)).name if sop else ""
    named_image = "Image Storage" in name or name.endswith(tuple(_PIXEL_SOP_CLASSES))
    return named_image or ("Rows" in ds and "Columns" in ds)


def _check_pixel_extent(
    path: Path, handle: BinaryIO, start: int, stop: _PixelStop, ds: Dataset, size: int
) -> None:
    implicit, _ = ds.original_encoding
    header_length = (
        8 if implicit or stop.vr not in {"OB", "OW", "OF", "OD", "OL", "OV", "UN"} else 12
    )
    if stop.length != 0xFFFFFFFF:
        end = start + header_length + stop.length
        if end > size:
            raise AdapterError(path, f"truncated: pixel data needs {end} bytes, file has {size}")
        return
    problem = _fragments_problem(handle, start + header_length, size, ds.original_encoding[1])
    if problem is not None:
        raise AdapterError(path, problem)


def _fragments_problem(handle: BinaryIO, pos: int, size: int, little: bool | None) -> str | None:
    """Why encapsulated pixel data from ``pos`` is not whole, or None when it is.

    Walks the fragment item headers (8 bytes each) to the sequence delimiter; past
    ``MAX_FRAGMENTS`` the file is accepted unwalked.
    """
    unpack = struct.Struct("<HHI" if little is not False else ">HHI").unpack
    for _ in range(MAX_FRAGMENTS):
        if pos + 8 > size:
            return "truncated: encapsulated pixel data ends before its delimiter"
        handle.seek(pos)
        group, element, length = unpack(handle.read(8))
        tag = group << 16 | element
        if tag == _SEQ_DELIMITER:
            return None
        if tag != _ITEM or length == _UNDEFINED:
            return f"malformed encapsulated pixel data at byte {pos}"
        pos += 8 + length
    return None


def _check_elements_fit(path: Path, ds: Dataset, size: int) -> None:
    tags = list(ds.keys())
    for tag in tags:
        raw: object = ds.get_item(tag, keep_deferred=True)
        if (
            isinstance(raw, RawDataElement)
            and raw.length != 0xFFFFFFFF
            and raw.value_tell + raw.length > size
        ):
            raise AdapterError(path, f"truncated inside element {tag}")


def _drop_deferred(ds: Dataset, skipped: dict[str, int]) -> None:
    """Remove values that were too large to load, so nothing re-opens the file later."""
    for tag in list(ds.keys()):
        raw: object = ds.get_item(tag, keep_deferred=True)
        if isinstance(raw, RawDataElement) and raw.value is None and raw.length:
            del ds[tag]
            keyword = keyword_for_tag(tag)
            if keyword and (raw.VR or _dictionary_vr(tag)) not in BINARY_VRS:
                skipped[keyword] = raw.length


def _dictionary_vr(tag: BaseTag) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


# --------------------------------------------------------------------------- warnings

#: a value as pydicom quotes it in a message: ``'...'``, ``"..."`` or ``b'...'``.
_QUOTED = re.compile(r"b?'(?:[^'\\]|\\.)*'" + r'|b?"(?:[^"\\]|\\.)*"')


def without_values(message: str) -> str:
    """A pydicom message with the values it quotes replaced: packages must not carry them."""
    text = message.split(" Please see ", 1)[0]
    return _QUOTED.sub("<value>", text).strip()


def convert_all(ds: Dataset, depth: int = 0) -> list[str]:
    """Convert every element now, so each pydicom complaint is tied to the element it is about.

    Returns one note per complaint, naming the tag and keyword and the kind of problem
    (never the value). Later reads of the same elements raise no warning again.
    """
    notes: list[str] = []
    for tag in list(ds.keys()):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            elem = ds[tag]
        name = f"({tag.group:04X},{tag.element:04X}) {elem.keyword or 'private'}"
        notes.extend(f"{name}: {without_values(str(w.message))}" for w in caught)
        if elem.VR == "SQ" and depth < MAX_DEPTH:
            for item in elem.value or ():
                notes.extend(convert_all(item, depth + 1))
    return notes


# --------------------------------------------------------------------------- values


def value(ds: Dataset, keyword: str) -> Any:
    """The element's value, or None when absent or empty."""
    elem = ds.get(keyword)
    if elem is None:
        return None
    result = elem.value if isinstance(elem, DataElement) else elem
    if result is None or result == "" or (isinstance(result, MultiValue) and len(result) == 0):
        return None
    return result


def first_item(ds: Dataset, *keywords: str) -> Dataset | None:
    """Follow ``keywords`` through the first item of each sequence."""
    current: Dataset | None = ds
    for keyword in keywords:
        if current is None:
            return None
        seq = value(current, keyword)
        current = seq[0] if seq else None
    return current


def scalar(item: Any) -> Any:
    """A JSON value for one DICOM value (not a sequence)."""
    if isinstance(item, PersonName):
        return str(item)
    if isinstance(item, BaseTag):
        return f"({item.group:04X},{item.element:04X})"
    if isinstance(item, bool) or item is None:
        return item
    if isinstance(item, int):
        return int(item)
    if isinstance(item, float):
        return float(item)
    if isinstance(item, UID):
        return str(item)
    if isinstance(item, (bytes, bytearray)):
        return None
    if isinstance(item, str):
        return str(item)
    try:  # DSdecimal and other numeric wrappers
        return float(item)
    except (TypeError, ValueError):
        return str(item)


def dataset_json(ds: Dataset, depth: int = 0) -> dict[str, Any]:
    """Keyword -> JSON value for every public, non-binary element of ``ds``."""
    out: dict[str, Any] = {}
    for elem in _elements(ds):
        key = elem.keyword
        if key in out:
            key = f"{key}_{elem.tag.group:04X}"
        converted = element_json(elem, depth)
        if converted is not _SKIP:
            out[key] = converted
    return out


_SKIP = object()


def _elements(ds: Dataset) -> Iterator[DataElement]:
    tags = list(ds.keys())
    for tag in tags:
        if tag.is_private or int(tag) in PIXEL_TAGS:
            continue
        elem = ds[tag]
        if not elem.keyword or elem.VR in BINARY_VRS:
            continue
        yield elem


def element_json(elem: DataElement, depth: int) -> Any:
    if elem.VR == "SQ":
        items = list(elem.value or ())
        if depth + 1 > MAX_DEPTH:
            return f"<sequence of {len(items)} items not expanded>"
        return [dataset_json(item, depth + 1) for item in items]
    raw = elem.value
    if isinstance(raw, (bytes, bytearray)):
        return _SKIP
    if isinstance(raw, (MultiValue, list)):
        return [scalar(v) for v in raw]
    return scalar(raw)


# --------------------------------------------------------------------------- dates

_DA = re.compile(r"^(\d{4})\.?(\d{2})\.?(\d{2})$")
_TM = re.compile(r"^(\d{2}):?(\d{2})?:?(\d{2})?(\.\d{1,6})?\d*$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?\d*([+-]\d{4})?$")
_TZ = re.compile(r"^[+-]\d{4}$")


def rfc3339(date: Any, time: Any, offset: Any) -> str | None:
    """``YYYY-MM-DDTHH:MM:SS[.f][+HH:MM]`` from DA/TM text (old dotted forms too)."""
    match = _DA.match(str(date or "").strip())
    if not match:
        return None
    y, mo, d = match.groups()
    if not (1 <= int(mo) <= 12 and 1 <= int(d) <= 31):
        return None
    day = f"{y}-{mo}-{d}"
    tmatch = _TM.match(str(time or "").strip())
    if not tmatch:
        return day
    hh, mm, ss, frac = tmatch.groups()
    if int(hh) > 23 or int(mm or 0) > 59 or int(ss or 0) > 60:
        return day
    return f"{day}T{hh}:{mm or '00'}:{ss or '00'}{frac or ''}{_offset(offset)}"


def rfc3339_dt(text: Any, offset: Any) -> str | None:
    """The same from a DT value, whose own offset wins over TimezoneOffsetFromUTC."""
    match = _DT.match(str(text or "").strip())
    if not match:
        return None
    y, mo, d, hh, mm, ss, frac, own = match.groups()
    if mo is None or d is None:
        return None
    time = f"{hh}{mm or ''}{ss or ''}{frac or ''}" if hh else None
    return rfc3339(f"{y}{mo}{d}", time, own or offset)


def _offset(offset: Any) -> str:
    text = str(offset or "").strip()
    if not _TZ.match(text):
        return ""
    return f"{text[:3]}:{text[3:]}"
