"""The settings, declared once: each key's type, default, bounds and description live here.

These frozen dataclasses are what the stages and the runtime receive (re-exported by
``model``), and they are the config file's schema: ``config`` validates a YAML file straight
into them with pydantic and generates ``config/acqharvest.schema.json`` from them, so the
descriptions are the reference docs of every key. Built directly (tests, tools), they are
plain dataclasses and check nothing.

Validation needs two things besides the data, passed as pydantic's ``context`` (a
``Loading``): the folder relative paths resolve against, and the rule for which endpoint URLs
may carry packages (delivery's rule, kept out of this bottom layer).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    StringConstraints,
    ValidationInfo,
    field_validator,
    with_config,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError, core_schema

from acqharvest.pathtemplate import template_problem

#: names of files that are still being written or belong to the OS, never acquisitions.
#: Dotfiles in general are not excluded: OME-Zarr keeps its metadata in ``.zattrs``.
DEFAULT_EXCLUDE: tuple[str, ...] = (
    "*.tmp",
    "*.temp",
    "*.part",
    "*.partial",
    "*.crdownload",
    "*.download",
    "*.swp",
    "*~",
    "~$*",
    ".~lock.*",
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
    "._*",
)

#: ``Settings.source`` (and the message prefix) when no config file was given.
EMBEDDED_SOURCE = "<embedded default>"

#: one day and one week in seconds: the upper bounds of the time settings.
DAY = 86_400.0
WEEK = 7 * DAY
#: most worker processes: each is a process with its own memory budget, so a few per core.
MAX_WORKERS = 64
#: largest ``extract_memory_mb``: 1 TiB.
MAX_MEMORY_MB = 1_048_576
#: C0 and C1 control characters and DEL: a NUL cannot be in a path, and a newline or an
#: escape in an instrument id goes into every package and log line unseen.
_CONTROL_CHARS = r"\x00-\x1f\x7f-\x9f"
CONTROL = re.compile(f"[{_CONTROL_CHARS}]")

WatchMode = Literal["auto", "native", "polling"]
ProcessPriority = Literal["low", "normal"]


def _no_control(value: str) -> str:
    if found := CONTROL.search(value):
        raise PydanticCustomError(
            "control_character",
            f"must not contain control characters (found U+{ord(found.group()):04X})",
        )
    return value


#: text without control characters: identities, paths, names.
_Text = Annotated[
    str,
    AfterValidator(_no_control),
    # the same rule for editors that read the schema (validation here names the character)
    Field(json_schema_extra={"pattern": f"^[^{_CONTROL_CHARS}]*$"}),
]
_NonEmpty = Annotated[_Text, StringConstraints(min_length=1)]


@dataclass(frozen=True, slots=True)
class Loading:
    """What validating a config needs besides its data (pydantic's validation ``context``)."""

    #: the config file's folder: relative paths in the file resolve against it.
    base_dir: Path
    #: raises a ``PydanticCustomError`` for an endpoint URL delivery refuses (a credential
    #: in the query, plain http to a remote host); called with the URL, its parts and
    #: ``allow_plaintext``.
    url_policy: Callable[[str, SplitResult, bool], None]


def _loading(info: ValidationInfo) -> Loading:
    if not isinstance(info.context, Loading):
        raise TypeError("settings are validated with a Loading context (see acqharvest.config)")
    return info.context


def resolve_path(raw: str, base_dir: Path) -> Path:
    """A path as written in the config, made absolute against ``base_dir``."""
    # lexical, not Path.resolve(): folders need not exist yet and symlinks stay as written
    return Path(os.path.normpath(base_dir / os.path.expanduser(raw)))


class _InConfigFolder:
    """Validates a path as non-empty text without control characters (so the schema says
    string), then resolves it against the config file's folder into a ``Path``."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_after_validator_function(
            lambda raw, info: resolve_path(raw, _loading(info).base_dir),
            handler.generate_schema(_NonEmpty),
        )


#: a file or folder named in the config; relative to the config file's folder.
_ConfigPath = Annotated[Path, _InConfigFolder]

_SECTION = ConfigDict(
    extra="forbid",
    # 1e309 reads as infinity: a settle time that never ends, not a typo to accept
    allow_inf_nan=False,
)


@with_config(_SECTION | ConfigDict(coerce_numbers_to_str=True))  # serial numbers, models
@dataclass(frozen=True, slots=True)
class InstrumentSettings:
    """PIDINST-style identity of the instrument, copied into every package."""

    id: Annotated[
        _Text,
        Field(
            description="Persistent identifier of the instrument (a PIDINST handle, DOI or "
            "URN). It is part of every package id, so changing it re-sends everything."
        ),
    ]
    name: Annotated[_Text | None, Field(description="Human-readable instrument name.")] = None
    manufacturer: Annotated[_Text | None, Field(description="Manufacturer of the instrument.")] = (
        None
    )
    model: Annotated[_Text | None, Field(description="Model name of the instrument.")] = None
    serial_number: Annotated[
        _Text | None, Field(description="Serial number of the instrument.")
    ] = None
    type: Annotated[
        _Text | None,
        Field(
            description="Kind of instrument, for example 'MRI scanner' or 'electron microscope'."
        ),
    ] = None
    owner: Annotated[
        _Text | None, Field(description="Facility or group that runs the instrument.")
    ] = None

    @field_validator("id")
    @classmethod
    def _id_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError("blank", "must not be empty")
        return value


@with_config(_SECTION)
@dataclass(frozen=True, slots=True)
class WatchSettings:
    """One instrument output folder to watch."""

    path: Annotated[
        _ConfigPath,
        Field(
            description="Folder the instrument writes acquisitions into. Relative paths are "
            "relative to the config file's folder."
        ),
    ]
    include: Annotated[
        tuple[str, ...],
        Field(description="Shell-style patterns; only file names matching one are harvested."),
    ] = ("*",)
    exclude: Annotated[
        tuple[str, ...],
        Field(
            description="Shell-style patterns of file names never harvested (temporary and "
            "partial files, OS clutter). Setting this replaces the default list."
        ),
    ] = DEFAULT_EXCLUDE
    recursive: Annotated[bool, Field(description="Also watch every subfolder.")] = True
    settle_seconds: Annotated[
        float,
        Field(
            ge=0,
            le=DAY,
            description="A file counts as complete once its size and modification time have "
            "not changed for this many seconds.",
        ),
    ] = 10.0
    settle_on_close: Annotated[
        bool,
        Field(
            description="When the operating system reports that the writer closed a file "
            "(Linux), one confirming look a second later is enough. Turn off for software "
            "that reopens a file for every chunk it appends."
        ),
    ] = True
    blank_head_wait_seconds: Annotated[
        float,
        Field(
            ge=0,
            le=DAY,
            description="A file whose first 4 KiB are all zero bytes is taken for space the "
            "software reserved but has not written yet: it waits up to this many seconds for "
            "content, then is harvested anyway. 0 turns the check off.",
        ),
    ] = 300.0
    mode: Annotated[
        WatchMode,
        Field(
            description="How changes are noticed: 'native' uses operating-system events, "
            "'polling' re-lists the folder (needed for SMB/NFS shares), 'auto' picks for you."
        ),
    ] = "auto"
    path_template: Annotated[
        _Text | None,
        Field(
            description="Folder-naming convention below this folder from which fields such "
            "as the operator and project are read, for example '{operator}/{project}/**': "
            "{name} matches within one folder level, * any text within one level, ** any "
            "number of levels; the file name is never used. Null reads none."
        ),
    ] = None
    group_quiet_seconds: Annotated[
        float | None,
        Field(
            ge=0,
            le=DAY,
            description="How long a multi-file acquisition (for example a DICOM series) must "
            "receive no new files before it is packaged; null means settle_seconds.",
        ),
    ] = None
    group_timeout_seconds: Annotated[
        float,
        Field(
            gt=0,
            le=WEEK,
            description="An acquisition still incomplete after this many seconds is sent "
            "anyway, flagged incomplete.",
        ),
    ] = 3600.0
    adapters: Annotated[
        tuple[_Text, ...],
        Field(
            description="Names of the format adapters allowed to read files in this folder; "
            "empty means every enabled adapter."
        ),
    ] = ()
    defer_while_writing: Annotated[
        bool,
        Field(
            description="Hold a finished file back, before its checksum is computed, while "
            "another file in the same folder is still being written, so that reading it "
            "never competes with the acquisition's writes (at most defer_max_seconds). For "
            "instruments that stream to disk (cameras, light-sheet); it delays packages by "
            "as long as the writing goes on."
        ),
    ] = False
    defer_max_seconds: Annotated[
        float,
        Field(
            ge=0,
            le=WEEK,
            description="Longest a finished file is held back by defer_while_writing; then "
            "it is read anyway, so a file that grows for days (a long time-lapse) cannot "
            "hold its neighbours back for as long.",
        ),
    ] = 3600.0

    @field_validator("path_template")
    @classmethod
    def _usable_template(cls, template: str | None) -> str | None:
        if template is not None and (problem := template_problem(template)):
            raise PydanticCustomError("template", problem)
        return template


def _http_url(url: str, what: str) -> SplitResult:
    """The parts of an http(s) URL with a host and a valid port, else a config error."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise PydanticCustomError("url", f"invalid port in {what}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PydanticCustomError("url", f"must be an http:// or https:// {what} with a host name")
    return parts


@with_config(
    _SECTION
    | ConfigDict(
        # the cross-field rules of the validators below, for editors that read the schema
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"type": {"const": "http"}}, "required": ["type"]},
                    "then": {"required": ["url"]},
                },
                {
                    "if": {"properties": {"type": {"const": "directory"}}, "required": ["type"]},
                    "then": {"required": ["path"]},
                },
                {"not": {"required": ["token_file", "token_env"]}},
            ]
        }
    )
)
@dataclass(frozen=True, slots=True)
class EndpointSettings:
    """Where packages are delivered: an HTTP endpoint or a local folder."""

    # allow_plaintext and token_file come before the fields whose checks read them
    type: Annotated[
        Literal["http", "directory"],
        Field(
            description="'http' posts each package to url; 'directory' writes it as a JSON "
            "file into path."
        ),
    ]
    allow_plaintext: Annotated[
        bool,
        Field(
            description="Allow a plain http:// url to a host other than loopback. Packages "
            "and the token then cross the network unencrypted."
        ),
    ] = False
    url: Annotated[
        str | None,
        Field(
            validate_default=True,
            description="URL packages are posted to; required when type is 'http'. Must be "
            "https:// unless the host is loopback or allow_plaintext is true. No credential "
            "in it (user:pass@, or a query parameter such as token, api_key, sig or code); "
            "query values are masked wherever the URL is shown.",
        ),
    ] = None
    proxy: Annotated[
        _NonEmpty | None,
        Field(
            description="http:// or https:// URL of a proxy to reach an https url through "
            "(CONNECT: TLS stays end to end, the proxy sees neither packages nor token). "
            "Proxy credentials may go in it (http://user:pass@host:port) and are never "
            "logged. Environment variables such as HTTPS_PROXY are ignored; null connects "
            "directly."
        ),
    ] = None
    path: Annotated[
        _ConfigPath | None,
        Field(
            validate_default=True,
            description="Folder packages are written to; required when type is 'directory'. "
            "Must be outside every watched folder.",
        ),
    ] = None
    token_file: Annotated[
        _ConfigPath | None,
        Field(
            description="File whose content is the bearer token sent to the endpoint. Use "
            "this or token_env, not both."
        ),
    ] = None
    token_env: Annotated[
        _NonEmpty | None,
        Field(
            description="Environment variable holding the bearer token. Use this or "
            "token_file, not both."
        ),
    ] = None
    ca_bundle: Annotated[
        _ConfigPath | None,
        Field(
            description="PEM file of CA certificates trusted for https; null uses the system "
            "store. TLS is always verified."
        ),
    ] = None
    client_cert: Annotated[
        _ConfigPath | None,
        Field(
            description="PEM client certificate presented to the endpoint (mutual TLS). Its "
            "key is in client_key, or in this file when client_key is not set."
        ),
    ] = None
    client_key: Annotated[
        _ConfigPath | None,
        Field(
            description="PEM private key of client_cert, unencrypted; keep it readable only "
            "by the account acqharvest runs as. Never logged."
        ),
    ] = None
    require_receipt: Annotated[
        bool,
        Field(
            description="Count a 2xx or 409 as delivered only when its body is a JSON receipt "
            "naming the package_id. Without it, an empty body or a JSON object counts too. "
            "An HTML page or other text, or a receipt that names another package or another "
            "sha256, never counts, whatever this says. Recommended: it also guards against "
            "an endpoint that answers 409 while the first request with the same key is "
            "still in progress."
        ),
    ] = False
    timeout_seconds: Annotated[
        float,
        Field(
            gt=0,
            le=DAY,
            description="Longest one delivery attempt may take, connecting, sending and "
            "reading the answer together; an endpoint still answering then is cut off and "
            "retried.",
        ),
    ] = 30.0
    max_backoff_seconds: Annotated[
        float,
        Field(gt=0, le=DAY, description="Longest wait between retries of a failed delivery."),
    ] = 300.0

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str | None, info: ValidationInfo) -> str | None:
        if url is None:
            if info.data.get("type") == "http":
                raise PydanticCustomError("required", "required when type is http")
            return None
        parts = _http_url(url, "URL")
        if parts.username is not None or parts.password is not None:
            raise PydanticCustomError(
                "credentials",
                "must not carry a user name or password (user:pass@); put the credential "
                "in token_file or token_env",
            )
        _loading(info).url_policy(url, parts, info.data.get("allow_plaintext", False))
        return url

    @field_validator("proxy")
    @classmethod
    def _check_proxy(cls, proxy: str | None, info: ValidationInfo) -> str | None:
        if proxy is None:
            return None
        _http_url(proxy, "proxy URL")
        url = info.data.get("url")
        if isinstance(url, str) and urlsplit(url).scheme != "https":
            raise PydanticCustomError(
                "plaintext",
                "a proxy is only used for an https:// url (tunnelled, TLS end to end); with "
                "a plain http:// url it would see the packages and the token",
            )
        return proxy

    @field_validator("path")
    @classmethod
    def _path_for_directory(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None and info.data.get("type") == "directory":
            raise PydanticCustomError("required", "required when type is directory")
        return path

    @field_validator("client_key")
    @classmethod
    def _key_needs_cert(cls, client_key: Path | None, info: ValidationInfo) -> Path | None:
        if client_key is not None and info.data.get("client_cert") is None:
            raise PydanticCustomError(
                "client_cert", "client_key is set but client_cert is not; set both"
            )
        return client_key

    @field_validator("token_env")
    @classmethod
    def _one_token_source(cls, token_env: str | None, info: ValidationInfo) -> str | None:
        if token_env is not None and info.data.get("token_file") is not None:
            raise PydanticCustomError(
                "token", "token_file and token_env are mutually exclusive; set only one"
            )
        return token_env


@with_config(_SECTION)
@dataclass(frozen=True, slots=True)
class DeidentifySettings:
    """Patient-data policy. Identifiers are removed unless a retain option says otherwise."""

    enabled: Annotated[
        bool, Field(description="Remove patient identifiers from the metadata before packaging.")
    ] = True
    retain_uids: Annotated[
        bool, Field(description="Keep study, series and instance UIDs unchanged.")
    ] = False
    retain_device_identity: Annotated[
        bool,
        Field(
            description="Keep what identifies the instrument (serial numbers, station names, "
            "detector IDs): the profile's Retain Device Identity option."
        ),
    ] = True
    retain_dates: Annotated[bool, Field(description="Keep dates and times unchanged.")] = False
    retain_patient_characteristics: Annotated[
        bool, Field(description="Keep age, sex, size and weight of the patient.")
    ] = False
    retain_descriptions: Annotated[
        bool,
        Field(
            description="Keep free-text descriptions (study, series and protocol names, "
            "comments); they help find data but may hold a name or a case number."
        ),
    ] = False


@with_config(_SECTION)
@dataclass(frozen=True, slots=True)
class LogSettings:
    """Logging of the daemon itself."""

    level: Annotated[
        Literal["debug", "info", "warning", "error"],
        Field(description="Least severe level that is logged."),
    ] = "info"
    format: Annotated[
        Literal["auto", "json", "console"],
        Field(
            description="Format of the log on standard error: 'auto' is 'console' on a "
            "terminal and 'json' otherwise."
        ),
    ] = "auto"
    file: Annotated[
        _ConfigPath | None,
        Field(description="JSON-lines log file; null means acqharvest.log in state_dir."),
    ] = None


def _not_empty(items: tuple[Any, ...]) -> tuple[Any, ...]:
    if not items:
        raise PydanticCustomError("too_short", "must not be empty")
    return items


@with_config(_SECTION | ConfigDict(title="acqharvest configuration"))
@dataclass(frozen=True, slots=True)
class Settings:
    """The acqharvest configuration file."""

    instrument: Annotated[
        InstrumentSettings, Field(description="The instrument this daemon runs beside.")
    ]
    watch: Annotated[
        tuple[WatchSettings, ...],
        # not min_length: a tuple would report "too short" too when its one folder is invalid
        AfterValidator(_not_empty),
        Field(json_schema_extra={"minItems": 1}, description="The folders to watch; at least one."),
    ]
    endpoint: Annotated[EndpointSettings, Field(description="Where packages are delivered.")]
    state_dir: Annotated[
        _ConfigPath,
        Field(
            description="Folder for the outbox, the registry of harvested files and the log. "
            "It must be outside every watched folder."
        ),
    ]
    deidentify: Annotated[DeidentifySettings, Field(description="Patient-data policy.")] = (
        DeidentifySettings()
    )
    log: Annotated[LogSettings, Field(description="Logging.")] = LogSettings()
    workers: Annotated[
        int,
        Field(
            ge=0,
            le=MAX_WORKERS,
            description="Worker processes for header extraction and checksums; 0 runs them "
            f"in the main process. At most {MAX_WORKERS}.",
        ),
    ] = 2
    rescan_seconds: Annotated[
        float,
        Field(
            gt=0,
            le=WEEK,
            description="Seconds between full scans of every watched folder, which catch "
            "files the change events missed.",
        ),
    ] = 300.0
    extract_timeout_seconds: Annotated[
        float,
        Field(
            gt=0,
            le=DAY,
            description="Longest a worker process may spend in an adapter on one file's "
            "headers or one acquisition's metadata, and longest a checksum may go without "
            "reading a byte; a worker stuck longer is terminated. A hung adapter fails its "
            "file with one failure naming this budget; a stalled checksum (a dead network "
            "share) is read again later, with backoff. Checksums of files of any size take "
            "as long as they need while they progress. Needs workers >= 1.",
        ),
    ] = 60.0
    priority: Annotated[
        ProcessPriority,
        Field(
            description="'low' runs the daemon and its workers below the acquisition "
            "software: nice 10 and the lowest best-effort I/O level on Linux, nice 10 on "
            "macOS, the below-normal priority class and very low I/O priority on Windows. "
            "'normal' leaves the priority as the service manager set it.",
        ),
    ] = "low"
    checksum_max_mb_per_s: Annotated[
        float | None,
        Field(
            gt=0,
            le=1_000_000,
            description="Cap on the rate at which checksums read instrument files, in MB/s "
            "(10^6 bytes) for all workers together, for PCs whose disk or network link the "
            "acquisition needs whole. null: no cap.",
        ),
    ] = None
    extract_memory_mb: Annotated[
        int | None,
        Field(
            ge=64,
            le=MAX_MEMORY_MB,
            description="Address-space limit of each worker process in MiB (Linux and other "
            "POSIX systems that enforce RLIMIT_AS; not enforced on Windows or macOS); an "
            "adapter that needs more fails on that file only. null: no limit. Needs "
            "workers >= 1.",
        ),
    ] = 2048
    #: where the config came from, for messages: set by the loader, not a key of the file.
    source: Annotated[str, SkipJsonSchema()] = EMBEDDED_SOURCE
