"""TIFF and OME-TIFF adapter: tags and embedded metadata only; OME sets grouped by claim.

Formats and variants: classic TIFF and BigTIFF, both byte orders, and the flavours
tifffile recognises from page-0 tags: OME-TIFF (OME-XML in ImageDescription), ImageJ
hyperstacks, Zeiss LSM, Aperio SVS, Hamamatsu NDPI, FEI/Thermo SEM, Zeiss SEM, TVIPS,
Hamamatsu streak, Olympus SIS/FluoView, MetaMorph STK, Micro-Manager, ScanImage, Leica
SCN, NIH Image, Ventana BIF, Philips, plus Gatan DigitalMicrograph and JEOL SightX from
their own tags.
Multi-file OME-TIFF sets (a master TIFF or a ``.companion.ome`` holding the OME-XML, the
other TIFFs ``BinaryOnly``) are one acquisition: see ``claim`` and ``omeset``.

Fields filled: image geometry (size x/y/z/c/t, bits, pixel type, dimension order,
number of pages), pixel size in micrometres (OME PhysicalSize* with units, Gatan
65009/65010, JEOL MAG mode, SIS, TVIPS, Micro-Manager, SCN, MetaMorph STK, FluoView,
NIH Image, ScanImage, LSM voxel size, FEI and Zeiss SEM pixel size, Aperio MPP, ImageJ
spacing/unit, else X/YResolution in centimetre units), acquisition time, instrument as
reported (Make, Model, Software, HostComputer tags, OME Microscope, vendor headers),
channels (OME, Micro-Manager, LSM tracks), objective (OME, LSM name parsed, SCN, Aperio,
NDPI) and detector resolved through their Settings refs or vendor headers, operator.
The tag-to-field table per flavour is in this folder's README.md (the ``source`` of each
field below, checked by a test).
``original_metadata`` holds page-0 tags, the OME-XML text, ImageJ metadata and the vendor
metadata tifffile parses from tags. Whole-slide scanners' case numbers, barcodes, users and
scan dates are named as ``identifiers`` for the agent's de-identification (``identifiers``).

Deliberately not read: pixel data (no ``asarray``, no series assembly), metadata of
pages other than the first (the second for an Olympus SIS tag; every IFD is walked for
the truncation check in ``extent``), of set members only the first IFD's description and
Software tag (each member gets the same truncation check as the primary: one cut short
fails the extraction with an ``AdapterError`` naming it), binary and offset tags, and
tags over 1 KiB of array data, Micro-Manager's index map, display settings and comments
(its per-image tag and dataset summary are read; a summary over 1 MiB is not), and LSM
emission bands (a range is not an ``emission_nm``). XML with a DOCTYPE is
refused (``safexml``).

Proved by ``ome-tiff/*/*.ome.tif*`` and every file under ``tiff-vendor/`` in the corpus,
notably ``tiff-vendor/zeiss-lsm/test.lsm`` (voxel size, channel, objective, detector,
Sample0time), the ImageJ stack in ``tiff-vendor/imagej/`` (z spacing), the Gatan, JEOL,
SIS and TVIPS files (calibration; TVIPS microscope and date), the streak, Zeiss SEM and
SVS files (instrument fields), ``ome-tiff/multifile-*`` (grouping), and the SVS and NDPI
slides (headers-only budget). MetaMorph STK, FluoView, NIH Image, ScanImage and
Micro-Manager have no corpus file: ``tests/adapters/test_tiff_flavours.py`` writes them.
"""

from __future__ import annotations

import os
from pathlib import Path

from acqharvest.adapter_api import (
    AdapterInfo,
    AdapterOutput,
    Claim,
    Draft,
    FileProbe,
    FormatSpec,
    Reader,
    normalized_fields,
)
from acqharvest.adapters.safexml import XmlBroken, XmlRefused
from acqharvest.adapters.tiff import ome, ome_links, omeset, sniff
from acqharvest.adapters.tiff.extent import check_member

__all__ = ["TiffAdapter"]

#: OME-XML that ties files together is stronger evidence than TIFF magic alone.
OME_CONFIDENCE = 0.6

