"""Reading one Zarr store for the OME-Zarr adapter: its JSON metadata (each file read once,
every one checked whole), the layout (image, plate, well, bioformats2raw), the first image's
multiscales, the OME-XML of bioformats2raw, and the check that no chunk is cut short.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from acqharvest.adapter_api import AdapterError, AdapterOutput, Draft, Reader
from acqharvest.adapters.safexml import MAX_BYTES, XmlBroken, XmlRefused, local
from acqharvest.adapters.tiff import ome
from acqharvest.adapters.zarr.arrays import Array, bits_of_name, numpy_dtype, parse_shape

#: JSON metadata larger than this is refused (a consolidated ``.zmetadata`` of a big
#: plate is a few MiB).
JSON_CAP = 16 * 1024 * 1024
_JSON_NAMES = frozenset({".zattrs", ".zgroup", ".zarray", ".zmetadata", "zarr.json"})
_BLOSC_HEADER = 16

#: NGFF axis units (UDUNITS-2 names) as the OME symbols ``ome.to_um`` knows.
_LENGTH_UNITS = {
    "angstrom": "Å",
    "femtometer": "fm",
    "picometer": "pm",
    "nanometer": "nm",
    "micrometer": "µm",
    "millimeter": "mm",
    "centimeter": "cm",
    "decimeter": "dm",
    "meter": "m",
    "decameter": "dam",
    "hectometer": "hm",
    "kilometer": "km",
    "inch": "in",
    "foot": "ft",
    "yard": "yd",
}
_AXES = ("x", "y", "z", "c", "t")


class Store:
    """One extraction: the store's files by their path below it, each JSON read once."""

    def __init__(self, root: Path, files: Mapping[str, Path], reader: Reader) -> None:
        self.root = root
        self.files = files
        self.reader = reader
        self.notes: list[str] = []
        self._json: dict[str, dict[str, Any]] = {}

    def read(self, draft: Draft, outside: list[str]) -> AdapterOutput:
        self.notes.extend(outside)
        for name in sorted(self.files):
            if posixpath.basename(name) in _JSON_NAMES:
                self.json(name)  # every metadata file must be whole, needed or not
        v3 = "zarr.json" in self.files
        if not v3 and not {".zattrs", ".zgroup"} & set(self.files):
            # Released at the group timeout without its root metadata: listed, not lost;
            # the metadata arriving later gives a package of the whole store.
            self._check_chunks()
            return AdapterOutput(
                format="Zarr",
                metadata={"instances": len(self.files)},
                warnings=(
                    *self.notes,
                    f"{self.root.name}: its root metadata (.zattrs, .zgroup or zarr.json) is "
                    "not in the acquisition; the files are listed only",
                ),
            )
        attrs = self.attributes("")
        image_dir, layout, extra = self._image(attrs)
        metadata: dict[str, Any] = {}
        original: dict[str, Any] = {"zarr_format": 3 if v3 else 2, "layout": layout}
        xml = self._ome_xml(metadata, original) if layout == "bioformats2raw" else None
        if image_dir is not None:
            self._multiscales(image_dir, metadata, original)
        for section, values in extra.items():
            metadata[section] = {**metadata.get(section, {}), **values}
        self._check_chunks()
        metadata["instances"] = len(self.files)
        if xml is not None:
            ome.keep_xml(
                xml, draft.original_metadata_max_bytes, original, self.notes, "OME/METADATA.ome.xml"
            )
        return AdapterOutput(
            format="OME-Zarr" if image_dir is not None else "Zarr",
            metadata=metadata,
            original_metadata=original,
            started=metadata.get("acquired"),
            warnings=tuple(self.notes),
        )

    # ------------------------------------------------------------------ JSON

    def json(self, name: str) -> dict[str, Any] | None:
        """The JSON object in the store file ``name``, None when it is not in the draft."""
        if name in self._json:
            return self._json[name]
        path = self.files.get(name)
        if path is None:
            return None
        with self.reader.open(path) as handle:
            data = handle.read(JSON_CAP + 1)
        if len(data) > JSON_CAP:
            raise AdapterError(path, f"Zarr metadata over {JSON_CAP} bytes; refused")
        try:
            value = json.loads(data)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise AdapterError(path, f"Zarr metadata is not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise AdapterError(
                path, f"Zarr metadata is a JSON {type(value).__name__}, not an object"
            )
        self._json[name] = value
        return value

    def attributes(self, folder: str) -> dict[str, Any]:
        """The attributes of the group at ``folder`` (``""``: the root), v2 or v3."""
        v3 = self.json(_join(folder, "zarr.json"))
        if v3 is not None:
            attributes = v3.get("attributes", {})
            return attributes if isinstance(attributes, dict) else {}
        return self.json(_join(folder, ".zattrs")) or {}

    def array(self, folder: str) -> Array | None:
        """The array whose metadata is at ``folder``, None when there is none."""
        v3 = self.json(_join(folder, "zarr.json"))
        if v3 is not None and v3.get("node_type") == "array":
            where = self.files[_join(folder, "zarr.json")]
            grid = v3.get("chunk_grid", {})
            config = grid.get("configuration", {}) if isinstance(grid, dict) else {}
            chunks = config.get("chunk_shape") if isinstance(config, dict) else None
            names = [c.get("name") for c in _list(v3.get("codecs")) if isinstance(c, dict)]
            compressors = [n for n in names if n not in ("bytes", "transpose", "crc32c")]
            codec = "none" if not compressors else str(compressors[0])
            dtype = v3.get("data_type")
            return Array(
                parse_shape(where, v3.get("shape")),
                parse_shape(where, chunks) if chunks is not None else None,
                str(dtype),
                bits_of_name(dtype),
                codec,
            )
        v2 = self.json(_join(folder, ".zarray"))
        if v2 is None:
            return None
        where = self.files[_join(folder, ".zarray")]
        compressor = v2.get("compressor")
        codec = "none" if compressor is None else str(_get(compressor, "id"))
        if v2.get("filters"):
            codec = "filtered"  # the stored size no longer follows from the shape
        dtype = v2.get("dtype")
        name, bits = numpy_dtype(dtype)
        return Array(
            parse_shape(where, v2.get("shape")),
            parse_shape(where, v2.get("chunks")) if v2.get("chunks") is not None else None,
            name or str(dtype),
            bits,
            codec,
        )

    # ------------------------------------------------------------------ layouts

    def _image(self, attrs: dict[str, Any]) -> tuple[str | None, str, dict[str, Any]]:
        """(folder of the image read, layout name, layout fields) from the root attributes."""
        ngff = _ome(attrs)
        if "multiscales" in ngff:
            return "", "image", {}
        if "plate" in ngff:
            return self._plate(_get(ngff, "plate"))
        if "well" in ngff:
            images = _list(_get(_get(ngff, "well"), "images"))
            first = _path_of(images[0]) if images else None
            return first, "well", {"image": {"series": len(images)}} if images else {}
        if "bioformats2raw.layout" in ngff:
            series = _list(_get(self.attributes("OME"), "series"))
            names = [s for s in series if isinstance(s, str)] or sorted(
                {n.split("/", 1)[0] for n in self.files if n.split("/", 1)[0].isdigit()}, key=int
            )
            if not names:
                self.notes.append("bioformats2raw layout without any series")
                return None, "bioformats2raw", {}
            return names[0], "bioformats2raw", {"image": {"series": len(names)}}
        self.notes.append(
            f"{self.root.name}: no OME-NGFF metadata (multiscales, plate, well or "
            "bioformats2raw.layout) in the root attributes; the files are listed only"
        )
        return None, "zarr", {}

    def _plate(self, plate: Any) -> tuple[str | None, str, dict[str, Any]]:
        wells = [w for w in map(_path_of, _list(_get(plate, "wells"))) if w]
        fields: dict[str, Any] = {
            "name": _get(plate, "name"),
            "rows": len(_list(_get(plate, "rows"))),
            "columns": len(_list(_get(plate, "columns"))),
            "wells": len(wells),
        }
        images = 0
        first: str | None = None
        for well in wells:
            well_images = _list(_get(_get(_ome(self.attributes(well)), "well"), "images"))
            listed = [i for i in map(_path_of, well_images) if i]
            images += len(listed)
            if first is None and listed:
                first = f"{well}/{listed[0]}"
                fields["fields"] = len(listed)
        count = _get(plate, "field_count")
        if isinstance(count, int) and not isinstance(count, bool) and count > 0:
            fields["fields"] = count
        layout: dict[str, Any] = {"plate": {k: v for k, v in fields.items() if v not in (None, "")}}
        if images:
            layout["image"] = {"series": images}
        if first is None:
            self.notes.append("plate: no well with an image in the acquisition")
        return first, "plate", layout

    # ------------------------------------------------------------------ the image

    def _multiscales(self, folder: str, metadata: dict[str, Any], original: dict[str, Any]) -> None:
        where = self.files.get(_join(folder, "zarr.json")) or self.files.get(
            _join(folder, ".zattrs")
        )
        ngff = _ome(self.attributes(folder))
        multiscales = _list(ngff.get("multiscales"))
        if not multiscales or not isinstance(multiscales[0], dict):
            raise AdapterError(
                where or self.root / folder, f"image {folder or '.'}: no multiscales metadata"
            )
        ms = multiscales[0]
        version = ngff.get("version") or ms.get("version")
        if isinstance(version, str):
            original["ngff_version"] = version
        axes = _axes(ms.get("axes"))
        datasets = _list(ms.get("datasets"))
        level0 = datasets[0] if datasets and isinstance(datasets[0], dict) else {}
        path = level0.get("path")
        if not isinstance(path, str):
            raise AdapterError(where or self.root, "multiscales: the first dataset has no path")
        array_dir = _join(folder, path)
        array = self.array(array_dir)
        if array is None:
            raise AdapterError(
                where or self.root,
                f"multiscales dataset {array_dir}: no array metadata (.zarray or zarr.json) "
                "in the acquisition",
            )
        if len(array.shape) != len(axes):
            raise AdapterError(
                where or self.root,
                f"multiscales names {len(axes)} axes, but {array_dir} has {len(array.shape)} "
                "dimensions",
            )
        sizes = {name: size for (name, _, _), size in zip(axes, array.shape, strict=True)}
        image = dict(metadata.get("image", {}))
        for axis in _AXES:
            if axis in sizes:
                image[f"size_{axis}"] = sizes[axis]
        names = [name for name, _, _ in axes]
        if sorted(names) == sorted(_AXES):
            image["dimension_order"] = "".join(reversed(names)).upper()
        if array.bits is not None:
            image["bits"] = array.bits
        image["pixel_type"] = array.dtype
        self._agree(metadata.get("image", {}), image, "image")
        metadata["image"] = image
        scale = _scale(level0, len(axes), where or self.root)
        overall = _scale(ms, len(axes), where or self.root)
        pixel: dict[str, float] = {}
        for index, (name, kind, unit) in enumerate(axes):
            if name not in ("x", "y", "z") or kind not in (None, "space"):
                continue
            factor = scale[index] * overall[index]
            um = ome.to_um(factor, _LENGTH_UNITS.get(unit or ""))
            if unit not in _LENGTH_UNITS:
                self.notes.append(
                    f"axis {name}: unit {unit!r} is not a length unit NGFF names; its pixel "
                    "size is not reported"
                )
            elif um is not None:
                pixel[name] = um
        self._agree(metadata.get("pixel_size_um", {}), pixel, "pixel_size_um")
        if pixel:
            metadata["pixel_size_um"] = {**metadata.get("pixel_size_um", {}), **pixel}
        labels = [_get(c, "label") for c in _list(_get(ngff.get("omero"), "channels"))]
        channels = [dict(c) for c in metadata.get("channels", [])]
        for index, label in enumerate(labels):
            if index == len(channels):
                channels.append({})
            if isinstance(label, str) and label.strip():
                channels[index].setdefault("name", label)
        if any(channels):
            metadata["channels"] = channels
        original.update(
            {
                "image": folder or ".",
                "axes": [
                    {k: v for k, v in zip(("name", "type", "unit"), a, strict=True) if v}
                    for a in axes
                ],
                "datasets": [d.get("path") for d in datasets if isinstance(d, dict)],
                "level0": {
                    "path": array_dir,
                    "shape": list(array.shape),
                    "chunks": None if array.chunks is None else list(array.chunks),
                    "dtype": array.dtype,
                    "codec": array.codec,
                    "scale": scale,
                },
            }
        )
        if ngff.get("omero") is not None:
            original["omero"] = ngff["omero"]

    def _agree(self, xml: Mapping[str, Any], ngff: Mapping[str, Any], section: str) -> None:
        """Note where the OME-XML and the NGFF metadata disagree (NGFF values are kept)."""
        for key, value in ngff.items():
            theirs = xml.get(key)
            if theirs is None or key in ("pixel_type", "bits"):
                continue
            same = (
                math.isclose(theirs, value, rel_tol=1e-6)
                if isinstance(value, float) and isinstance(theirs, (int, float))
                else theirs == value
            )
            if not same:
                self.notes.append(
                    f"{section}.{key}: the OME-XML says {theirs}, the NGFF metadata {value}; "
                    "the NGFF value is reported"
                )

    def _ome_xml(self, metadata: dict[str, Any], original: dict[str, Any]) -> str | None:
        """Normalized fields from ``OME/METADATA.ome.xml`` (bioformats2raw), if present."""
        path = self.files.get("OME/METADATA.ome.xml")
        if path is None:
            return None
        with self.reader.open(path) as handle:
            data = handle.read(MAX_BYTES + 1)
        try:
            root = ome.parse_xml(data)
        except XmlRefused as exc:
            self.notes.append(f"OME/METADATA.ome.xml not read: {exc}")
            return None
        except XmlBroken as exc:
            raise AdapterError(path, f"OME-XML does not parse (cut short?): {exc}") from exc
        if local(root.tag) != "OME":
            self.notes.append(f"OME/METADATA.ome.xml: the root element is {local(root.tag)}")
            return None
        fields, summary, notes = ome.normalized(root)
        metadata.update(fields)
        original.update(summary)
        self.notes.extend(f"OME/METADATA.ome.xml: {note}" for note in notes)
        return data.decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ chunks

    def _check_chunks(self) -> None:
        """Each chunk whose stored size the format fixes must have it: none cut short."""
        arrays: dict[str, Array | None] = {}
        for name in sorted(self.files):
            if posixpath.basename(name) in _JSON_NAMES or name.startswith("OME/"):
                continue
            folder = posixpath.dirname(name)
            array = None
            while True:
                if folder not in arrays:
                    arrays[folder] = self.array(folder)
                array = arrays[folder]
                if array is not None or not folder:
                    break
                folder = posixpath.dirname(folder)
            if array is not None:
                self._check_chunk(self.files[name], array)

    def _check_chunk(self, path: Path, array: Array) -> None:
        with self.reader.open(path) as handle:
            head = handle.read(_BLOSC_HEADER)
            size = int(handle.seek(0, os.SEEK_END))
        if array.codec == "blosc":
            if len(head) < _BLOSC_HEADER:
                raise AdapterError(path, f"truncated: {size} bytes, shorter than a Blosc header")
            cbytes = struct.unpack_from("<I", head, 12)[0]
            if cbytes != size:
                raise AdapterError(
                    path, f"truncated: its Blosc header says {cbytes} bytes, the file has {size}"
                )
        elif array.codec == "none" and array.chunks is not None and array.bits:
            expected = math.prod(array.chunks) * array.bits // 8
            if size != expected:
                raise AdapterError(
                    path,
                    f"truncated: an uncompressed chunk of {array.chunks} holds {expected} "
                    f"bytes, the file has {size}",
                )


