"""Leica LIF adapter: the XML header of a LAS X / LAS AF project file, read directly.

It reads LOF files (one image exported by LAS X) too: the same XML ``Element`` after the
image memory rather than before named memory blocks; the one image is the one series.

Formats and variants: LIF files (version 1 and 2 memory blocks) written by LAS AF and
LAS X, holding any number of image series in nested folders: XY, XZ, XYZ, time series,
lambda (emission or excitation) sweeps and tile scans, confocal
(``ATLConfocalSettingDefinition``) or camera (``ATLCameraSettingDefinition``) settings.
Each ``.lif`` file is one acquisition; every series of it is listed in ``series``, and
the top-level ``image``, ``pixel_size_um``, instrument, objective, detectors and laser
lines are those of the first series.

No optional reader is needed: the header is a 0x70 magic, a length, and the XML as
UTF-16, so it is read here through the agent's read-only reader and parsed with the
adapters' shared ``safexml`` (DOCTYPE refused, depth and size capped). readlif, which
opens the path itself and parses without those limits, serves only to cross-check
values in the tests.

Fields filled and their XML sources: this folder's README.md (checked by a test).
``original_metadata`` keeps, per series, its dimensions, channel descriptions, the
HardwareSetting attachment's attributes and its setting definition's attributes.

Deliberately not read: the memory blocks (pixel data), whose 20-odd-byte headers are
walked to check the file is whole: every block must end inside the file and every block
the XML declares (``Memory Size`` above 0) must be there with that size.

Proved by the corpus's two LAS X 3.5 files: ``lif/xz-example.lif`` (three series: XZ over
time, XZY, XZ) and ``lif/LeicaLASX_wavelength-sweep_example.lif`` (three lambda sweeps,
one over Z and time). No LOF is in the corpus: LOF reading is proved on files written by
the tests to the layout Bio-Formats' LOFReader and Leica's readers document.
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
from acqharvest.adapters.lif.header import LOF_TYPE, read_lif

__all__ = ["LifAdapter"]

MAGIC = b"\x70\x00\x00\x00"
#: the XML's root element as the header's first characters (UTF-16 little-endian)
ROOT = "<LMSDataContainerHeader".encode("utf-16-le")
#: a LOF's first text block: its type, not the XML (that follows the image memory)
LOF = LOF_TYPE.encode("utf-16-le")

_FIELDS = normalized_fields(
    {
        "image.size_x": "the first series' DimensionDescription DimID 1 NumberOfElements",
        "image.size_y": "DimID 2",
        "image.size_z": "DimID 3",
        "image.size_t": "DimID 4",
        "image.size_c": "number of ChannelDescription elements",
        "image.tiles": "DimID 10 (tile scan)",
        "image.bits": "the first ChannelDescription's Resolution",
        "pixel_size_um.x": "DimID 1 Length ÷ (NumberOfElements - 1), in its Unit (m)",
        "pixel_size_um.y": "DimID 2, as x",
        "pixel_size_um.z": "DimID 3, as x",
        "series": "every Element with Data/Image, in file order: name (the folder path "
        "below the project), image and pixel_size_um as above, acquired",
        "acquired": "the first series' first TimeStampList entry (FILETIME, UTC), else "
        "its first TimeStamp HighInteger/LowInteger",
        "modality": "HardwareSetting DataSourceTypeName (Confocal, Camera, ...)",
        "instrument_reported.model": "HardwareSetting SystemTypeName (TCS SP8, ...)",
        "instrument_reported.software": "HardwareSetting Software before its version",
        "instrument_reported.software_version": "HardwareSetting Software, the version",
        "objective.model": "the setting definition's ObjectiveName",
        "objective.magnification": "the setting definition's Magnification",
        "objective.na": "the setting definition's NumericalAperture",
        "objective.immersion": "the setting definition's Immersion",
        "detectors": "the setting definition's DetectorList/Detector with IsActive 1: "
        "Name as model, Type as type",
        "laser_lines_nm": "LaserLineSetting LaserLine with IntensityDev above 0",
        "channels": "one per ChannelDescription when as many detectors are active: the "
        "detector's ChannelName as name, the dye of its Spectro MultiBand as fluor, its Gain "
        "and Offset as detector_settings, the setting definition's Pinhole (m) as pinhole_um",
        "image.time_increment_s": "the setting definition's CycleTime (s), when the first "
        "series has more than one time point",
    }
)


class LifAdapter:
    """Leica LIF and LOF: the XML and the memory block headers, never a block's data."""

    info = AdapterInfo(
        name="lif",
        title="Leica LIF / LOF",
        version="1.1.0",
        stability="beta",
        formats=(
            FormatSpec(
                name="Leica LIF",
                extensions=(".lif",),
                magic="0x70 0 0 0, length, 0x2A, then <LMSDataContainerHeader in UTF-16",
                variants=("LAS X", "LAS AF", "memory blocks v1 and v2"),
            ),
            FormatSpec(
                name="Leica LOF",
                extensions=(".lof",),
                magic="0x70 0 0 0, length, 0x2A, then LMS_Object_File in UTF-16",
                variants=("LAS X export", "XML with LMSDataContainerHeader or bare Data"),
            ),
        ),
        fields=_FIELDS,
        samples=("lif/xz-example.lif", "lif/LeicaLASX_wavelength-sweep_example.lif"),
    )

    def claim(self, probe: FileProbe, reader: Reader) -> Claim | None:
        head = probe.head
        if not (head.startswith(MAGIC) and head[8:9] == b"\x2a"):
            return None
        if not (ROOT in head[13:1024] or head[13:].startswith(LOF)):
            return None
        return Claim(group_key=f"lif:{os.path.normpath(probe.path)}", confidence=0.9)

    def extract(self, draft: Draft, reader: Reader) -> AdapterOutput:
        return read_lif(draft.primary, reader)
