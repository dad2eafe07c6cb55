"""What a whole-slide scanner's TIFF header says about the patient, the case or the specimen.

Slide scanners write the slide's name in the lab (often the case or accession number), its
barcode or label, the operator and the scan date into fields of their own, and repeat most
of them in the ImageDescription's free text. The adapter reports them as read and names
each as an ``Identifier``: the DICOM attribute that holds the same information, whose rule
of the site's de-identification policy the agent applies, with the same retain options as
for a DICOM file. The table per vendor is in this folder's README ("Patient data").
Microscope and electron-microscope flavours hold no patient data and name none.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import tifffile
from tifffile import TIFF

from acqharvest.adapter_api import Identifier

#: tifffile flags of the whole-slide scanners' files.
WHOLE_SLIDE = frozenset({"svs", "ndpi", "scn", "bif", "philips"})

#: Aperio ``key = value`` items of the ImageDescription (``svs_metadata``) -> attribute.
APERIO = {
    "Filename": "ContainerIdentifier",  # the slide's name in the lab: often the case number
    "Title": "LabelText",
    "Barcode": "BarcodeValue",
    "Date": "AcquisitionDate",
    "Time": "AcquisitionTime",
    "Time Zone": "TimezoneOffsetFromUTC",
    "User": "OperatorsName",
    "ScanScope ID": "DeviceSerialNumber",
    "DSR ID": "StationName",  # the slide repository's host
}
#: Hamamatsu NDPI private tags -> attribute: the slide label (OpenSlide's ``Reference``,
#: tifffile's ``SlideLabel``) and the scanner's serial number.
NDPI = {65427: "ContainerIdentifier", 65442: "DeviceSerialNumber"}
#: Leica SCN XML (ImageDescription): element text or ``element@attribute`` -> attribute.
SCN = {
    "barcode": "BarcodeValue",
    "creationDate": "AcquisitionDateTime",
    "collection@name": "ContainerIdentifier",
}
#: Philips XML (ImageDescription) attributes beside the ``DICOM_*`` ones, which are named
#: after the DICOM attribute they hold (``DICOM_ACQUISITION_DATETIME``).
PHILIPS = {"PIM_DP_UFS_BARCODE": "BarcodeValue"}
#: The TIFF DateTime tag of a whole-slide file is its scan date.
DATE_TIME_TAG = "AcquisitionDateTime"
#: Normalized fields of a whole-slide file -> attribute.
NORMALIZED = {
    ("acquired",): "AcquisitionDateTime",
    ("operator",): "OperatorsName",
    ("instrument_reported", "serial_number"): "DeviceSerialNumber",
}

_PHILIPS_ATTRIBUTE = re.compile(r'<Attribute\s+Name="([A-Z0-9_]+)"[^>]*>([^<]+)</Attribute>')


def slide_identifiers(
    flags: set[str],
    page: tifffile.TiffPage,
    metadata: Mapping[str, Any],
    original: Mapping[str, Any],
) -> tuple[Identifier, ...]:
    """Every identifying value of a whole-slide file's output, each once per place."""
    if not flags & WHOLE_SLIDE:
        return ()
    description = page.description or ""
    found: list[tuple[str, str, tuple[str, ...]]] = [
        (attribute, str(value), ("metadata", *keys))
        for keys, attribute in NORMALIZED.items()
        if (value := _get(metadata, keys)) is not None
    ]
    date_time = page.tags.get("DateTime")
    if date_time is not None and isinstance(date_time.value, str):
        found.append((DATE_TIME_TAG, date_time.value, ("original_metadata", "tags", "DateTime")))
    if "svs" in flags:
        found += _aperio(description)
    if "ndpi" in flags:
        found += _ndpi(page)
    if "scn" in flags:
        found += _scn(description)
    if "philips" in flags:
        found += _philips(description)
    trees = {"metadata": metadata, "original_metadata": original}
    unique = dict.fromkeys(
        # a path the output does not hold (a tag value left out) names no key to remove
        Identifier(attribute, value.strip(), path if _get(trees, path) is not None else ())
        for attribute, value, path in found
        if value.strip()
    )
    return tuple(unique)


def _get(tree: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    found: Any = tree
    for key in keys:
        found = found.get(key) if isinstance(found, Mapping) else None
    return found


def _aperio(description: str) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """The raw text of each ``key = value`` item: tifffile's parse turns ``0042`` into 42."""
    for item in description.split("|")[1:]:
        key, equals, value = item.partition("=")
        attribute = APERIO.get(key.strip())
        if equals and attribute:
            yield attribute, value, ("original_metadata", "svs_metadata", key.strip())


def _ndpi(page: tifffile.TiffPage) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    for code, attribute in NDPI.items():
        tag = page.tags.get(code)
        if tag is not None and isinstance(tag.value, str):
            yield attribute, tag.value, ("original_metadata", "tags", tag.name)
            name = TIFF.NDPI_TAGS.get(code, str(code))
            yield attribute, tag.value, ("original_metadata", "ndpi_metadata", name)


def _scn(description: str) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """As the XML writes them (entities unresolved), so the description's copy is found."""
    for where, attribute in SCN.items():
        element, _, name = where.partition("@")
        pattern = (
            rf'<{element}\b[^>]*\b{name}="([^"]*)"' if name else rf"<{element}\b[^>]*>([^<]*)<"
        )
        for match in re.finditer(pattern, description):
            yield attribute, match.group(1), ()


def _philips(description: str) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    for match in _PHILIPS_ATTRIBUTE.finditer(description):
        name, value = match.groups()
        if name.startswith("DICOM_"):
            # DICOM_DATE_OF_LAST_CALIBRATION -> DateOfLastCalibration (case is not significant)
            yield "".join(word.capitalize() for word in name[6:].split("_")), value, ()
        elif name in PHILIPS:
            yield PHILIPS[name], value, ()