#: (tifffile flag, format name, metadata property copied into original_metadata)
FLAVOURS = (
    ("imagej", "TIFF (ImageJ)", "imagej_metadata"),
    ("lsm", "TIFF (Zeiss LSM)", "lsm_metadata"),
    ("svs", "TIFF (SVS)", None),
    ("ndpi", "TIFF (NDPI)", None),
    ("fei", "TIFF (FEI SEM)", "fei_metadata"),
    ("sem", "TIFF (Zeiss SEM)", "sem_metadata"),
    ("tvips", "TIFF (TVIPS)", "tvips_metadata"),
    ("streak", "TIFF (Hamamatsu streak)", "streak_metadata"),
    ("sis", "TIFF (Olympus SIS)", "sis_metadata"),
    ("fluoview", "TIFF (Olympus FluoView)", "fluoview_metadata"),
    ("stk", "TIFF (MetaMorph STK)", "stk_metadata"),
    ("micromanager", "TIFF (Micro-Manager)", None),
    ("scanimage", "TIFF (ScanImage)", "scanimage_metadata"),
    ("scn", "TIFF (Leica SCN)", None),
    ("nih", "TIFF (NIH Image)", "nih_metadata"),
    ("bif", "TIFF (Ventana BIF)", None),
    ("philips", "TIFF (Philips)", None),
)

