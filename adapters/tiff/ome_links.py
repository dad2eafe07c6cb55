"""Which files an OME-XML block ties together: a BinaryOnly block's metadata file, or the
files its TiffData elements name (multi-file OME-TIFF sets), as names relative to its folder.

Read from a parsed block, or, for a block too large to parse while a file is being claimed,
from its first bytes with patterns that find the same attributes.
"""

from __future__ import annotations

import posixpath
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from acqharvest.adapters.safexml import child, local


@dataclass(frozen=True, slots=True)
class OmeLinks:
    """The files an OME-XML block ties together, as names relative to its folder."""

    #: BinaryOnly MetadataFile: where this file's metadata lives (None: it is here).
    metadata_file: str | None
    #: every file the TiffData elements name, this one included.
    files: tuple[str, ...]


def links(root: ET.Element, own_name: str) -> OmeLinks:
    """The metadata file a BinaryOnly block names, or the files TiffData references.

    A UUID equal to this document's own UUID names this file whatever its FileName says,
    so a renamed single-file OME-TIFF does not wait for its old name.
    """
    binary_only = child(root, "BinaryOnly")
    if binary_only is not None:
        return OmeLinks(_relative(binary_only.get("MetadataFile")), ())
    own_uuid = root.get("UUID")
    files: dict[str, None] = {}
    for element in root.iter():
        if local(element.tag) != "TiffData":
            continue
        uuid = child(element, "UUID")
        if uuid is None or (own_uuid and (uuid.text or "").strip() == own_uuid):
            files[own_name] = None
            continue
        name = _relative(uuid.get("FileName"))
        if name:
            files[name] = None
    return OmeLinks(None, tuple(files))


_UUID_REF = re.compile(r"<(?:\w+:)?UUID\b([^>]*)>([^<]*)<")
_FILE_NAME = re.compile(r"""FileName\s*=\s*["']([^"']+)["']""")
_METADATA_FILE = re.compile(r"""MetadataFile\s*=\s*["']([^"']+)["']""")
_OWN_UUID = re.compile(r"""<(?:\w+:)?OME\b[^>]*?\sUUID\s*=\s*["']([^"']+)["']""")


def links_from_prefix(prefix: str, own_name: str) -> OmeLinks:
    """Best-effort links from the start of an OME-XML block too large to parse in a claim."""
    if "<BinaryOnly" in prefix and (found := _METADATA_FILE.search(prefix)):
        return OmeLinks(_relative(found.group(1)), ())
    own = _OWN_UUID.search(prefix)
    files: dict[str, None] = {own_name: None}
    for match in _UUID_REF.finditer(prefix):
        named = _FILE_NAME.search(match.group(1))
        if own is not None and match.group(2).strip() == own.group(1):
            continue
        if named and (name := _relative(named.group(1))):
            files[name] = None
    return OmeLinks(None, tuple(files))


def _relative(name: str | None) -> str | None:
    """A referenced name as a normalized relative POSIX path (``..`` kept); None if absolute."""
    if not name:
        return None
    cleaned = posixpath.normpath(name.replace("\\", "/"))
    if cleaned.startswith("/") or cleaned == "." or ":" in cleaned:
        return None
    return cleaned
