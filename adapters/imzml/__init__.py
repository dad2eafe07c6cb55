"""imzML adapter: an imzML and its ``.ibd`` are one acquisition, linked by their UUID.

Formats and variants: imzML 1.1 (mzML 1.1 XML with the imaging CV), continuous and
processed storage, with its binary ``.ibd`` file. The imzML names a UUID
(``IMS:1000080``) that the ``.ibd``'s first 16 bytes repeat: both files are claimed under
a key made of their folder and that UUID, so a pair is one group, and an ``.ibd`` whose
UUID differs is never taken for another's. The imzML is the primary and expects the
``.ibd`` of its own name (the standard's naming rule); an ``.ibd`` alone waits for its
imzML. Read with the standard library's expat (no extra to install): DTDs and entities
are refused (``safexml``).

Fields filled: pixel counts and pixel size (scan settings), spectrum count (the
``spectrumList`` count), storage mode (continuous or processed), instrument model and
serial number, ion source, mass analyzer and detector (the first instrument
configuration's components), software and version, acquisition start (``run``
startTimeStamp).

Deliberately not read: the spectra. The imzML is parsed up to ``<spectrumList>`` only;
its last 64 KiB are read to check it ends (``</mzML>``) and for the extents its last
spectra declare in the ``.ibd`` (external offset + encoded length), which the ``.ibd``
must reach: a cut-short file of either kind fails the extraction naming it. Of the
``.ibd``, its first 16 bytes (the UUID) only: the checksum the imzML names (SHA-1, MD5
or SHA-256) is compared with the digest the agent computed of the whole ``.ibd`` as it
hashed it (``info.digests`` asks for SHA-1 and MD5 of every ``.ibd``; sha256 it computes
of every file), so it is verified for an ``.ibd`` of any size without the adapter reading
it; a match is ``msi.ibd_checksum_verified``.
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from acqharvest.adapter_api import (
    AdapterError,
    AdapterInfo,
    AdapterOutput,
    Claim,
    Draft,
    FileProbe,
    FormatSpec,
    Reader,
    is_rfc3339,
    normalized_fields,
)
from acqharvest.adapters.safexml import XmlBroken, XmlRefused, local, parse_until

__all__ = ["ImzmlAdapter"]

#: how far into an imzML the claim looks for its UUID (it sits in ``fileContent``).
CLAIM_BUDGET = 64 * 1024
#: the imzML's last bytes read for its end tag and the extents of its last spectra.
TAIL_BYTES = 64 * 1024
UUID_BYTES = 16
#: structure (a UUID shared by both files) beats an extension alone.
CONFIDENCE = 0.9

_UUID = re.compile(rb'accession="IMS:1000080"[^>]*?value="([^"]*)"')
_CV_PARAM = re.compile(r"<cvParam\b[^>]*>")
_ATTRIBUTE = re.compile(r'(\w+)="([^"]*)"')
_ARRAY = re.compile(r"<binaryDataArray\b.*?</binaryDataArray>", re.S)
#: checksum cvParam accession -> hashlib name
_CHECKSUMS = {"IMS:1000090": "md5", "IMS:1000091": "sha1", "IMS:1000092": "sha256"}
_STORAGE = {"IMS:1000030": "continuous", "IMS:1000031": "processed"}
#: UO length units as micrometres per unit
_UO_UM = {"UO:0000017": 1.0, "UO:0000018": 1e-3, "UO:0000016": 1e3, "UO:0000008": 1e6}

_FIELDS = normalized_fields(
    {
        "image.size_x": "scanSettings IMS:1000042 max count of pixels x",
        "image.size_y": "scanSettings IMS:1000043 max count of pixels y",
        "pixel_size_um.x": "scanSettings IMS:1000046 pixel size (x), in its UO unit "
        "(micrometer when none is given)",
        "pixel_size_um.y": "scanSettings IMS:1000047 pixel size y, in its unit; else as x",
        "msi.spectra": "spectrumList count",
        "msi.storage": "fileContent IMS:1000030 continuous or IMS:1000031 processed",
        "msi.ion_source": "the first cvParam of the instrument configuration's source",
        "msi.analyzer": "the first cvParam of its analyzer",
        "detector.type": "the first cvParam of its detector",
        "instrument_reported.model": "the instrument configuration's first cvParam without "
        "a value (the instrument model term, e.g. LTQ FT Ultra)",
        "instrument_reported.serial_number": "MS:1000529 instrument serial number",
        "instrument_reported.software": "the software the instrument configuration refers "
        "to: its first cvParam name, else its id",
        "instrument_reported.software_version": "that software's version",
        "acquired": "run startTimeStamp",
        "msi.ibd_checksum_verified": "fileContent IMS:1000091 ibd SHA-1, IMS:1000090 ibd MD5 "
        "(or IMS:1000092 ibd SHA-256) equal to the agent's digest of the .ibd",
        "instances": "files in the acquisition (2 for a whole pair)",
    }
)


def _uuid_text(value: str | bytes) -> str | None:
    """A UUID as 32 lowercase hex digits; braces and dashes, as writers vary, dropped."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    digits = re.sub(r"[{}\-\s]", "", text).lower()
    return digits if re.fullmatch(r"[0-9a-f]{32}", digits) else None


