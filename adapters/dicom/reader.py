"""Low-level DICOM header reads for the DICOM adapter: bounded parses, the walk to the end.

Everything here reads through the agent's ``Reader`` handle and stops before pixel data;
the only bytes read past the header are the 8-byte item headers of encapsulated pixel
data, to tell a complete file from a truncated one. A deflated data set is inflated in
steps only as far as its pixel data, within ``deflate.DEFLATED_HEADER_BUDGET`` (a
decompression bomb is refused, not inflated); the rest of the stream is inflated and
discarded, up to ``DEFLATED_CHECK_BUDGET``, only to tell a cut-short file from a whole one.
Head bytes are walked by ``head``; values become JSON in ``values``.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.filereader import read_dataset, read_partial
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from acqharvest.adapter_api import HEAD_BYTES, AdapterError, Reader
from acqharvest.adapters.dicom.deflate import Inflater
from acqharvest.adapters.dicom.head import (
    ITEM,
    PIXEL_TAGS,
    SEQ_DELIMITER,
    SERIES_UID_TAG,
    UNDEFINED,
    Short,
    Undecided,
    dataset_start,
    element_at,
    end_of,
    file_meta,
    has_preamble,
)

#: values longer than this are skipped, not loaded (large private blobs, overlays, icons).
DEFER_SIZE = 64 * 1024
#: VRs that hold binary data; never copied into metadata.
BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN", "OB or OW", "US or OW"})
#: encapsulated pixel data with more fragments than this is not walked to the end.
MAX_FRAGMENTS = 100_000
#: widest window ``check_complete`` reads for one element before it parses the header instead.
WALK_BUDGET = 1024 * 1024
#: header bytes ``read_header`` keeps for the walk of the same file that follows.
KEEP_HEAD = WALK_BUDGET
#: how far into a file its file meta group is looked for, at most.
_META_HEAD = 64 * 1024
#: a raw deflate stream holding nothing: one empty final block.
_EMPTY_DEFLATE = b"\x03\x00"


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
                tag, length, value = element_at(window.data, pos - window.start, explicit, little)
                if tag <= last:
                    return None
                if tag in PIXEL_TAGS:
                    value += window.start
                    return _pixels_inside(path, handle, value, length, size, little)
                relative = pos - window.start
                end = window.start + end_of(window.data, relative, length, value, explicit, little)
            except Short:
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
    if length == UNDEFINED:
        return (
            f"truncated: the file ends inside element {_tag_text(tag)} at byte {pos}, "
            "an undefined-length sequence whose items or sequence delimiter never come"
        )
    return f"truncated: the file ends inside element {_tag_text(tag)} at byte {pos}"


def _pixels_inside(
    path: Path, handle: BinaryIO, value: int, length: int, size: int, little: bool
) -> Extent:
    if length != UNDEFINED:
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
        end, syntax = file_meta(head, start)
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
    ``whole`` checks the rest of the stream is there too (see ``Inflater.check_rest``).
    """
    shell = read_partial(BytesIO(meta + _EMPTY_DEFLATE), force=True)
    inflater = Inflater(path, handle, len(meta))
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
    # Dataset.get by keyword gives the value (a str, or a list for several charsets)
    ds.set_original_encoding(False, True, dataset.get("SpecificCharacterSet"))
    return ds, stop


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
        if tag == SEQ_DELIMITER:
            return None
        if tag != ITEM or length == UNDEFINED:
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
