"""Whole-slide scanner TIFFs with case numbers, barcodes, users and scan dates planted in the
fields each vendor writes them to, laid out as their scanners write them (tifffile's writer,
vendor tags as ``extratags``, vendor text as ImageDescription or XMP). The corpus has an
Aperio and a Hamamatsu slide; Leica, Philips and Ventana have none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy
import tifffile

PLANE = numpy.zeros((16, 16, 3), numpy.uint8)
SCAN_DATE_TIME = "2024:03:14 10:11:12"


@dataclass(frozen=True)
class Slide:
    """A written slide and the values planted in it, by what the policy does to them."""

    path: Path
    flag: str
    #: removed whatever the options (case numbers, barcodes, users)
    identity: tuple[str, ...]
    #: removed unless ``retain_dates``
    dates: tuple[str, ...]
    #: kept unless ``retain_device_identity`` is off (serial numbers)
    device: tuple[str, ...] = ()
    #: removed unless ``retain_descriptions`` (label text)
    labels: tuple[str, ...] = ()
    #: never in the package, whatever the options (data that is not metadata)
    never: tuple[str, ...] = field(default=())
    #: the adapter gives ``acquired`` (a scan date it reads)
    acquired: bool = True


def aperio(folder: Path) -> Slide:
    items = {
        "AppMag": "20",
        "ScanScope ID": "SS1234",
        "Filename": "S24-01234-A1",
        "Title": "Case of J. Doe",
        "Barcode": "BC-778899",
        "Date": "03/14/24",
        "Time": "10:11:12",
        "Time Zone": "GMT+0100",
        "User": "jdoe-tech",
        "MPP": "0.2500",
    }
    text = "Aperio Image Library v12.0.5\r\n16x16 JPEG/RGB Q=70|" + "|".join(
        f"{key} = {value}" for key, value in items.items()
    )
    path = folder / "aperio.svs"
    tifffile.imwrite(path, PLANE, description=text, tile=(16, 16), metadata=None)
    return Slide(
        path,
        "svs",
        identity=("S24-01234-A1", "BC-778899", "jdoe-tech"),
        dates=("03/14/24", "10:11:12", "GMT+0100"),
        device=("SS1234",),
        labels=("Case of J. Doe",),
    )


def hamamatsu(folder: Path) -> Slide:
    # Not named .ndpi: tifffile reads such a name with NDPI's 64-bit offsets, which its
    # writer does not write; the adapter goes by the tags, not the name.
    path = folder / "hamamatsu.tif"
    tags = [
        (65420, "I", 1, 1, True),  # FileFormat: what marks an NDPI file
        (65421, "f", 1, 40.0, True),  # Magnification
        (65427, "s", 0, "H24-5678 B2", True),  # SlideLabel (the reference)
        (65442, "s", 0, "NDP-77", True),  # ScannerSerialNumber
    ]
    tifffile.imwrite(
        path,
        PLANE,
        metadata=None,
        extratags=[
            (271, "s", 0, "Hamamatsu", True),
            (272, "s", 0, "C13220", True),
            (306, "s", 0, SCAN_DATE_TIME, True),
            *tags,
        ],
    )
    return Slide(
        path, "ndpi", identity=("H24-5678 B2",), dates=(SCAN_DATE_TIME,), device=("NDP-77",)
    )


def leica(folder: Path) -> Slide:
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<scn xmlns="http://www.leica-microsystems.com/scn/2010/10/01">'
        '<collection name="L24-4321" uuid="6f1b1ec0" sizeX="16000" sizeY="16000">'
        "<barcode>LB-556677</barcode>"
        '<image name="Main" uuid="1a2b"><creationDate>2024-03-14T10:11:12.00Z</creationDate>'
        '<device model="Leica SCN400" version="1.5"/>'
        '<pixels sizeX="16" sizeY="16"><dimension sizeX="16" sizeY="16" r="0" ifd="0"/>'
        '</pixels><view sizeX="16000" sizeY="16000" offsetX="0" offsetY="0"/>'
        "</image></collection></scn>"
    )
    path = folder / "leica.scn"
    tifffile.imwrite(path, PLANE, description=xml, metadata=None)
    return Slide(
        path,
        "scn",
        identity=("L24-4321", "LB-556677"),
        dates=("2024-03-14T10:11:12.00Z",),
    )


def philips(folder: Path) -> Slide:
    label = "/9j/4AAQSkZJRgABAQEASABIAAD" + "A" * 2000  # a base64 JPEG label image

    def attribute(name: str, value: str, kind: str = "IString") -> str:
        opening = f'<Attribute Name="{name}" Group="0x0000" Element="0x0000" PMSVR="{kind}">'
        return f"{opening}{value}</Attribute>"

    xml = (
        '<?xml version="1.0" encoding="UTF-8" ?><DataObject ObjectType="DPUfsImport">'
        + attribute("DICOM_ACQUISITION_DATETIME", "20240314101112.000000")
        + attribute("DICOM_DEVICE_SERIAL_NUMBER", "PHS-42")
        + attribute("DICOM_MANUFACTURER", "PHILIPS")
        + attribute("PIM_DP_UFS_BARCODE", "UEgyNC05OTk=")
        + attribute(
            "PIM_DP_SCANNED_IMAGES",
            '<Array><DataObject ObjectType="DPScannedImage">'
            + attribute("PIM_DP_IMAGE_TYPE", "LABELIMAGE")
            + attribute("PIM_DP_IMAGE_DATA", label)
            + "</DataObject></Array>",
            "IDataObjectArray",
        )
        + "</DataObject>"
    )
    path = folder / "philips.tiff"
    tifffile.imwrite(path, PLANE, description=xml, software="Philips DP v1.0", metadata=None)
    return Slide(
        path,
        "philips",
        identity=("UEgyNC05OTk=",),
        dates=("20240314101112.000000",),
        device=("PHS-42",),
        never=(label,),
        acquired=False,  # its date is in the XML only, which the adapter does not parse
    )


def ventana(folder: Path) -> Slide:
    xmp = b'<iScan BarCode1D="VB-112233" UnitNumber="BI10N0294" ScanRes="0.25"/>'
    path = folder / "ventana.bif"
    tifffile.imwrite(
        path,
        PLANE,
        description="level=0 mag=40 quality=90",
        software="ScanOutputManager 1.1.0.15854",
        metadata=None,
        extratags=[(700, "B", len(xmp), xmp, True), (306, "s", 0, SCAN_DATE_TIME, True)],
    )
    # the iScan XML is XMP, never read: its barcode cannot reach a package
    return Slide(path, "bif", identity=(), dates=(SCAN_DATE_TIME,), never=("VB-112233",))


def write_slides(folder: Path) -> list[Slide]:
    """One slide of each scanner vendor in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return [writer(folder) for writer in (aperio, hamamatsu, leica, philips, ventana)]
