"""The public, stable interface between acqharvest and format adapters.

This is the module a vendor reads. An adapter is any object with an ``info`` attribute
and ``claim`` and ``extract`` methods as described by :class:`Adapter`; there is no base
class to inherit. Adapters are found through the ``acqharvest.adapters`` entry-point
group (built-in adapters are registered the same way), loaded one at a time so that a
broken adapter never stops the others, and constructed with no arguments.

Contract in one paragraph: ``claim`` is cheap and decides whether a file is yours and
which acquisition it belongs to; ``extract`` reads headers only (never pixel data)
through the :class:`Reader` the agent passes, returns an :class:`AdapterOutput`, raises
:class:`AdapterError` naming the file for bad input (including any member of the
acquisition that is cut short: see :meth:`Adapter.extract`), keeps no global state,
writes nowhere, and is deterministic. De-identification is not the adapter's job: report what
the file says and the agent applies the site's policy; where a format keeps a patient's,
case's or specimen's identity in fields of its own (a slide scanner's file name, barcode or
scan date), name each such value as an :class:`Identifier` and the agent treats it as the
DICOM attribute that holds the same information.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import math
import re
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol, runtime_checkable

Stability = Literal["experimental", "beta", "stable"]
#: A file's part in its acquisition. ``primary``: the file ``extract`` reads first (a
#: single file, an OME-TIFF master or companion; the first by path is used when several
#: say so). ``member``: one of the acquisition's other data files (a DICOM instance, a
#: ``BinaryOnly`` OME-TIFF, an imzML's ``.ibd``, a chunk of a ``.zarr`` store); a group of
#: members alone that does not ``collect`` (or is a ``tree``) is never complete, as it waits
#: for its primary, and is packaged incomplete at its timeout, unless its acquisition was
#: packaged before (then a late file gives a new package with ``replaces``).
#: ``sidecar``: a non-image file that travels with the acquisition (a text settings or
#: log file); the agent treats it exactly like a member today (listed, hashed, drafted
#: after the primary), and the name is there so packages may later tell them apart.
Role = Literal["primary", "member", "sidecar"]

#: how many leading bytes of every file the agent reads before asking adapters to claim it.
HEAD_BYTES = 4096

#: the most bytes of a metadata document (an OME-XML) an adapter keeps whole in
#: ``original_metadata`` unless the agent says otherwise (:attr:`Draft.original_metadata_max_bytes`;
#: the site sets it with the ``original_metadata_max_bytes`` setting).
ORIGINAL_METADATA_MAX_BYTES = 1024 * 1024

#: the media type of a file no adapter names one for (RFC 2046: arbitrary binary data).
OCTET_STREAM = "application/octet-stream"

#: the ``hashlib`` names an adapter may ask for in :attr:`AdapterInfo.digests`: the
#: fixed-length ones every Python has. sha256 is not among them: the agent computes it of
#: every file anyway (the package checksum) and always hands it to ``extract``.
DIGEST_ALGORITHMS = frozenset(
    name
    for name in hashlib.algorithms_guaranteed
    if not name.startswith("shake_") and name != "sha256"
)


@dataclass(frozen=True, slots=True)
class FormatSpec:
    """One file format (or family of variants) an adapter reads."""

    name: str
    extensions: tuple[str, ...] = ()
    #: human-readable description of the magic bytes, e.g. ``"DICM at offset 128"``.
    magic: str = ""
    variants: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One normalized metadata field an adapter may emit (dotted key, e.g. ``image.size_x``)."""

    key: str
    #: one of ``string``, ``integer``, ``number``, ``datetime``, ``list``, ``boolean``.
    type: str
    unit: str | None = None
    #: what the field means, the same for every adapter.
    description: str = ""
    #: where this adapter reads it (a tag, element or XML path); shown in its README.
    source: str = ""


def _spec(key: str, type_: str, unit: str | None, description: str) -> FieldSpec:
    return FieldSpec(key=key, type=type_, unit=unit, description=description)


