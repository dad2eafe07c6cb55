"""TIFF and OME-TIFF adapter: one file is one acquisition; tags and embedded metadata only.

Formats and variants: classic TIFF and BigTIFF, both byte orders, and the flavours
tifffile recognises from page-0 tags: OME-TIFF (OME-XML in ImageDescription), ImageJ
hyperstacks, Zeiss LSM, Aperio SVS, Hamamatsu NDPI, FEI/Thermo SEM, Zeiss SEM, TVIPS,
Hamamatsu streak, Olympus SIS/FluoView, MetaMorph STK and Micro-Manager.

Fields filled: image geometry (size x/y/z/c/t, bits, pixel type, dimension order,
number of pages), pixel size in micrometres (OME PhysicalSize*, LSM voxel size, FEI and
Zeiss SEM pixel size, Aperio MPP, ImageJ spacing/unit, else X/YResolution in
centimetre units), acquisition time, instrument as reported (Make, Model, Software
tags, OME Microscope, vendor headers), OME channels, objective, detector and operator.
``original_metadata`` holds page-0 tags, the OME-XML text, ImageJ metadata and the vendor
metadata tifffile parses from tags.

Deliberately not read: pixel data (no ``asarray``, no series assembly, so multi-file
OME-TIFF companions are not opened), pages other than the first and last (the last only
to detect truncation), binary and offset tags, and tags over 1 KiB of array data.

Proved by ``ome-tiff/*/*.ome.tif*`` and every file under ``tiff-vendor/`` in the corpus,
notably ``tiff-vendor/zeiss-lsm/test.lsm`` (voxel size), the ImageJ stack in
``tiff-vendor/imagej/`` (z spacing), and the SVS and NDPI slides (headers-only budget).
"""

from __future__ import annotations

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

__all__ = ["TiffAdapter"]

MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

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
    ("micromanager", "TIFF (Micro-Manager)", "micromanager_metadata"),
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
    }
)


class TiffAdapter:
    """TIFF, BigTIFF and OME-TIFF via tifffile, tags only."""

    info = AdapterInfo(
        name="tiff",
        title="TIFF / OME-TIFF",
        version="1.0.0",
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
        if probe.head[:4] not in MAGIC:
            return None
        return Claim(group_key=f"tiff:{probe.path}", role="primary", confidence=0.5)

    def extract(self, draft: Draft, reader: Reader) -> AdapterOutput:
        # tifffile (and numpy) load on first use: a DICOM-only instrument never pays for them.
        from acqharvest.adapters.tiff.reader import read_tiff

        return read_tiff(draft.primary, reader)