def _key(folder: Path, uuid: str) -> str:
    return f"imzml:{os.path.normpath(folder)}:{uuid}"


class ImzmlAdapter:
    """imzML + ibd pairs (mass spectrometry imaging), header part of the imzML only."""

    info = AdapterInfo(
        name="imzml",
        title="imzML (mass spectrometry imaging)",
        version="1.0.0",
        stability="beta",
        formats=(
            FormatSpec(
                name="imzML",
                extensions=(".imzml", ".ibd"),
                magic="mzML XML naming IMS:1000080 (UUID); the .ibd starts with that UUID",
                variants=("continuous", "processed"),
            ),
        ),
        fields=_FIELDS,
        # the imzML is XML (its .ibd is binary: application/octet-stream)
        media_types={".imzml": "application/xml"},
        samples=("imzml/Example_Continuous.imzML", "imzml/Example_Continuous.ibd"),
        # which of the two the imzML names is only known at extraction: both are asked for
        digests={".ibd": ("md5", "sha1")},
    )

    def claim(self, probe: FileProbe, reader: Reader) -> Claim | None:
        if probe.suffix == ".ibd":
            uuid = probe.head[:UUID_BYTES].hex() if len(probe.head) >= UUID_BYTES else None
            if uuid is None:
                return None
            return Claim(_key(probe.path.parent, uuid), role="member", confidence=CONFIDENCE)
        start = probe.head.lstrip(b"\xef\xbb\xbf \t\r\n")
        if probe.suffix != ".imzml" or not start.startswith(b"<") or b"mzML" not in start[:1024]:
            return None
        found = _UUID.search(probe.head)
        if found is None and probe.size > len(probe.head):
            found = _UUID.search(reader.read(probe.path, 0, CLAIM_BUDGET))
        uuid = _uuid_text(found.group(1)) if found else None
        if uuid is None:  # not a valid imzML: extraction says so
            return Claim(f"imzml:file:{probe.path}", confidence=CONFIDENCE)
        return Claim(
            _key(probe.path.parent, uuid),
            role="primary",
            confidence=CONFIDENCE,
            expects=(_ibd_name(probe.path),),
        )

    def extract(self, draft: Draft, reader: Reader) -> AdapterOutput:
        ibds = [m for m in draft.members if m.suffix.lower() == ".ibd"]
        imzmls = [m for m in draft.members if m.suffix.lower() == ".imzml"]
        if not imzmls:
            return _ibd_alone(ibds or [draft.primary], reader)
        path = imzmls[0]
        header = _header(path, reader)
        notes: list[str] = []
        uuid = header.uuid
        metadata, original = header.fields(notes)
        needed = _tail_extent(path, reader)
        original["ibd_extent"] = needed
        if not ibds:
            notes.append(f"{_ibd_name(path)}: the .ibd with UUID {uuid} is not in the acquisition")
        for ibd in ibds:
            _check_ibd(ibd, path, uuid, needed, reader)
            digests = draft.digests.get(ibd, {})
            original["ibd_checksum"], verified = _checksum(ibd, path, header.checksum, digests)
            if verified is not None:
                metadata.setdefault("msi", {})["ibd_checksum_verified"] = verified
        metadata["instances"] = len(draft.members)
        return AdapterOutput(
            format="imzML",
            metadata=metadata,
            original_metadata=original,
            started=metadata.get("acquired"),
            warnings=tuple(notes),
        )


def _ibd_name(imzml: Path) -> str:
    """The ``.ibd`` beside the imzML, by the standard's rule (same name), in its own case."""
    for suffix in (".ibd", ".IBD", ".Ibd"):
        if imzml.with_suffix(suffix).exists():
            return imzml.with_suffix(suffix).name
    return imzml.with_suffix(".ibd").name