#: The normalized metadata vocabulary every package uses. An adapter fills the keys its
#: files hold, with these types and units; keys outside it are allowed when declared.
NORMALIZED_FIELDS: Mapping[str, FieldSpec] = {
    spec.key: spec
    for spec in (
        _spec("modality", "string", None, "DICOM modality code, or the imaging technique"),
        _spec("acquired", "datetime", None, "acquisition start, RFC 3339, offset when known"),
        _spec("operator", "string", None, "the person the file names as operator"),
        _spec("instrument_reported.manufacturer", "string", None, "instrument maker"),
        _spec("instrument_reported.model", "string", None, "instrument model name"),
        _spec("instrument_reported.serial_number", "string", None, "instrument serial"),
        _spec("instrument_reported.software", "string", None, "acquisition software name"),
        _spec("instrument_reported.software_version", "string", None, "its version"),
        _spec("instrument_reported.station_name", "string", None, "station or host name"),
        _spec("instrument_reported.type", "string", None, "instrument type, e.g. Inverted"),
        _spec("image.size_x", "integer", "px", "image width"),
        _spec("image.size_y", "integer", "px", "image height"),
        _spec("image.size_z", "integer", None, "number of focal planes or slices"),
        _spec("image.size_c", "integer", None, "number of channels"),
        _spec("image.size_t", "integer", None, "number of time points"),
        _spec("image.frames", "integer", None, "number of 2-D frames (pages) stored"),
        _spec("image.scenes", "integer", None, "number of scenes or XY stage positions"),
        _spec("image.tiles", "integer", None, "number of mosaic tiles (per scene)"),
        _spec("image.bits", "integer", "bit", "bits per sample"),
        _spec("image.pixel_type", "string", None, "e.g. uint8, uint16, int16, float32, bit"),
        _spec("image.dimension_order", "string", None, "OME dimension order, e.g. XYCZT"),
        _spec("image.samples_per_pixel", "integer", None, "samples per pixel (3 for RGB)"),
        _spec("image.photometric", "string", None, "photometric interpretation"),
        _spec("image.series", "integer", None, "images (series, fields) the acquisition holds"),
        _spec("image.time_increment_s", "number", "s", "time between time points in seconds"),
        _spec("planes.count", "integer", None, "planes (2-D images) the file describes"),
        _spec("planes.delta_t_s", "list", "s", "[first, last] plane time from the start"),
        _spec("planes.exposure_s", "list", "s", "[shortest, longest] plane exposure"),
        _spec("planes.position_x_um", "list", "um", "[lowest, highest] stage X of the planes"),
        _spec("planes.position_y_um", "list", "um", "[lowest, highest] stage Y of the planes"),
        _spec("planes.position_z_um", "list", "um", "[lowest, highest] stage Z of the planes"),
        _spec("specimen.plate", "string", None, "name of the plate the image is in"),
        _spec("specimen.well", "string", None, "the well, as row and column, e.g. B3"),
        _spec("specimen.field", "integer", None, "the field in its well, from 0"),
        _spec("specimen.stage_label", "string", None, "the stage position's name"),
        _spec("environment.temperature_c", "number", "°C", "temperature in degrees Celsius"),
        _spec("environment.co2_percent", "number", "%", "CO2 concentration in percent"),
        _spec("environment.humidity_percent", "number", "%", "relative humidity in percent"),
        _spec("environment.air_pressure_mbar", "number", "mbar", "air pressure in millibar"),
        _spec("pixel_size_um.x", "number", "um", "pixel width in micrometres"),
        _spec("pixel_size_um.y", "number", "um", "pixel height in micrometres"),
        _spec("pixel_size_um.z", "number", "um", "section spacing in micrometres"),
        _spec(
            "channels",
            "list",
            None,
            "one item per channel, with the keys of CHANNEL_FIELDS: name, wavelengths, fluor, "
            "exposure, illumination and contrast method, acquisition mode, pinhole, light "
            "source, detector settings and filters",
        ),
        _spec(
            "series",
            "list",
            None,
            "every image series of a multi-series file (a LIF), in file order: name, "
            "image (size_x/y/z/c/t, tiles), pixel_size_um (x/y/z)",
        ),
        _spec(
            "loops",
            "list",
            None,
            "acquisition loops, outermost first: type (time, z, xy), count, and "
            "period_s (time) or step_um (z) when the file gives them",
        ),
        _spec("laser_lines_nm", "list", "nm", "wavelengths of the laser lines switched on"),
        _spec("detectors", "list", None, "every detector the file lists: model, type"),
        _spec("objective.model", "string", None, "objective model"),
        _spec("objective.manufacturer", "string", None, "objective maker"),
        _spec("objective.magnification", "number", None, "nominal magnification"),
        _spec("objective.na", "number", None, "numerical aperture"),
        _spec("objective.immersion", "string", None, "immersion medium, e.g. Oil, Water, Air"),
        _spec("objective.correction", "string", None, "correction, e.g. PlanApo, PlanFluor"),
        _spec("objective.working_distance_um", "number", "um", "working distance, micrometres"),
        _spec("objective.infinity_corrected", "boolean", None, "corrected for infinity"),
        _spec("detector.model", "string", None, "detector model or name"),
        _spec("detector.manufacturer", "string", None, "detector maker"),
        _spec("detector.type", "string", None, "detector type, e.g. CCD, PMT, SE, BSE"),
        _spec("study_uid", "string", None, "DICOM StudyInstanceUID"),
        _spec("series_uid", "string", None, "DICOM SeriesInstanceUID"),
        _spec("series_description", "string", None, "DICOM SeriesDescription"),
        _spec("protocol_name", "string", None, "DICOM ProtocolName"),
        _spec("body_part", "string", None, "DICOM BodyPartExamined"),
        _spec("sop_class", "string", None, "DICOM SOP class, as its registered name"),
        _spec("transfer_syntax", "string", None, "DICOM transfer syntax, as its name"),
        _spec("magnetic_field_t", "number", "T", "MR field strength in tesla"),
        _spec("slice_thickness_mm", "number", "mm", "slice thickness in millimetres"),
        _spec("repetition_time_s", "number", "s", "time between volumes (TR) in seconds"),
        _spec("description", "string", None, "free-text description the file carries"),
        _spec("plate.name", "string", None, "multi-well plate name"),
        _spec("plate.rows", "integer", None, "plate rows"),
        _spec("plate.columns", "integer", None, "plate columns"),
        _spec("plate.wells", "integer", None, "wells imaged"),
        _spec("plate.fields", "integer", None, "fields (images) per well"),
        _spec("msi.spectra", "integer", None, "mass spectra in a mass spectrometry image"),
        _spec("msi.storage", "string", None, "spectra storage: continuous or processed"),
        _spec("msi.ion_source", "string", None, "ion source, e.g. MALDI, DESI"),
        _spec("msi.analyzer", "string", None, "mass analyzer, e.g. time-of-flight, orbitrap"),
        _spec(
            "msi.ibd_checksum_verified",
            "string",
            None,
            "the .ibd's checksum the imzML names matched its bytes: the algorithm (sha1, md5)",
        ),
        _spec("nifti.intent", "string", None, "NIfTI intent (statistic or data meaning)"),
        _spec("nifti.qform", "string", None, "NIfTI qform_code: what the qform maps to"),
        _spec("nifti.sform", "string", None, "NIfTI sform_code: what the sform maps to"),
        _spec("instances", "integer", None, "number of files in the acquisition"),
    )
}


