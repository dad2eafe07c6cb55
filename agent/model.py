"""The plain, frozen data that flows between stages, and the validated settings.

Every stage takes and returns these objects and nothing else; no behaviour lives here.
Data flows one way:

    FileSeen (watch) -> FileSettled (settle) -> Acquisition (group)
    -> Extraction | ExtractionFailure (extract) -> Package (package) -> outbox -> deliver

Paths are absolute ``pathlib.Path`` objects; ``root`` is the watch folder a file was
found under, so relative paths in packages are ``path.relative_to(root)`` with ``/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from acqharvest.adapter_api import Identifier

# declared in ``settings`` (they are the config file's schema too); stages take them from
# here with the rest of the data they are handed
from acqharvest.settings import DeidentifySettings as DeidentifySettings
from acqharvest.settings import EndpointSettings as EndpointSettings
from acqharvest.settings import FacilitySettings as FacilitySettings
from acqharvest.settings import InstrumentSettings as InstrumentSettings
from acqharvest.settings import LogSettings as LogSettings
from acqharvest.settings import Settings as Settings
from acqharvest.settings import WatchMode as WatchMode
from acqharvest.settings import WatchSettings as WatchSettings

# --------------------------------------------------------------------------- stages


@dataclass(frozen=True, slots=True)
class FileSeen:
    """A watch event or scan hit: the file exists with this size and mtime right now."""

    path: Path
    root: Path
    size: int
    mtime_ns: int
    #: "<device>:<inode>:<ctime_ns>": changes when the file is replaced or its inode changed.
    file_id: str
    seen_at: float
    source: Literal["event", "scan", "closed"]


@dataclass(frozen=True, slots=True)
class FileGone:
    """A watched file disappeared (deleted or renamed away) before or after settling."""

    path: Path
    root: Path


@dataclass(frozen=True, slots=True)
class FileRefused:
    """Something in a watch folder that is never read: a link leading outside the folder, a
    link loop, a FIFO, a device file or socket, or a folder that cannot be listed."""

    path: Path
    root: Path
    #: one line naming what it is and why it is refused
    reason: str


@dataclass(frozen=True, slots=True)
class FileSettled:
    """A file that stopped changing: size and mtime held still for the settle window."""

    path: Path
    root: Path
    size: int
    mtime_ns: int
    file_id: str


@dataclass(frozen=True, slots=True)
class ProbedFile:
    """A settled file with the facts the grouping and packaging stages need."""

    settled: FileSettled
    sha256: str
    #: adapter that claimed the file, None when no adapter did.
    adapter: str | None
    group_key: str
    role: Literal["primary", "member", "sidecar"] = "primary"
    #: files the adapter says the group needs before it is complete (names relative to root).
    expects: tuple[str, ...] = ()
    #: more files may join the group later; it waits for the quiet window (see Claim).
    collects: bool = False
    #: how many files the group will hold, when the adapter could tell (see Claim).
    expected_instances: int | None = None
    #: the folder whose whole tree is this acquisition (a ``.zarr`` store), absolute;
    #: see Claim.tree.
    tree: Path | None = None
    #: the digests its adapters' ``AdapterInfo.digests`` ask for besides sha256 (``hashlib``
    #: name -> hex), computed in the same pass; empty for most files. Not kept in the state
    #: database: a member packaged earlier has only its sha256 (see ``Draft.digests``).
    digests: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Acquisition:
    """One acquisition: the files that belong together, ready for extraction."""

    key: str
    adapter: str | None
    root: Path
    members: tuple[ProbedFile, ...]
    #: False when the group was released by timeout before the adapter called it complete.
    complete: bool = True

    @property
    def primary(self) -> ProbedFile:
        for member in self.members:
            if member.role == "primary":
                return member
        return self.members[0]


@dataclass(frozen=True, slots=True)
class Sidecar:
    """A sidecar file found above an acquisition (``sidecar``), as read for its package."""

    path: Path
    root: Path
    #: size, mtime and sha256 of the bytes read; None when not a byte could be read
    size: int | None = None
    mtime_ns: int | None = None
    sha256: str | None = None
    #: its key/value pairs, keys normalized; empty when ``error`` is set
    values: Mapping[str, str] = field(default_factory=dict)
    #: why its values are not applied (the place in the file and the problem), or None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Extraction:
    """What an adapter read from an acquisition's headers."""

    acquisition: Acquisition
    adapter: str
    adapter_version: str
    format: str
    metadata: Mapping[str, Any]
    original_metadata: Mapping[str, Any]
    started: str | None = None
    warnings: tuple[str, ...] = ()
    #: why the data is incomplete although every file is whole (``AdapterOutput.incomplete``).
    incomplete: str | None = None
    #: values the adapter named as possibly identifying, for de-identification.
    identifiers: tuple[Identifier, ...] = ()
    #: the sidecars found above the acquisition, farthest (the watch root's) first
    sidecars: tuple[Sidecar, ...] = ()
    #: member path -> its IANA media type, as the claiming adapter names it; a member
    #: absent is ``application/octet-stream``.
    media_types: Mapping[Path, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExtractionFailure:
    """An acquisition whose headers could not be read; names the file and the reason."""

    acquisition: Acquisition
    adapter: str | None
    path: Path
    reason: str


@dataclass(frozen=True, slots=True)
class Deidentified:
    """What de-identification did to an extraction (recorded in the package provenance)."""

    metadata: Mapping[str, Any]
    original_metadata: Mapping[str, Any]
    profile: str | None
    options: tuple[str, ...]
    removed: int
    #: text value the policy removed or replaced -> what stands for it in free text
    #: (warnings), so a value an adapter quoted there does not survive either.
    redactions: Mapping[str, str] = field(default_factory=dict)
    #: the acquisition start the package may show (shifted with the dates, or None).
    started: str | None = None
    #: more of ``provenance.deidentification`` for data with a patient (method codes...).
    record: Mapping[str, Any] = field(default_factory=dict)
    #: file or folder name -> the keyed pseudonym that stands for it in the package.
    path_redactions: Mapping[str, str] = field(default_factory=dict)
    #: why the pixels may show text that identifies (burned-in annotation), or None.
    burned_in_risk: str | None = None
    #: the policy holds such a package in the outbox until a person releases it.
    held: bool = False


@dataclass(frozen=True, slots=True)
class Package:
    """A package document ready to spool: ``body`` is the JSON object that is posted."""

    package_id: str
    acquisition_key: str
    body: Mapping[str, Any]
    #: why the pixels may show identifying text (logged as a warning), or None.
    burned_in_risk: str | None = None
    #: spooled held: delivered only after ``Outbox.release`` (``acqharvest outbox release``).
    held: bool = False
    #: the operator a people file is configured for but does not list (logged once), or None.
    unknown_operator: str | None = None


@dataclass(frozen=True, slots=True)
class Receipt:
    """The outcome of one delivery attempt."""

    package_id: str
    outcome: Literal["confirmed", "retry", "rejected"]
    http_status: int | None
    detail: str
    #: seconds the endpoint asked us to wait (Retry-After), if it did.
    retry_after: float | None = None
    #: whatever package were sent, the answer would be the same (a web page at the URL):
    #: said once as an endpoint-wide problem, like a 401 or a 404.
    endpoint_wide: bool = False