class _Header:
    """The imzML up to its spectra."""

    def __init__(self, path: Path, root: ET.Element) -> None:
        self.path = path
        self.root = root
        content = self.params(self.first("fileDescription", "fileContent"))
        uuid = _uuid_text(content.get("IMS:1000080", {}).get("value", ""))
        if uuid is None:
            raise AdapterError(path, "no valid UUID (IMS:1000080) in fileContent")
        self.uuid = uuid
        self.content = content
        #: (hashlib name, expected hex digest) when the imzML names one
        self.checksum: tuple[str, str] | None = next(
            (
                (name, content[acc].get("value", "").lower())
                for acc, name in _CHECKSUMS.items()
                if acc in content
            ),
            None,
        )

    def first(self, *names: str) -> ET.Element | None:
        node: ET.Element | None = self.root
        for name in names:
            node = (
                next((c for c in node if local(c.tag) == name), None) if node is not None else None
            )
        return node

    @staticmethod
    def params(element: ET.Element | None) -> dict[str, dict[str, str]]:
        """Accession -> attributes of the element's own cvParams (the first of each)."""
        found: dict[str, dict[str, str]] = {}
        for child in element if element is not None else ():
            if local(child.tag) == "cvParam":
                found.setdefault(child.get("accession", ""), dict(child.attrib))
        return found

    def fields(self, notes: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
        settings = self.params(self.first("scanSettingsList", "scanSettings"))
        image = {
            axis: count
            for axis, acc in (("size_x", "IMS:1000042"), ("size_y", "IMS:1000043"))
            if (count := _count(settings.get(acc), notes)) is not None
        }
        pixel_x = _length_um(settings.get("IMS:1000046"), notes)
        pixel_y = _length_um(settings.get("IMS:1000047"), notes) or pixel_x
        metadata: dict[str, Any] = {}
        if image:
            metadata["image"] = image
        pixel = {k: v for k, v in (("x", pixel_x), ("y", pixel_y)) if v is not None}
        if pixel:
            metadata["pixel_size_um"] = pixel
        msi: dict[str, Any] = {}
        storage = [_STORAGE[a] for a in _STORAGE if a in self.content]
        if storage:
            msi["storage"] = storage[0]
        spectra = self.first("run", "spectrumList")
        count = _count(dict(spectra.attrib) if spectra is not None else None, notes, "count")
        if count is not None:
            msi["spectra"] = count
        config = self.first("instrumentConfigurationList", "instrumentConfiguration")
        instrument: dict[str, Any] = {}
        for child in config if config is not None else ():
            if local(child.tag) != "componentList":
                continue
            for part in child:
                first = next((c for c in part if local(c.tag) == "cvParam"), None)
                name = first.get("name", "").strip() if first is not None else ""
                kind = local(part.tag)
                if name and kind == "source":
                    msi.setdefault("ion_source", name)
                elif name and kind == "analyzer":
                    msi.setdefault("analyzer", name)
                elif name and kind == "detector":
                    metadata.setdefault("detector", {"type": name})
        for acc, attrs in self.params(config).items():
            value = attrs.get("value", "").strip()
            if acc == "MS:1000529" and value.lower() not in ("", "none", "unknown", "n/a"):
                instrument["serial_number"] = value
            elif not value and attrs.get("name", "").strip() and "model" not in instrument:
                instrument["model"] = attrs["name"].strip()
        software = self._software(config)
        instrument.update(software)
        if instrument:
            metadata["instrument_reported"] = instrument
        if msi:
            metadata["msi"] = msi
        run = self.first("run")
        started = run.get("startTimeStamp", "").strip() if run is not None else ""
        if started and is_rfc3339(started):
            metadata["acquired"] = started
        elif started:
            notes.append(f"run startTimeStamp {started!r} is not RFC 3339; not reported")
        original: dict[str, Any] = {
            "uuid": self.uuid,
            "file_content": sorted(a.get("name", acc) for acc, a in self.content.items()),
            "scan_settings": {
                a.get("name", acc): a.get("value", True) for acc, a in settings.items()
            },
        }
        return metadata, original

    def _software(self, config: ET.Element | None) -> dict[str, str]:
        wanted = (
            next((c.get("ref") for c in config if local(c.tag) == "softwareRef"), None)
            if config is not None
            else None
        )
        listed = self.first("softwareList")
        for software in listed if listed is not None else ():
            if wanted is not None and software.get("id") != wanted:
                continue
            term = next((c for c in software if local(c.tag) == "cvParam"), None)
            name = (term.get("name", "") if term is not None else "") or software.get("id", "")
            found = {"software": name.strip(), "software_version": software.get("version", "")}
            return {k: v.strip() for k, v in found.items() if v.strip()}
        return {}


def _header(path: Path, reader: Reader) -> _Header:
    with reader.open(path) as handle:
        try:
            root = parse_until(handle.read, "spectrumList")
        except (XmlRefused, XmlBroken) as exc:
            raise AdapterError(path, f"imzML refused: {exc}") from exc
    if local(root.tag) not in ("mzML", "indexedmzML"):
        raise AdapterError(path, f"not imzML: the root element is {local(root.tag)}")
    if local(root.tag) == "indexedmzML":
        inner = next((c for c in root if local(c.tag) == "mzML"), None)
        if inner is None:
            raise AdapterError(path, "indexedmzML without an mzML element")
        root = inner
    return _Header(path, root)


def _tail_extent(path: Path, reader: Reader) -> int:
    """The ``.ibd`` bytes the last spectra need; AdapterError when the imzML is cut short."""
    with reader.open(path) as handle:
        size = int(handle.seek(0, os.SEEK_END))
        handle.seek(max(0, size - TAIL_BYTES))
        tail = handle.read(TAIL_BYTES).decode("latin-1")
    if not tail.rstrip().endswith(("</mzML>", "</indexedmzML>")):
        raise AdapterError(path, "truncated: the imzML does not end with </mzML>")
    needed = 0
    for block in _ARRAY.findall(tail):
        params = {}
        for tag in _CV_PARAM.findall(block):
            attributes = dict(_ATTRIBUTE.findall(tag))
            params[attributes.get("accession")] = attributes.get("value", "")
        offset, length = params.get("IMS:1000102"), params.get("IMS:1000104")
        if offset is None or length is None:
            continue
        if not (offset.isdigit() and length.isdigit()):
            raise AdapterError(
                path, f"external offset {offset!r} or length {length!r} is not a count"
            )
        needed = max(needed, int(offset) + int(length))
    return needed


def _check_ibd(ibd: Path, imzml: Path, uuid: str, needed: int, reader: Reader) -> None:
    """Check the ``.ibd``'s UUID and size against its imzML (its first 16 bytes only)."""
    with reader.open(ibd) as handle:
        head = handle.read(UUID_BYTES)
        size = int(handle.seek(0, os.SEEK_END))
    if len(head) < UUID_BYTES:
        raise AdapterError(ibd, f"truncated: {size} bytes, shorter than its UUID")
    if head.hex() != uuid:
        raise AdapterError(ibd, f"its UUID {head.hex()} is not {uuid}, that of {imzml}")
    if size < needed:
        raise AdapterError(
            ibd, f"truncated: {size} bytes, but the spectra of {imzml} reach byte {needed}"
        )


def _checksum(
    ibd: Path, imzml: Path, checksum: tuple[str, str] | None, digests: Mapping[str, str]
) -> tuple[str, str | None]:
    """How the ``.ibd``'s checksum fared, and its algorithm when it matched.

    Compared with the agent's digest of the whole ``.ibd`` (``Draft.digests``), never read
    here. A mismatch is an AdapterError naming the ``.ibd``: the pair is then failed.
    """
    if checksum is None:
        return "none named", None
    name, expected = checksum
    actual = digests.get(name)
    if actual is None:  # a caller that hashed nothing, or an .ibd packaged earlier
        return f"not verified: the agent computed no {name} of the .ibd", None
    if actual.lower() != expected:
        raise AdapterError(
            ibd, f"checksum mismatch: its {name} is {actual}, but {imzml} names {expected}"
        )
    return f"{name} verified", name


def _ibd_alone(ibds: list[Path], reader: Reader) -> AdapterOutput:
    """An ``.ibd`` whose imzML never came: listed, with its UUID, so nothing is lost."""
    ibd = ibds[0]
    head = reader.read(ibd, 0, UUID_BYTES)
    if len(head) < UUID_BYTES:
        raise AdapterError(ibd, f"truncated: {len(head)} bytes, shorter than its UUID")
    return AdapterOutput(
        format="imzML",
        metadata={"instances": len(ibds)},
        original_metadata={"uuid": head.hex()},
        warnings=(f"{ibd.name}: no imzML with UUID {head.hex()} is in the acquisition",),
    )


def _count(attrs: dict[str, str] | None, notes: list[str], key: str = "value") -> int | None:
    if attrs is None or key not in attrs:
        return None
    text = attrs[key].strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    notes.append(f"{attrs.get('name', key)} {text!r} is not a positive count; not reported")
    return None


def _length_um(attrs: dict[str, str] | None, notes: list[str]) -> float | None:
    if attrs is None:
        return None
    try:
        value = float(attrs.get("value", ""))
    except ValueError:
        value = math.nan
    unit = attrs.get("unitAccession", "UO:0000017")
    factor = _UO_UM.get(unit)
    if not (math.isfinite(value) and value > 0) or factor is None:
        notes.append(
            f"{attrs.get('name', 'pixel size')} {attrs.get('value')!r} "
            f"{attrs.get('unitName', unit)}: not a positive length; not reported"
        )
        return None
    return round(value * factor, 9)