#: The keys of one ``channels`` item, with their types and units; a dotted key is a key
#: of a nested mapping (``light_source.power_mw`` is ``{"light_source": {"power_mw": ..}}``).
CHANNEL_FIELDS: Mapping[str, FieldSpec] = {
    spec.key: spec
    for spec in (
        _spec("name", "string", None, "channel name"),
        _spec("excitation_nm", "number", "nm", "excitation wavelength in nanometres"),
        _spec("emission_nm", "number", "nm", "emission wavelength in nanometres"),
        _spec("fluor", "string", None, "fluorophore"),
        _spec("exposure_s", "number", "s", "exposure time in seconds"),
        _spec("illumination", "string", None, "illumination type, e.g. Epifluorescence"),
        _spec("contrast_method", "string", None, "contrast method, e.g. Fluorescence"),
        _spec("acquisition_mode", "string", None, "e.g. WideField, LaserScanningConfocal"),
        _spec("pinhole_um", "number", "um", "pinhole diameter in micrometres"),
        _spec("light_source.type", "string", None, "Laser, Arc, Filament, LightEmittingDiode"),
        _spec("light_source.model", "string", None, "the light source's model or name"),
        _spec("light_source.wavelength_nm", "number", "nm", "wavelength used, nanometres"),
        _spec("light_source.power_mw", "number", "mW", "the source's power in milliwatts"),
        _spec("light_source.attenuation_percent", "number", "%", "attenuation in percent"),
        _spec("detector_settings.gain", "number", None, "detector gain"),
        _spec("detector_settings.offset", "number", None, "detector offset"),
        _spec("detector_settings.binning", "string", None, "binning, e.g. 1x1, 2x2"),
        _spec("detector_settings.readout_rate_mhz", "number", "MHz", "read-out rate in MHz"),
        _spec("detector_settings.voltage_v", "number", "V", "detector voltage in volts"),
        _spec("filters.excitation", "string", None, "excitation filter model or name"),
        _spec("filters.excitation_nm", "list", "nm", "excitation band [cut-in, cut-out]"),
        _spec("filters.dichroic", "string", None, "dichroic mirror model or name"),
        _spec("filters.emission", "string", None, "emission filter model or name"),
        _spec("filters.emission_nm", "list", "nm", "emission band [cut-in, cut-out]"),
    )
}