_FIELDS = normalized_fields(
    {
        "image.size_x": "OME Pixels SizeX, else ImageWidth",
        "image.size_y": "OME Pixels SizeY, else ImageLength",
        "image.size_z": "OME SizeZ, Micro-Manager summary IntendedDimensions z, else Slices, "
        "ImageJ slices, LSM DimensionZ",
        "image.size_c": "OME SizeC, Micro-Manager summary IntendedDimensions channel, else "
        "Channels, ImageJ channels, LSM DimensionChannels, else SamplesPerPixel when over 1",
        "image.size_t": "OME SizeT, Micro-Manager summary IntendedDimensions time, else "
        "Frames, ImageJ frames, LSM DimensionTime",
        "image.bits": "BitsPerSample; for a `.companion.ome` (no TIFF of its own) OME "
        "SignificantBits, else the bits of the OME Pixels Type",
        "image.pixel_type": "OME Pixels Type, else the page dtype (uint8, uint16, float32...)",
        "image.dimension_order": "OME Pixels DimensionOrder",
        "image.frames": "number of pages (IFDs); for a multi-file OME set, its planes",
        "pixel_size_um.x": "the first found of: OME PhysicalSizeX (+ unit; with OME-XML the "
        "sources below fill only the axes it lacks, and X/YResolution is never used), "
        "Gatan 65009 in 65003 units, JEOL SightX MAG mode (detector pitch from XResolution "
        "÷ ImageFormingSystem SelectorValue), Olympus SIS pixelsizex (m), TVIPS PixelSizeX "
        "(nm), Micro-Manager PixelSizeUm (else the summary's PixelSize_um), Leica SCN view "
        "sizeX (nm) ÷ the r=0 dimension, "
        "MetaMorph STK XCalibration in CalibrationUnits (unless SpatialCalibration is 0), "
        "FluoView MM_Header dimension X Resolution in its Unit, NIH Image 1 ÷ XScale in "
        "UnitsID units (read as ImageJ reads them), ScanImage imagingFovUm width ÷ "
        "pixelsPerLine, LSM VoxelSizeX (m), FEI Scan PixelWidth (m), Zeiss SEM "
        "ap_pixel_size, Aperio MPP, ImageJ unit with XResolution when ResolutionUnit is "
        "NONE, else XResolution with ResolutionUnit centimetre (an inch resolution is print "
        "or screen DPI and is not used)",
        "pixel_size_um.y": "as x, from the Y tags and attributes; NIH Image x ÷ "
        "PixelAspectRatio, ScanImage imagingFovUm height ÷ linesPerFrame",
        "pixel_size_um.z": "OME PhysicalSizeZ, Gatan 65011 in 65005 units, Micro-Manager "
        "summary z-step_um, FluoView dimension "
        "Z Resolution in its Unit, NIH Image SliceSpacing (2 slices or more), LSM VoxelSizeZ "
        "(above 1 pm: LSM writes 1e-19 for none), ImageJ spacing in its unit",
        "acquired": "OME Image AcquisitionDate, JEOL SightX DateTime, Olympus SIS datetime, "
        "TVIPS Date and Time (date packed as year, month, day bytes; seconds of the day), "
        "Micro-Manager Time (else the summary's StartTime), Leica SCN creationDate, LSM "
        "Sample0time (days since 1899-12-30, "
        "to the millisecond), ScanImage frame epoch, FEI User Date/Time, Aperio Date/Time, "
        "Zeiss SEM ap_date/ap_time, else the DateTime tag; with an offset only where the "
        "file gives one",
        "instrument_reported.manufacturer": "OME Microscope Manufacturer, JEOL SightX "
        "Manufacturer, Leica SCN (`Leica` when the XML has a device), else the Make tag, "
        "else `Aperio` for an Aperio header naming a ScanScope ID",
        "instrument_reported.model": "OME Microscope Model, JEOL SightX Instruments, TVIPS "
        "TemType, Leica SCN device model, else the Model tag, FEI System SystemType, Zeiss "
        "SEM dp_sem, Hamamatsu streak `Streak camera` DeviceName",
        "instrument_reported.serial_number": "OME Microscope SerialNumber, FEI System Dnumber, "
        "Zeiss SEM sv_serial_number, NDPI ScannerSerialNumber, Aperio ScanScope ID, "
        "Hamamatsu streak Camera SerialNumber (the readout camera's, `S/N:` dropped)",
        "instrument_reported.type": "OME Microscope Type",
        "instrument_reported.station_name": "HostComputer tag, Micro-Manager ComputerName "
        "(image tag, else summary)",
        "instrument_reported.software_version": "Micro-Manager MicroManagerVersion (image tag, "
        "else summary), Leica SCN "
        "device version, Zeiss SEM sv_version, Hamamatsu streak Application SoftwareVersion",
        "instrument_reported.software": "`Micro-Manager` when it gives its version, else the "
        "Software tag, FEI System Software, Hamamatsu streak Application Software; for a "
        "`.companion.ome`, the Software tag of the set's first TIFF",
        "channels": f"{ome.CHANNEL_SOURCES}; Micro-Manager summary ChNames "
        "(every channel), the image tag's Channel and Exposure-ms (its own channel only); "
        "LSM acquired DetectionChannels: ChannelName, DyeName as fluor, and "
        "the track's IlluminationChannels Wavelength as excitation when one line is on "
        "(the emission band SpiWavelengthStart-Stop is a range and is not reported)",
        "objective.model": "OME Objective chosen by Image/ObjectiveSettings, LSM "
        "ScanInformation Objective",
        "objective.manufacturer": "OME Objective Manufacturer",
        "objective.magnification": "OME Objective NominalMagnification, Leica SCN objective, "
        "LSM objective name (`40x/1.30`, parsed), Aperio AppMag, NDPI Magnification",
        "objective.na": "OME Objective LensNA, Leica SCN numericalAperture, LSM objective "
        "name (parsed; an NA of 2 or more is a tube length and is dropped)",
        "objective.immersion": "OME Objective Immersion, LSM objective name (the word after "
        "the NA: Oil, W or Water, Glyc, parsed)",
        "detector.model": "OME Detector chosen by the first Channel's DetectorSettings (else "
        "the only one), Olympus SIS cameraname, TVIPS CameraType, Micro-Manager Camera, LSM "
        "first acquired PointDetectorName, FEI Detectors Name, Zeiss SEM "
        "dp_detector_channel, Hamamatsu streak Camera CameraName",
        "detector.manufacturer": "OME Detector Manufacturer, `TVIPS` for a TVIPS header",
        "detector.type": "OME Detector Type, FEI Detectors Mode (not `None`)",
        "operator": "OME Experimenter chosen by ExperimenterRef, JEOL SightX Operator, "
        "Micro-Manager UserName (image tag, else summary), FEI User User, Zeiss SEM "
        "sv_user_name, LSM User (a microscope's operator is kept; a whole-slide file's "
        "follows OperatorsName: see Patient data)",
        "instances": "files in a multi-file OME-TIFF set",
        **ome.NBO_SOURCES,
    }
)


