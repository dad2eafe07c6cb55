"""OME-Zarr adapter: a ``.zarr`` folder is one acquisition, read from its JSON metadata.

Formats and variants: OME-NGFF 0.1 to 0.4 in Zarr v2 (``.zgroup``, ``.zattrs``,
``.zarray``) and NGFF 0.5 in Zarr v3 (``zarr.json``, the NGFF attributes under ``ome``);
four layouts: an image (``multiscales`` at the root), a plate (``plate``: the first
well's first field is read), a well (``well``), and bioformats2raw (``bioformats2raw.layout``:
the series listed in ``OME/.zattrs``, the first one read, and the OME-XML in
``OME/METADATA.ome.xml`` mapped as the TIFF adapter maps OME-XML).

Grouping: every file under the outermost folder whose name ends ``.zarr`` is claimed with
one group key and ``Claim.tree`` naming that folder, so the store is one acquisition and
one package, complete when its root metadata is there and the whole tree has been quiet;
no chunk is ever packaged alone. The root metadata (``.zattrs``, ``.zgroup``,
``zarr.json``) is the primary; every other file is a member.

Fields filled: image size per NGFF axis (x, y, z, c, t) from the shape of the first
multiscales level, bits and pixel type from its dtype, the dimension order when all five
axes are there, pixel size in micrometres from that level's ``scale`` transform (times the
multiscales-wide one) in its axis unit, channel names from ``omero``, the plate layout,
the number of images (series, or fields over all wells), and what the OME-XML adds
(acquisition time, instrument, objective, detector, channel wavelengths).

Deliberately not read: chunks, beyond the first 16 bytes of each (a Blosc chunk's header
states its compressed size, which must be the file's; an uncompressed chunk must hold the
whole chunk shape): that is the check that no chunk is cut short. Every JSON metadata
file of the store is parsed (a cut-short one fails the extraction naming it). Levels
other than the first, labels and every field but the first of a plate are not read.
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
from acqharvest.adapters.tiff import ome
from acqharvest.adapters.zarr.store import Store

__all__ = ["ZarrAdapter", "store_of"]

#: files at the store's root that make it a Zarr store; the first found is the primary.
ROOT_METADATA = (".zattrs", ".zgroup", "zarr.json")
#: Being inside a store outranks what a file says it is: a CZI, a NIfTI or a TIFF copied
#: into a ``.zarr`` folder is a part of the store, never an acquisition of its own. So the
#: highest confidence; the file-format adapters built in claim at 0.9 at most.
CONFIDENCE = 1.0

_FIELDS = normalized_fields(
    {
        "image.size_x": "shape of the first multiscales dataset along the axis named x",
        "image.size_y": "the same along y",
        "image.size_z": "the same along z",
        "image.size_c": "the same along c",
        "image.size_t": "the same along t",
        "image.bits": "its dtype (`.zarray` dtype, `zarr.json` data_type) in bits",
        "image.pixel_type": "its dtype, as uint8, int16, float32...",
        "image.dimension_order": "the NGFF axes reversed, when they are exactly t, c, z, y, x "
        "in some order",
        "image.series": "bioformats2raw: the series in `OME/.zattrs`; a plate: the fields "
        "of every well; a well: its images",
        "pixel_size_um.x": "the first dataset's `scale` transform along x, times the "
        "multiscales-wide `scale`, in the axis unit (micrometer, nanometer, millimeter...); "
        "not reported for an axis without a length unit",
        "pixel_size_um.y": "the same along y",
        "pixel_size_um.z": "the same along z",
        "channels": "`omero` channels' label, merged by position with the channels of the "
        f"OME-XML (bioformats2raw): {ome.CHANNEL_SOURCES}",
        "plate.name": "`plate` name",
        "plate.rows": "number of `plate` rows",
        "plate.columns": "number of `plate` columns",
        "plate.wells": "number of `plate` wells",
        "plate.fields": "`plate` field_count, else the images of the first well",
        "acquired": "OME-XML Image AcquisitionDate (bioformats2raw)",
        "instrument_reported.manufacturer": "OME-XML Microscope Manufacturer",
        "instrument_reported.model": "OME-XML Microscope Model",
        "instrument_reported.serial_number": "OME-XML Microscope SerialNumber",
        "instrument_reported.type": "OME-XML Microscope Type",
        "objective.model": "OME-XML Objective",
        "objective.manufacturer": "OME-XML Objective Manufacturer",
        "objective.magnification": "OME-XML Objective NominalMagnification",
        "objective.na": "OME-XML Objective LensNA",
        "objective.immersion": "OME-XML Objective Immersion",
        "detector.model": "OME-XML Detector",
        "detector.manufacturer": "OME-XML Detector Manufacturer",
        "detector.type": "OME-XML Detector Type",
        "operator": "OME-XML Experimenter",
        "instances": "files in the store",
        **{key: f"{source} (bioformats2raw)" for key, source in ome.NBO_SOURCES.items()},
    }
)


def store_of(path: Path) -> Path | None:
    """The outermost folder above ``path`` whose name ends ``.zarr``, if any.

    Outermost: a plate's wells or an image's labels may be stores of their own, but the
    acquisition is the whole tree.
    """
    for parent in reversed(path.parents):
        if parent.name.lower().endswith(".zarr"):
            return parent
    return None


def _key(store: Path) -> str:
    return f"zarr:{os.path.normpath(store)}"


class ZarrAdapter:
    """OME-Zarr stores (NGFF 0.1-0.5, Zarr v2 and v3), from their JSON metadata."""

    info = AdapterInfo(
        name="zarr",
        title="OME-Zarr (OME-NGFF)",
        version="1.0.0",
        stability="beta",
        formats=(
            FormatSpec(
                name="OME-Zarr",
                extensions=(".zarr", ".ome.zarr"),
                magic="a folder named *.zarr holding .zattrs/.zgroup (Zarr v2) or zarr.json (v3)",
                variants=(
                    "NGFF 0.4 / Zarr v2",
                    "NGFF 0.5 / Zarr v3",
                    "image",
                    "plate",
                    "well",
                    "bioformats2raw.layout 3",
                ),
            ),
        ),
        fields=_FIELDS,
        # the store's JSON metadata and bioformats2raw's OME-XML; chunks are binary
        media_types={
            **dict.fromkeys(
                (".zattrs", ".zgroup", ".zarray", ".zmetadata", ".json"), "application/json"
            ),
            ".xml": "application/xml",
        },
        samples=(
            "ome-zarr/xyz_8bit__mitotic_plate_calibrated.ome.zarr/.zattrs",
            "ome-zarr/xyz_8bit__mitotic_plate_calibrated.ome.zarr/0/0/0/0/0/0/0",
        ),
    )

    def claim(self, probe: FileProbe, reader: Reader) -> Claim | None:
        store = store_of(probe.path)
        if store is None:
            return None
        at_root = probe.path.parent == store and probe.path.name in ROOT_METADATA
        return Claim(
            group_key=_key(store),
            role="primary" if at_root else "member",
            confidence=CONFIDENCE,
            tree=Path(os.path.relpath(store, probe.path.parent)).as_posix(),
        )

    def extract(self, draft: Draft, reader: Reader) -> AdapterOutput:
        store = store_of(draft.primary) or draft.primary.parent
        files: dict[str, Path] = {}
        outside: list[str] = []
        for member in draft.members:
            if member.is_relative_to(store):
                files[member.relative_to(store).as_posix()] = member
            else:
                outside.append(f"{member}: not under the store {store.name}; listed only")
        return Store(store, files, reader).read(draft, outside)