#: ``FieldSpec.type`` values and the Python types a value of each may have (a bool is a
#: ``boolean`` only, never a number).
FIELD_TYPES: Mapping[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "datetime": (str,),
    "list": (list, tuple),
    "boolean": (bool,),
}

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(Z|[+-](\d{2}):(\d{2}))?)?$"
)


def is_rfc3339(text: object) -> bool:
    """True for an RFC 3339 date-time or a date alone that names a real moment.

    The offset may be absent, as files often lack one (``acquired`` then is local time);
    ``2020-13-45`` or ``25:00`` are refused, a leap second (``:60``) is not.
    """
    match = _RFC3339.match(text) if isinstance(text, str) else None
    if match is None:
        return False
    year, month, day, hour, minute, second, offset, off_hour, off_minute = match.groups()
    try:
        datetime.date(int(year), int(month), int(day))
    except ValueError:
        return False
    if hour is None:
        return True
    if int(hour) > 23 or int(minute) > 59 or int(second) > 60:
        return False
    return offset in (None, "Z") or (int(off_hour) <= 23 and int(off_minute) <= 59)


def value_problem(type_name: str, value: Any) -> str | None:
    """Why ``value`` is not a valid value of a ``type_name`` field, or None when it is.

    The agent drops a value with a problem (with a warning naming its key); the
    conformance kit reports it.
    """
    allowed = FIELD_TYPES.get(type_name)
    if allowed is None:
        return f"type {type_name!r} is not one of {[*FIELD_TYPES]}"
    if isinstance(value, bool) != (type_name == "boolean") or not isinstance(value, allowed):
        return f"declared {type_name}, got {type(value).__name__}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"declared number, got {value}"
    if type_name == "datetime" and not is_rfc3339(value):
        return "not an RFC 3339 date-time (YYYY-MM-DDTHH:MM:SS[.f][+HH:MM]) or date"
    if isinstance(value, str) and type_name == "string" and not value.strip():
        return "empty string (leave the key out instead)"
    return None


def channel_problems(item: object, prefix: str = "") -> dict[str, str]:
    """Dotted key -> why it is wrong, for one ``channels`` item (``""`` for the item itself).

    An item is a mapping of ``CHANNEL_FIELDS`` keys with values of their types; a dotted
    key's value sits in a nested mapping.
    """
    if not isinstance(item, Mapping):
        return {prefix.rstrip("."): f"not a mapping: {type(item).__name__}"}
    problems = {}
    for key, value in item.items():
        dotted = f"{prefix}{key}"
        spec = CHANNEL_FIELDS.get(dotted)
        if spec is not None:
            if problem := value_problem(spec.type, value):
                problems[dotted] = problem
        elif any(name.startswith(f"{dotted}.") for name in CHANNEL_FIELDS):
            problems.update(channel_problems(value, f"{dotted}."))
        else:
            problems[dotted] = f"not a channel field ({', '.join(CHANNEL_FIELDS)})"
    return problems


