"""Nikon ND2 adapter: NIS-Elements metadata through the ``nd2`` library, never a frame.

Formats and variants: ND2 files of NIS-Elements 4 and later (chunked, version 2 and 3:
magic 0x0ABECEDA), with any experiment loops (time, Z, XY positions, ND time phases),
one or more channels, RGB or monochrome. Legacy JPEG 2000 ND2 files (version 1, NIS-Elements
3 and earlier) are claimed by their ``.nd2`` name, since their magic is any JPEG 2000's.
Each ``.nd2`` file is one acquisition. Without ``nd2`` installed
(``pip install 'acqharvest[nd2]'``) the files are still claimed from their magic and
packaged with checksums only.

Fields filled and their sources: this folder's README.md (checked by a test).
``original_metadata`` holds the attributes, the experiment loops, the text info
(description, capturing, optics, date) and the application's name and version.

Deliberately not read: frames (image data), per-frame metadata beyond the first frame's
time stamp, events, ROIs, binary layers, the OME conversion. The completeness test reads
the chunk map at the end of the file (its signature and every chunk's extent); a chunk
that reaches past the end of the file is an ``AdapterError``.

Proved by ``nd2/cluster.nd2`` (Nikon A1plus confocal on a Ti, NIS-Elements AR 4.20: T 3 x
Z 10 x C 2, calibrated voxel size, two channels with wavelengths).
"""

from __future__ import annotations

import os

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

__all__ = ["Nd2Adapter"]

#: a chunk header's magic (0x0ABECEDA, little-endian): the first bytes of a modern ND2
MAGIC = b"\xda\xce\xbe\x0a"
#: the JPEG 2000 signature box, with which a legacy ND2 starts
JP2_MAGIC = b"\x00\x00\x00\x0cjP  \r\n\x87\n"

_FIELDS = normalized_fields(
    {
        "image.size_x": "attributes widthPx",
        "image.size_y": "attributes heightPx",
        "image.size_z": "sizes Z (the Z loop)",
        "image.size_c": "attributes channelCount (else componentCount)",
        "image.size_t": "sizes T (time loops)",
        "image.scenes": "sizes P (the XY positions loop)",
        "image.frames": "attributes sequenceCount",
        "image.bits": "attributes bitsPerComponentSignificant",
        "image.pixel_type": "attributes pixelDataType and bitsPerComponentInMemory",
        "image.samples_per_pixel": "sizes S (3 for RGB)",
        "pixel_size_um.x": "voxel_size() x (Volume axesCalibration, µm)",
        "pixel_size_um.y": "voxel_size() y",
        "pixel_size_um.z": "voxel_size() z, when the file has a Z loop",
        "loops": "experiment: TimeLoop (count, periodMs as period_s), NETimeLoop (count), "
        "ZStackLoop (count, stepUm as step_um), XYPosLoop (count)",
        "acquired": "the first frame's absoluteJulianDayNumber (UTC)",
        "modality": "the first channel's microscope modalityFlags, joined with +",
        "instrument_reported.model": "text_info description `Microscope: ...`",
        "instrument_reported.software": "custom data AppInfo_V1_0 SWNameString",
        "instrument_reported.software_version": "custom data AppInfo_V1_0 VersionString",
        "objective.model": "the first channel's microscope objectiveName (else text_info optics)",
        "objective.magnification": "the first channel's microscope objectiveMagnification",
        "objective.na": "the first channel's microscope objectiveNumericalAperture",
        "detector.model": "text_info description `Camera Name: ...`",
        "channels": "metadata channels: name (the optical configuration's), "
        "excitationLambdaNm, emissionLambdaNm; the channel's microscope pinholeDiameterUm "
        "as pinhole_um; its modalityFlags as OME acquisition_mode, contrast_method and "
        "illumination, as the nd2 library's OME export maps them (laserScanConfocal: "
        "LaserScanningConfocalMicroscopy, fluorescence alone: WideField; fluorescence: "
        "Fluorescence and Epifluorescence; brightfield: Brightfield and Transmitted...)",
    }
)


class Nd2Adapter:
    """Nikon ND2 via the nd2 library: attributes, loops, metadata and text info only."""

    info = AdapterInfo(
        name="nd2",
        title="Nikon ND2",
        version="1.0.0",
        stability="beta",
        formats=(
            FormatSpec(
                name="Nikon ND2",
                extensions=(".nd2",),
                magic="0x0ABECEDA at offset 0 (legacy: the JPEG 2000 signature and .nd2)",
                variants=("NIS-Elements 4+ (v2, v3)", "legacy JPEG 2000 (v1)"),
            ),
        ),
        fields=_FIELDS,
        samples=("nd2/cluster.nd2",),
        requires=("nd2",),
        extra="nd2",
    )

    def claim(self, probe: FileProbe, reader: Reader) -> Claim | None:
        modern = probe.head.startswith(MAGIC)
        legacy = probe.head.startswith(JP2_MAGIC) and probe.suffix == ".nd2"
        if not (modern or legacy):
            return None
        return Claim(group_key=f"nd2:{os.path.normpath(probe.path)}", confidence=0.9)

    def extract(self, draft: Draft, reader: Reader) -> AdapterOutput:
        # nd2 (and numpy, ome-types' models) load on first use, only where ND2 files arrive
        from acqharvest.adapters.nd2.reader import read_nd2

        return read_nd2(draft.primary, reader)
