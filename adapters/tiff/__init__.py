"""TIFF and OME-TIFF adapter: tags and embedded metadata only; OME sets grouped by claim.

Formats and variants: classic TIFF and BigTIFF, both byte orders, and the flavours
tifffile recognises from page-0 tags: OME-TIFF (OME-XML in ImageDescription), ImageJ
hyperstacks, Zeiss LSM, Aperio SVS, Hamamatsu NDPI, FEI/Thermo SEM, Zeiss SEM, TVIPS,
Hamamatsu streak, Olympus SIS/FluoView, MetaMorph STK, Micro-Manager, ScanImage, Leica
SCN, NIH Image, plus Gatan DigitalMicrograph and JEOL SightX from their own tags.
Multi-file OME-TIFF sets (a master TIFF or a ``.companion.ome`` holding the OME-XML, the
other TIFFs ``BinaryOnly``) are one acquisition: see ``claim`` and ``omeset``.

Fields filled: image geometry (size x/y/z/c/t, bits, pixel type, dimension order,
number of pages), pixel size in micrometres (OME PhysicalSize* with units, Gatan
65009/65010, JEOL MAG mode, SIS, TVIPS, Micro-Manager, SCN, LSM voxel size, FEI and
Zeiss SEM pixel size, Aperio MPP, ImageJ spacing/unit, else X/YResolution in
centimetre units), acquisition time, instrument as reported (Make, Model, Software,
HostComputer tags, OME Microscope, vendor headers), OME channels, objective and
detector resolved through their Settings refs, operator. The tag-to-field table per
flavour is in this folder's README.md.
``original_metadata`` holds page-0 tags, the OME-XML text, ImageJ metadata and the vendor
metadata tifffile parses from tags.

Deliberately not read: pixel data (no ``asarray``, no series assembly), metadata of
pages other than the first (the second for an Olympus SIS tag; every IFD is walked for
the truncation check in ``extent``), of set members only the first IFD's description and
Software tag (each member gets the same truncation check as the primary: one cut short
fails the extraction with an ``AdapterError`` naming it), binary and offset tags, and
tags over 1 KiB of array data. XML with a
DOCTYPE is refused (``safexml``).

Proved by ``ome-tiff/*/*.ome.tif*`` and every file under ``tiff-vendor/`` in the corpus,
notably ``tiff-vendor/zeiss-lsm/test.lsm`` (voxel size), the ImageJ stack in
``tiff-vendor/imagej/`` (z spacing), the Gatan, JEOL, SIS and TVIPS files (calibration),
``ome-tiff/multifile-*`` (grouping), and the SVS and NDPI slides (headers-only budget).
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
from acqharvest.adapters.tiff import ome, omeset, sniff
from acqharvest.adapters.tiff.extent import check_member
from acqharvest.adapters.tiff.safexml import XmlBroken, XmlRefused

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
)

_FIELDS = normalized_fields(
    {
        "image.size_x": "ImageWidth, or OME SizeX",
        "image.size_y": "ImageLength, or OME SizeY",
        "image.size_z": "OME SizeZ, ImageJ slices, LSM DimensionZ",
        "image.size_c": "OME SizeC, ImageJ channels, else samples",
        "image.size_t": "OME SizeT, ImageJ frames, LSM DimensionTime",
        "image.bits": "BitsPerSample",
        "image.pixel_type": "e.g. uint8, uint16, float32",
        "image.dimension_order": "OME DimensionOrder, e.g. XYCZT",
        "image.frames": "number of TIFF pages (IFDs)",
        "pixel_size_um.x": "pixel width",
        "pixel_size_um.y": "pixel height",
        "pixel_size_um.z": "section spacing",
        "acquired": "acquisition date-time as written",
        "instrument_reported.manufacturer": "Make tag or OME Microscope",
        "instrument_reported.model": "Model tag, OME Microscope, vendor",
        "instrument_reported.serial_number": "OME Microscope or vendor",
        "instrument_reported.type": "OME Microscope Type",
        "instrument_reported.station_name": "HostComputer tag, Micro-Manager ComputerName",
        "instrument_reported.software_version": "Micro-Manager version, Leica SCN device",
        "instrument_reported.software": "Software tag or vendor header",
        "channels": "name, excitation_nm, emission_nm, fluor, exposure_s",
        "objective.model": "OME Objective Model or LSM objective",
        "objective.manufacturer": "OME Objective Manufacturer",
        "objective.magnification": "nominal magnification",
        "objective.na": "numerical aperture (OME LensNA)",
        "objective.immersion": "OME Objective Immersion",
        "detector.model": "OME Detector, SEM detector name",
        "detector.manufacturer": "OME Detector Manufacturer",
        "detector.type": "OME Detector Type or SEM signal mode",
        "operator": "OME Experimenter or vendor user name",
        "instances": "files in a multi-file OME-TIFF set",
    }
)


class TiffAdapter:
    """TIFF, BigTIFF and OME-TIFF via tifffile, tags only."""

    info = AdapterInfo(
        name="tiff",
        title="TIFF / OME-TIFF",
        version="1.1.0",
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


def _links(text: sniff.Text, own_name: str) -> ome.OmeLinks | None:
    """What the OME-XML ties together: parsed when whole, scanned when cut at the budget."""
    if not text.complete:
        return ome.links_from_prefix(text.data.decode("utf-8", errors="replace"), own_name)
    try:
        return ome.links(ome.parse_xml(text.data), own_name)
    except (XmlRefused, XmlBroken):
        return None


def _key(path: Path) -> str:
    """One key per metadata file, however a member spells the way to it."""
    return f"tiff:{os.path.normpath(path)}"