def identifier_problem(item: object) -> str | None:
    """Why ``item`` is not a well-formed :class:`Identifier`, or None when it is.

    The agent drops a malformed one (its value may then reach the package); the
    conformance kit reports it. The message never quotes the value.
    """
    if not isinstance(item, Identifier):
        return f"not an Identifier: {type(item).__name__}"
    if not isinstance(item.attribute, str) or not item.attribute.strip():
        return f"attribute {item.attribute!r} is not a DICOM keyword"
    if not isinstance(item.value, str) or not item.value.strip():
        return f"{item.attribute}: the value is not text"
    path = item.path
    if not isinstance(path, tuple) or not all(isinstance(key, str) for key in path):
        return f"{item.attribute}: path {path!r} is not a tuple of keys"
    if path and path[0] not in ("metadata", "original_metadata"):
        return f"{item.attribute}: path {path!r} starts neither at metadata nor original_metadata"
    return None


def digests_problem(info: AdapterInfo) -> str | None:
    """Why ``info.digests`` is malformed, or None when it is well-formed.

    The agent refuses to load such an adapter; the conformance kit reports it.
    """
    digests: object = info.digests
    if not isinstance(digests, Mapping):
        return f"digests is {type(digests).__name__}, not a mapping of suffix to algorithms"
    for suffix, names in digests.items():
        if not (isinstance(suffix, str) and suffix.startswith(".") and suffix == suffix.lower()):
            return f"digests: {suffix!r} is not a lowercase file suffix such as '.ibd'"
        if not isinstance(names, tuple) or not names:
            return f"digests[{suffix!r}] must be a non-empty tuple of algorithm names"
        unknown = [name for name in names if name not in DIGEST_ALGORITHMS]
        if unknown:
            return (
                f"digests[{suffix!r}]: {unknown} not among {sorted(DIGEST_ALGORITHMS)} "
                "(sha256 is always computed)"
            )
    return None


#: an IANA media type's shape (RFC 6838 restricted names, lowercase): ``type/subtype``.
MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")


def media_types_problem(info: AdapterInfo) -> str | None:
    """Why ``info.media_types`` is malformed, or None when it is well-formed.

    The agent refuses to load such an adapter; the conformance kit reports it.
    """
    media_types: object = info.media_types
    if not isinstance(media_types, Mapping):
        return f"media_types is {type(media_types).__name__}, not a mapping of name end to type"
    for end, kind in media_types.items():
        if not (isinstance(end, str) and end == end.lower()):
            return f"media_types: {end!r} is not a lowercase end of a file name such as '.tif'"
        if not (isinstance(kind, str) and MEDIA_TYPE.match(kind)):
            return f"media_types[{end!r}]: {kind!r} is not a media type such as 'image/tiff'"
    return None


def normalized_fields(sources: Mapping[str, str]) -> tuple[FieldSpec, ...]:
    """The catalogue's specs for the keys an adapter fills, each with where it reads them.

    ``sources`` maps a key of :data:`NORMALIZED_FIELDS` to the tag or element it comes from;
    an unknown key raises ``KeyError`` at import, so a typo never ships.
    """
    return tuple(
        dataclasses.replace(NORMALIZED_FIELDS[key], source=source)
        for key, source in sources.items()
    )


@dataclass(frozen=True, slots=True)
class AdapterInfo:
    """Static description of an adapter; a class-level constant."""

    #: lowercase_snake; equals the entry-point name and the config key.
    name: str
    title: str
    version: str
    stability: Stability
    formats: tuple[FormatSpec, ...]
    #: the only metadata keys ``extract`` may emit.
    fields: tuple[FieldSpec, ...]
    #: paths of the files that prove the adapter, relative to the corpus (built-ins) or to
    #: the adapter's package folder (vendors shipping samples as package data): the
    #: conformance kit tries the corpus root (``--acqharvest-corpus``) first, then the
    #: package folder, and uses them to check no other adapter claims them.
    samples: tuple[str, ...] = ()
    #: top-level modules ``extract`` imports that the base install does not carry (a
    #: format's own reader). The adapter module itself must import them lazily, inside
    #: ``extract``, so that claiming, start-up and workers that never meet the format
    #: stay free of them; when one is missing, the adapter is listed as unavailable.
    requires: tuple[str, ...] = ()
    #: the extra of the adapter's distribution that installs ``requires``
    #: (``acqharvest[<extra>]`` for the built-ins); shown to the admin.
    extra: str = ""
    #: lowercase file suffix (``".ibd"``) -> names from :data:`DIGEST_ALGORITHMS` of the
    #: digests the agent computes of every such file besides its sha256, in the same single
    #: pass over its bytes, and hands to ``extract`` in :attr:`Draft.digests`: so a
    #: checksum the acquisition names for a file of any size is verified without the
    #: adapter reading it. Only files with such a suffix pay for them; ask for every
    #: algorithm the format may name (the imzML adapter: ``{".ibd": ("md5", "sha1")}``).
    digests: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: lowercase end of a file name (``".ome.tif"``, ``".zattrs"``, ``"zarr.json"``) -> the
    #: IANA media type (RFC 6838) of such a file of the acquisition, written in the
    #: package's ``files[].media_type``; the longest matching end wins, and a file none
    #: matches is ``application/octet-stream``. A format without a registered type uses
    #: ``application/octet-stream`` or the form its community documents.
    media_types: Mapping[str, str] = field(default_factory=dict)

    def digests_for(self, path: Path) -> tuple[str, ...]:
        """The extra digests this adapter asks for of ``path`` (by its suffix)."""
        return self.digests.get(path.suffix.lower(), ())

    def media_type_for(self, path: Path) -> str:
        """The media type of ``path`` in this adapter's acquisitions (by its name's end)."""
        name = path.name.lower()
        ends = [end for end in self.media_types if name.endswith(end)]
        return self.media_types[max(ends, key=len)] if ends else OCTET_STREAM


