"""DICOM head bytes walked without pydicom: sniffing a file, the encoding of its dataset,
element headers and lengths, and the fast SeriesInstanceUID key for grouping.

Pure functions on bytes already read; ``reader`` walks the rest of a file with the same steps.
"""

from __future__ import annotations

import re
import struct

from pydicom.uid import DeflatedExplicitVRLittleEndian

SERIES_UID_TAG = 0x0020000E
PIXEL_TAGS = {
    0x7FE00010: "PixelData",
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
}

_EXPLICIT_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC"} | {b"UN", b"UR", b"UT", b"UV"}
)
ITEM = 0xFFFEE000
SEQ_DELIMITER = 0xFFFEE0DD


# --------------------------------------------------------------------------- sniffing


def has_preamble(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def looks_headless(head: bytes) -> bool:
    """True when the head parses as at least two group 0002/0008 elements from offset 0.

    Old ACR-NEMA style files and datasets written without a preamble have no ``DICM``;
    they start directly with the file meta group or the dataset, in implicit or explicit VR
    little endian, or in (retired) explicit VR big endian.
    """
    if head[:2] == b"\x02\x00" and _UID.fullmatch(file_meta(head, 0)[1] or ""):
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


class Short(Undecided):
    """The bytes walked end inside an element header."""


_IMPLICIT_LE = "1.2.840.10008.1.2"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_ITEM_DELIMITER = 0xFFFEE00D
UNDEFINED = 0xFFFFFFFF


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
            tag, length, value = element_at(head, pos, explicit)
            if tag <= last:
                raise Undecided  # out of order: a misread, not a DICOM dataset we understand
            if tag in tags and length != UNDEFINED:
                if value + length > len(head):
                    break
                found[tag] = head[value : value + length]
            pos = end_of(head, pos, length, value, explicit)
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
        pos, syntax = file_meta(head, pos)
        if syntax is None or syntax == DeflatedExplicitVRLittleEndian:
            raise Undecided
        return pos, syntax != _IMPLICIT_LE, syntax != _BIG_ENDIAN
    for explicit, little in _LAYOUTS:
        if _walk(head[pos:], explicit, little) >= 2:
            return pos, explicit, little
    raise Undecided


def file_meta(head: bytes, pos: int) -> tuple[int, str | None]:
    syntax = None
    while pos + 12 <= len(head) and struct.unpack_from("<H", head, pos)[0] == 0x0002:
        tag, length, value = element_at(head, pos, explicit=True)
        if tag == 0x00020010:
            syntax = head[value : value + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = value + length
    return pos, syntax


def element_at(head: bytes, pos: int, explicit: bool, little: bool = True) -> tuple[int, int, int]:
    """(tag, value length, value offset) of the element at ``pos``."""
    if pos + 8 > len(head):
        raise Short
    order = "<" if little else ">"
    group, element = struct.unpack_from(order + "HH", head, pos)
    tag = group << 16 | element
    if explicit and group != 0xFFFE:
        vr = head[pos + 4 : pos + 6]
        if vr in _EXPLICIT_LONG_VRS:
            if pos + 12 > len(head):
                raise Short
            return tag, struct.unpack_from(order + "I", head, pos + 8)[0], pos + 12
        return tag, struct.unpack_from(order + "H", head, pos + 6)[0], pos + 8
    return tag, struct.unpack_from(order + "I", head, pos + 4)[0], pos + 8


def end_of(
    head: bytes, pos: int, length: int, value: int, explicit: bool, little: bool = True
) -> int:
    """Offset after the element at ``pos`` (its value at ``value``, of ``length``)."""
    if length != UNDEFINED:
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
        tag, length, value = element_at(head, pos, False, little)
        if tag == SEQ_DELIMITER:
            return value
        if tag != ITEM:
            raise Undecided
        undefined = length == UNDEFINED
        pos = _skip_item(head, value, explicit, little) if undefined else value + length


def _skip_item(head: bytes, pos: int, explicit: bool, little: bool) -> int:
    while True:
        tag, length, value = element_at(head, pos, explicit, little)
        if tag == _ITEM_DELIMITER:
            return value
        pos = end_of(head, pos, length, value, explicit, little)
