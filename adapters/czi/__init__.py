"""Zeiss CZI adapter: the metadata segment's XML only, through czifile.

Formats and variants: ZISRAW files (CZI 1.0) as ZEN blue and black write them: single
images, Z-stacks, time series, multi-channel, multi-scene and tiled (mosaic) acquisitions.
Each ``.czi`` file is one acquisition. The file header (``ZISRAWFILE`` at offset 0) is
checked by ``claim`` from the head bytes alone, so CZI files are claimed, grouped and
packaged even where czifile is not installed (``acqharvest[czi]``); extraction then only
lists them with checksums and a warning naming the extra.

Fields filled: image sizes (X Y Z C T, scenes, mosaic tiles), pixel type and bits, pixel
size x/y/z (``Scaling/Items/Distance``, metres), acquisition time, instrument as reported
(microscope name and type, ZEN application and version), objective (model, maker,
magnification, NA, immersion) chosen by the image's ObjectiveRef, detectors (the first
channel's as ``detector``), channels (name, fluor, excitation/emission, exposure,
illumination type, contrast method), the acquisition mode as ``modality``, and the
document's user name as ``operator``. The element-to-field table is in this folder's
README.md (the ``source`` of each field below, checked by a test).
``original_metadata`` holds the file header and the ``Information`` and ``Scaling``
sections of the XML as nested mappings.

Deliberately not read: subblocks (pixel data), the subblock and attachment directories,
attachments (thumbnails, time stamps, the label and preview images) and the
``Experiment``, ``HardwareSetting``, ``DisplaySetting`` and ``Layers`` sections. The
truncation check walks the segment headers (32 bytes each) from the file header to the
end of the file: a segment that reaches past the end is an ``AdapterError``.

Proved by the five ``czi/`` files of the corpus: a Z-stack (``testCziZStack4.czi``:
voxel size, objective, detector, channels), two scenes with mosaic tiles
(``testCziFileTwoScenesTiny.czi``), three channels over scenes (``testCziBSCZY0Tiny.czi``)
and an RGB image without instrument or date (``testCziYX0Tiny.czi``).
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

__all__ = ["MAGIC", "CziAdapter"]

#: the file header segment's id, at offset 0 of every CZI file (and of each file part)
MAGIC = b"ZISRAWFILE"

_FIELDS = normalized_fields(
    {
        "image.size_x": "Information/Image/SizeX",
        "image.size_y": "Information/Image/SizeY",
        "image.size_z": "Information/Image/SizeZ",
        "image.size_c": "Information/Image/SizeC",
        "image.size_t": "Information/Image/SizeT",
        "image.scenes": "Information/Image/SizeS",
        "image.tiles": "Information/Image/SizeM (tiles per scene)",
        "image.pixel_type": "Information/Image/PixelType, else the first channel's (Gray8, "
        "Gray16, Gray32Float, Bgr24, Bgr48... as uint8, uint16, float32...)",
        "image.bits": "Information/Image/ComponentBitCount, else the first channel's",
        "image.samples_per_pixel": "3 or 4 for a Bgr or Bgra PixelType",
        "pixel_size_um.x": "Scaling/Items/Distance[@Id='X']/Value (metres)",
        "pixel_size_um.y": "Scaling/Items/Distance[@Id='Y']/Value (metres)",
        "pixel_size_um.z": "Scaling/Items/Distance[@Id='Z']/Value (metres)",
        "acquired": "Information/Image/AcquisitionDateAndTime, else "
        "Image/Dimensions/T/StartTime (not the year-1 placeholder)",
        "modality": "the first channel's AcquisitionMode (WideField, "
        "LaserScanningConfocalMicroscopy, ...)",
        "operator": "Information/Document/UserName, else Information/User/UserName",
        "instrument_reported.manufacturer": "Microscope/Manufacturer/Manufacturer",
        "instrument_reported.model": "the Microscope chosen by Image/MicroscopeRef (else the "
        "only one): its Manufacturer/Model, else its Name",
        "instrument_reported.serial_number": "Microscope/Manufacturer/SerialNumber",
        "instrument_reported.type": "Microscope/Type",
        "instrument_reported.software": "Information/Application/Name",
        "instrument_reported.software_version": "Information/Application/Version",
        "objective.model": "the Objective chosen by Image/ObjectiveSettings/ObjectiveRef (else "
        "the only one): Manufacturer/Model, else its Name",
        "objective.manufacturer": "Objective/Manufacturer/Manufacturer",
        "objective.magnification": "Objective/NominalMagnification",
        "objective.na": "Objective/LensNA",
        "objective.immersion": "Objective/Immersion, else Image/ObjectiveSettings/Medium",
        "detector.model": "the Detector of the first channel's DetectorSettings (else the "
        "first one): Manufacturer/Model, else its Name",
        "detector.manufacturer": "Detector/Manufacturer/Manufacturer",
        "detector.type": "Detector/Type",
        "detectors": "every Instrument/Detectors/Detector: model, manufacturer, type as above",
        "channels": "Image/Dimensions/Channels/Channel: @Name, Fluor, ExcitationWavelength, "
        "EmissionWavelength (nm), ExposureTime (ns, as s), IlluminationType as "
        "illumination, ContrastMethod as contrast_method, AcquisitionMode as "
        "acquisition_mode, DetectorSettings/Binning (`1,1` as `1x1`); light_source: the "
        "Instrument LightSource the first LightSourcesSettings/LightSourceSettings names "
        "(its LightSourceType child as type: Laser, Arc...; Manufacturer/Model, else Name, "
        "as model); filters: the FilterSet FilterSetRef names, its excitation and emission "
        "Filter's Manufacturer/Model (else Name) and TransmittanceRange CutIn, CutOut (nm)",
        "objective.working_distance_um": "Objective/WorkingDistance (µm)",
    }
)


class CziAdapter:
    """Zeiss CZI (ZISRAW) via czifile: the metadata segment's XML, never a subblock."""

    info = AdapterInfo(
        name="czi",
        title="Zeiss CZI",
        version="1.0.0",
        stability="beta",
        formats=(
            FormatSpec(
                name="Zeiss CZI",
                extensions=(".czi",),
                magic="ZISRAWFILE at offset 0",
                variants=("ZEN blue", "ZEN black", "multi-scene", "mosaic", "file part"),
            ),
        ),
        fields=_FIELDS,
        samples=(
            "czi/testCziZStack4.czi",
            "czi/testCziFileTwoScenesTiny.czi",
            "czi/testCziYX0Tiny.czi",
        ),
        requires=("czifile",),
        extra="czi",
    )

    def claim(self, probe: FileProbe, reader: Reader) -> Claim | None:
        if not probe.head.startswith(MAGIC):
            return None
        return Claim(group_key=f"czi:{os.path.normpath(probe.path)}", confidence=0.9)

    def extract(self, draft: Draft, reader: Reader) -> AdapterOutput:
        # czifile (and numpy) load on first use, only where CZI files arrive
        from acqharvest.adapters.czi.reader import read_czi

        return read_czi(Path(draft.primary), reader)