@dataclass(frozen=True, slots=True)
class FileProbe:
    """What the agent already knows about a settled file when it asks for a claim."""

    path: Path
    size: int
    #: the first ``HEAD_BYTES`` bytes (fewer when the file is shorter).
    head: bytes

    @property
    def suffix(self) -> str:
        return self.path.suffix.lower()


@dataclass(frozen=True, slots=True)
class Claim:
    """An adapter's answer to "is this file yours?"."""

    #: files with the same group key form one acquisition; prefix it with the adapter name.
    group_key: str
    role: Role = "primary"
    #: 0..1; the highest confidence wins when several adapters claim a file.
    confidence: float = 0.5
    #: names relative to the file's folder (``..`` allowed) the acquisition needs before it
    #: is complete. The agent resolves them against the watch root: a name outside the
    #: root can never arrive, and the group is packaged incomplete at its timeout.
    expects: tuple[str, ...] = ()
    #: True when more files may join this group later (e.g. a DICOM series): the group is
    #: then packaged only after it has been quiet for the folder's ``group_quiet_seconds``.
    collects: bool = False
    #: how many files the group will hold, when the header says (e.g. DICOM
    #: ImagesInAcquisition): a collecting group is then packaged as soon as that many
    #: distinct files are there, without waiting for the quiet window.
    expected_instances: int | None = None
    #: a folder, relative to the file's folder (``..`` steps up, ``.`` is the file's own),
    #: whose whole tree is this one acquisition: a directory format such as a ``.zarr``
    #: store. Claim every file under it with the same group key, the store's root metadata
    #: as ``primary``. The group collects; it is complete when its primary is there (or
    #: the acquisition was packaged before), no file under the folder is still settling,
    #: and the tree has been quiet for the quiet window. None of its files is packaged
    #: alone; a file added after the package gives a new package with ``replaces``.
    tree: str | None = None


@dataclass(frozen=True, slots=True)
class Draft:
    """The acquisition an adapter is asked to extract: its files, primary first.

    Every file in ``members`` is listed in the package with its size and checksum, so
    ``extract`` vouches for each one being whole, not only for the primary it reads:
    see :meth:`Adapter.extract`.
    """

    key: str
    primary: Path
    members: tuple[Path, ...]
    #: member -> ``hashlib`` name -> lowercase hex digest of the whole file, as the agent
    #: computed it while hashing the file before the claim: ``sha256`` of every member, and
    #: what :attr:`AdapterInfo.digests` asks for. Compare a checksum the acquisition names
    #: with these; never read a file whole to compute one. A member or name absent (a file
    #: packaged earlier and not read again, a caller that hashed nothing) is unknown:
    #: report the checksum as not verified.
    digests: Mapping[Path, Mapping[str, str]] = field(default_factory=dict)
    #: the most bytes of one metadata document (an OME-XML) to keep in
    #: ``original_metadata``: keep a longer one's first bytes, say so in a warning and mark
    #: it there (as the built-in adapters do with ``ome_xml_cut``).
    original_metadata_max_bytes: int = ORIGINAL_METADATA_MAX_BYTES