def _join(folder: str, name: str) -> str:
    return posixpath.join(folder, name) if folder else name


def _ome(attrs: Any) -> dict[str, Any]:
    """The NGFF attributes: under ``ome`` from 0.5 on, at the top before."""
    if not isinstance(attrs, dict):
        return {}
    nested = attrs.get("ome")
    return nested if isinstance(nested, dict) else attrs


def _get(mapping: Any, key: str) -> Any:
    return mapping.get(key) if isinstance(mapping, dict) else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _path_of(item: Any) -> str | None:
    path = _get(item, "path")
    if isinstance(path, str) and path and ".." not in path.split("/"):
        return path.strip("/")
    return None


def _axes(value: Any) -> list[tuple[str, str | None, str | None]]:
    """(name, type, unit) of each axis; NGFF 0.3 lists names, 0.1/0.2 imply t, c, z, y, x."""
    axes: list[tuple[str, str | None, str | None]] = []
    if value is None:
        return [(name, None, None) for name in ("t", "c", "z", "y", "x")]
    for axis in _list(value):
        if isinstance(axis, str):
            axes.append((axis.lower(), None, None))
        elif isinstance(axis, dict) and isinstance(axis.get("name"), str):
            kind, unit = axis.get("type"), axis.get("unit")
            axes.append(
                (
                    axis["name"].lower(),
                    kind if isinstance(kind, str) else None,
                    unit if isinstance(unit, str) else None,
                )
            )
    return axes


def _scale(node: Mapping[str, Any], dimensions: int, where: Path) -> list[float]:
    """The ``scale`` coordinate transform of a dataset (or multiscales), ones when absent."""
    for transform in _list(node.get("coordinateTransformations")):
        if _get(transform, "type") != "scale":
            continue
        scale = _get(transform, "scale")
        if (
            not isinstance(scale, list)
            or len(scale) != dimensions
            or not all(
                isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s)
                for s in scale
            )
        ):
            raise AdapterError(where, f"scale {scale!r} is not {dimensions} finite numbers")
        return [float(s) for s in scale]
    return [1.0] * dimensions
