"""Multi-file OME-TIFF sets: the metadata file's OME-XML reported for the whole set.

Two layouts exist. In the master layout one TIFF holds the full OME-XML and the others a
``BinaryOnly`` block naming it; in the companion layout a ``.companion.ome`` XML file holds
the OME-XML and every TIFF a ``BinaryOnly`` block naming that file. Either way the claim
has already grouped the files; here each member's first IFD is checked (its description
only, never its pixels) and the set is listed with what is missing or inconsistent.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from acqharvest.adapter_api import HEAD_BYTES, AdapterError, AdapterOutput, Draft, Reader
from acqharvest.adapters.safexml import MAX_BYTES, XmlBroken, XmlRefused, local
from acqharvest.adapters.tiff import ome, ome_links, sniff


def read_companion(draft: Draft, reader: Reader) -> AdapterOutput:
    """The OME-XML of a ``.companion.ome`` file, reported for the TIFFs it describes."""
    path = draft.primary
    with reader.open(path) as handle:
        data = handle.read(MAX_BYTES + 1)
    if not data:
        raise AdapterError(path, "empty file")
    try:
        root = ome.parse_xml(data)
    except (XmlRefused, XmlBroken) as exc:
        raise AdapterError(path, f"OME-XML companion refused: {exc}") from exc
    if local(root.tag) != "OME":
        raise AdapterError(path, f"not OME-XML: the root element is {local(root.tag)}")
    metadata, summary, notes = ome.normalized(root)
    listing, set_notes = report(draft, reader, root, metadata)
    software = _writer_software(draft, reader)
    if software and "software" not in metadata.get("instrument_reported", {}):
        metadata.setdefault("instrument_reported", {})["software"] = software
    original: dict[str, Any] = {}
    ome.keep_xml(
        data.decode("utf-8", errors="replace"), draft.original_metadata_max_bytes, original, notes
    )
    return AdapterOutput(
        format="OME-TIFF",
        metadata=metadata,
        original_metadata={**original, **summary, "ome_files": listing},
        started=metadata.get("acquired"),
        warnings=(*notes, *set_notes),
    )


def report(
    draft: Draft, reader: Reader, root: ET.Element, metadata: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Add the set's size to ``metadata``; return its file listing and notes.

    ``root`` is the OME-XML of ``draft.primary`` (the metadata file).
    """
    folder = draft.primary.parent
    links = ome_links.links(root, draft.primary.name)
    present = {_relative(member, folder) for member in draft.members}
    notes = [
        f"{name}: referenced by {draft.primary.name} but not in the acquisition"
        for name in links.files
        if name not in present
    ]
    for member in draft.members:
        if member != draft.primary:
            notes.extend(_check_member(member, draft.primary, reader))
    image = dict(metadata.get("image", {}))
    planes = ome.plane_count(root)
    if planes and len(draft.members) > 1:
        image["frames"] = planes
    metadata["image"] = image
    metadata["instances"] = len(draft.members)
    listing = {
        "metadata_file": draft.primary.name,
        "referenced": list(links.files),
        "missing": sorted(set(links.files) - present),
        "unreferenced": sorted(present - set(links.files) - {draft.primary.name}),
    }
    return listing, notes


def _check_member(member: Path, metadata_file: Path, reader: Reader) -> list[str]:
    """A member must be a TIFF whose OME-XML is BinaryOnly and names the metadata file."""
    head = reader.read(member, 0, HEAD_BYTES)
    text = sniff.first_description(member, head, reader)
    if text is None or not text.complete:
        return [f"{member.name}: no readable OME-XML in its first IFD"]
    try:
        links = ome_links.links(ome.parse_xml(text.data), member.name)
    except (XmlRefused, XmlBroken) as exc:
        return [f"{member.name}: {exc}"]
    expected = _relative(metadata_file, member.parent)
    if links.metadata_file is None:
        return []  # a member with a full OME-XML of its own (some writers repeat it)
    if links.metadata_file != expected:
        return [f"{member.name}: BinaryOnly names {links.metadata_file}, not {expected}"]
    return []


def _writer_software(draft: Draft, reader: Reader) -> str | None:
    """The Software tag of the set's first TIFF: OME-XML has no element for the writer."""
    import tifffile  # loaded on use, as in the TIFF reader

    for member in draft.members:
        if member == draft.primary:
            continue
        try:
            with reader.open(member) as handle, tifffile.TiffFile(handle, name=member.name) as tif:
                value = tif.pages.first.tags.valueof(305)  # Software
        except Exception:  # noqa: BLE001 - a broken member is reported by _check_member
            return None
        return value.strip("\x00 ").strip() or None if isinstance(value, str) else None
    return None


def _relative(path: Path, folder: Path) -> str:
    return Path(os.path.relpath(path, folder)).as_posix()