@dataclass(frozen=True, slots=True)
class Identifier:
    """A value of the output that may identify a patient, a case or a specimen.

    The adapter does not decide its fate: it names the DICOM attribute that holds the
    same information (a slide's case number is a ``ContainerIdentifier``, a scan date an
    ``AcquisitionDate``), and the agent applies that attribute's rule of the site's
    de-identification policy, with the same retain options as for a DICOM file. When the
    rule removes the value, the key at ``path`` goes and every whole occurrence of
    ``value`` in the output's text (a free-text description that repeats it, a warning)
    is replaced by ``<removed>``.
    """

    #: DICOM keyword whose rule applies, e.g. ``"ContainerIdentifier"`` (letter case is
    #: not significant: ``"AcquisitionDatetime"`` names ``AcquisitionDateTime``).
    attribute: str
    #: the text as the file writes it.
    value: str
    #: the keys leading to the value in the output, the first ``"metadata"`` or
    #: ``"original_metadata"``, e.g. ``("original_metadata", "svs_metadata", "Filename")``;
    #: empty when the value is only inside other text.
    path: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AdapterOutput:
    """What ``extract`` returns."""

    #: short format name for the package's ``acquisition.format`` (e.g. ``"DICOM"``).
    format: str
    #: normalized fields, nested dicts keyed as declared in ``AdapterInfo.fields``.
    metadata: Mapping[str, Any]
    #: what the file says, as read (JSON-serializable, size-capped, no binary blobs).
    original_metadata: Mapping[str, Any] = field(default_factory=dict)
    #: acquisition start as RFC 3339, when the file says.
    started: str | None = None
    warnings: tuple[str, ...] = ()
    #: why the acquisition lacks data its headers announce although every file is whole
    #: (ends cleanly after its last element, as written), e.g. a DICOM image header without
    #: pixel data; None when nothing is missing. The package then says
    #: ``acquisition.complete: false`` and carries the reason in ``provenance.warnings``
    #: (do not repeat it in ``warnings``). A file cut short is never this: raise
    #: ``AdapterError(member, "truncated: ...")`` as :meth:`Adapter.extract` says.
    incomplete: str | None = None
    #: values that may identify a patient, for the agent's de-identification policy.
    identifiers: tuple[Identifier, ...] = ()


class AdapterError(Exception):
    """Bad input: the file cannot be read as this format. Names the file."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


class Reader(Protocol):
    """Read-only access to instrument files, provided by the agent.

    Handles are short-lived, never lock the file against the acquisition software (on
    Windows they share read, write and delete), and count the bytes read.
    """

    def open(self, path: Path) -> AbstractContextManager[BinaryIO]:
        """A read-only binary file object; close it promptly (use ``with``)."""
        ...

    def read(self, path: Path, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset``."""
        ...


@runtime_checkable
class Adapter(Protocol):
    """A format adapter."""

    info: AdapterInfo

    def claim(self, probe: FileProbe, reader: Reader) -> Claim | None:
        """Return a claim when the file is this adapter's format, else None.

        Look at ``probe.head`` first; read deeper through ``reader`` only when the group
        key lies further in (e.g. a DICOM SeriesInstanceUID). Must not raise for files
        that are simply not this format.
        """
        ...

    def extract(self, draft: Draft, reader: Reader) -> AdapterOutput:
        """Read the acquisition's headers; raise :class:`AdapterError` for bad input.

        Completeness of every member: the settle stage cannot tell a file cut short that
        then held still (a writer paused, a copy interrupted) from a whole one, so
        ``extract`` checks each file of ``draft.members``, not only the primary, with
        the cheapest format-level test that tells a cut-short file (declared extents,
        an end marker, item headers: headers only, a small byte budget; never a full
        parse of files whose metadata is not reported). For a member that fails it,
        raise ``AdapterError(member, "truncated: ...")`` naming that member: the agent
        then packages nothing, fails that version of that file only (it is read again
        once it changes, as a writer that resumes changes it), and groups the other
        members again at the next scan. An adapter whose format has no such test
        accepts the file as settled. A file that is whole but holds less than its
        header announces (a header written without its pixels) is extracted, with
        :attr:`AdapterOutput.incomplete` saying what is missing.
        """
        ...