class TiffAdapter:
    """TIFF, BigTIFF and OME-TIFF via tifffile, tags only."""

    info = AdapterInfo(
        name="tiff",
        title="TIFF / OME-TIFF",
        version="1.4.0",
        stability="beta",
        formats=(
            FormatSpec(
                name="OME-TIFF",
                extensions=(".ome.tif", ".ome.tiff", ".ome.tf2", ".ome.tf8", ".ome.btf"),
                magic="TIFF magic with OME-XML in the first ImageDescription",
            ),
            FormatSpec(
                name="TIFF",
                extensions=(".tif", ".tiff", ".lsm", ".svs", ".ndpi", ".btf"),
                magic="II*\\0, MM\\0*, II+\\0 or MM\\0+ at offset 0",
                variants=tuple(name for _, name, _ in FLAVOURS),
            ),
        ),
        fields=_FIELDS,
        # TIFF (RFC 3302) whatever its flavour; a companion is OME-XML
        media_types={"": "image/tiff", ".companion.ome": "application/xml"},
        samples=(
            "ome-tiff/single-file/multi-channel.ome.tif",
            "ome-tiff/acquisition/170918_tn_neutrophil_migration_wave.ome.tif",
            "tiff-vendor/zeiss-lsm/test.lsm",
            "tiff-vendor/imagej/test_loading_image_saved_with_imageJ_stack.tif",
            "tiff-vendor/aperio-svs/CMU-1-Small-Region.svs",
            "tiff-vendor/hamamatsu-ndpi/test3-DAPI-2-(387).ndpi",
            "tiff-vendor/fei-sem/FEI-Helios-Ebeam-16bits.tif",
            "tiff-vendor/zeiss-sem/test_tiff_Zeiss_SEM_1k.tif",
        ),
    )

    def claim(self, probe: FileProbe, reader: Reader) -> Claim | None:
        if sniff.is_tiff(probe.head):
            return _claim_tiff(probe, reader)
        text = sniff.companion_text(probe.path, probe.head, probe.size, reader)
        links = _links(text, probe.path.name) if text is not None else None
        if text is None or links is None or not set(links.files) - {probe.path.name}:
            return None  # only an OME-XML file that names TIFFs is a companion
        return Claim(
            group_key=_key(probe.path),
            role="primary",
            confidence=OME_CONFIDENCE,
            expects=_below(probe.path.parent, links.files),
            collects=not text.complete,
        )

    def extract(self, draft: Draft, reader: Reader) -> AdapterOutput:
        # tifffile (and numpy) load on first use: a DICOM-only instrument never pays for them.
        from acqharvest.adapters.tiff.reader import read_tiff

        head = reader.read(draft.primary, 0, 4)
        if head and not sniff.is_tiff(head):
            output = omeset.read_companion(draft, reader)
        else:
            output = read_tiff(draft, reader)
        _check_members(draft, reader)
        return output


def _check_members(draft: Draft, reader: Reader) -> None:
    """Every TIFF of a set must be whole, as the primary is: the package lists each one.

    A member that is not a TIFF (a second ``.companion.ome``) has no extents to check.
    """
    for member in draft.members:
        if member != draft.primary and sniff.is_tiff(reader.read(member, 0, 4)):
            check_member(member, reader)


def _claim_tiff(probe: FileProbe, reader: Reader) -> Claim:
    """A TIFF is its own acquisition unless its OME-XML ties it to other files."""
    own = Claim(group_key=_key(probe.path), role="primary", confidence=0.5)
    text = sniff.first_description(probe.path, probe.head, reader)
    if text is None or sniff.OME_NAMESPACE not in text.data:
        return own
    links = _links(text, probe.path.name)
    if links is None:
        return own  # hostile or broken XML: extraction names the problem
    if links.metadata_file is not None:
        return Claim(
            group_key=_key(probe.path.parent / links.metadata_file),
            role="member",
            confidence=OME_CONFIDENCE,
            expects=_below(probe.path.parent, (links.metadata_file,)),
        )
    return Claim(
        group_key=own.group_key,
        role="primary",
        confidence=OME_CONFIDENCE,
        expects=_below(probe.path.parent, links.files),
        collects=not text.complete,
    )


def _below(folder: Path, names: tuple[str, ...]) -> tuple[str, ...]:
    """Names as normalized paths relative to ``folder``, ``..`` kept for one outside it.

    The agent resolves them against the watch root: a metadata file one folder up is
    waited for there, and one outside the root keeps the group incomplete.
    """
    relative = (Path(os.path.relpath(os.path.normpath(folder / name), folder)) for name in names)
    return tuple(p.as_posix() for p in relative)


def _links(text: sniff.Text, own_name: str) -> ome_links.OmeLinks | None:
    """What the OME-XML ties together: parsed when whole, scanned when cut at the budget."""
    if not text.complete:
        return ome_links.links_from_prefix(text.data.decode("utf-8", errors="replace"), own_name)
    try:
        return ome_links.links(ome.parse_xml(text.data), own_name)
    except (XmlRefused, XmlBroken):
        return None


def _key(path: Path) -> str:
    """One key per metadata file, however a member spells the way to it."""
    return f"tiff:{os.path.normpath(path)}"
