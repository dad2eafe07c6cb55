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

import ipaddress
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
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
    model_validator,
    with_config,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError, core_schema

from acqharvest.adapter_api import ORIGINAL_METADATA_MAX_BYTES
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

#: file name endings of sidecar files (``sidecar``), lower case: what each is read as.
#: the name endings a sidecar may have, and the media type packages give each
SIDECAR_MEDIA_TYPES: dict[str, str] = {
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".csv": "text/csv",
    ".yaml": "application/yaml",  # RFC 9512
    ".yml": "application/yaml",
}
SIDECAR_SUFFIXES: tuple[str, ...] = tuple(SIDECAR_MEDIA_TYPES)
#: ``Settings.sidecar_names`` by default.
DEFAULT_SIDECAR_NAMES: tuple[str, ...] = ("acquisition.xlsx", "acquisition.csv", "acquisition.yaml")

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


def _sidecar_name(name: str) -> str:
    """A plain file name (no folder, no pattern) ending in one of ``SIDECAR_SUFFIXES``."""
    if not name.strip() or name in (".", "..") or any(c in name for c in "/\\*?[]"):
        raise PydanticCustomError(
            "sidecar_name", "must be a plain file name: no folder, no pattern characters"
        )
    if not name.lower().endswith(SIDECAR_SUFFIXES):
        raise PydanticCustomError(
            "sidecar_name", f"must end in one of {', '.join(SIDECAR_SUFFIXES)}"
        )
    return name


_SidecarName = Annotated[_NonEmpty, AfterValidator(_sidecar_name)]


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


#: PIDINST 1.0's vocabularies (``rdawg-pidinst/schema``, ``pidinst-schema-1_0.xsd``).
AlternateIdentifierType = Literal["SerialNumber", "InventoryNumber", "Other"]
RelatedIdentifierType = Literal[
    "ARK", "arXiv", "bibcode", "DOI", "EAN13", "EISSN", "Handle", "IGSN", "ISBN", "ISSN",
    "ISTC", "LISSN", "PMID", "PURL", "RAiD", "RRID", "UPC", "URL", "URN", "w3id",
]  # fmt: skip
RelationType = Literal[
    "IsDescribedBy", "IsNewVersionOf", "IsPreviousVersionOf", "HasComponent", "IsComponentOf",
    "References", "HasMetadata", "WasUsedIn", "IsIdenticalTo", "IsAttachedTo",
]  # fmt: skip

#: a ROR id: "0", six Crockford base32 characters (no i, l, o, u), two check digits.
_ROR = re.compile(r"^(?:https://ror\.org/)?(0[0-9a-hjkmnp-tv-z]{6}[0-9]{2})$")
#: identifiers, serial and inventory numbers may be written as YAML numbers.
_IDENTIFIER_SECTION = _SECTION | ConfigDict(coerce_numbers_to_str=True)


def _web_url(url: str) -> str:
    _http_url(url, "URL")
    return url


def _ror_uri(value: str) -> str:
    """A ROR id, bare or as its URI, as the ``https://ror.org/...`` URI; else a config error.

    The shape is checked, not the check digits: ROR computes those over its own base32
    reading of the id, and the shape alone catches most typos.
    """
    found = _ROR.match(value.strip().lower())
    if found is None:
        raise PydanticCustomError(
            "ror",
            "must be a ROR id: https://ror.org/ and nine characters (0, six letters or "
            "digits, two digits), or those nine alone",
        )
    return f"https://ror.org/{found.group(1)}"


def _license(value: str) -> str:
    """An http(s) URL, or one license of the SPDX list, spelled as the list spells it.

    Checked against the list (``license-expression`` carries it): a crate points to
    ``https://spdx.org/licenses/<id>``, which for a made-up id (``proprietary``) is no page.
    """
    if value.startswith(("http://", "https://")):
        _http_url(value, "license URL")
        return value
    from license_expression import get_spdx_licensing

    known = get_spdx_licensing().validate(value, validate_strict=True)
    spdx_id = known.normalized_expression
    if known.errors or not spdx_id or " " in spdx_id:
        raise PydanticCustomError(
            "license",
            "must be one license of the SPDX list such as CC-BY-4.0 or CC0-1.0 "
            "(https://spdx.org/licenses/), or an http(s) URL to the terms",
        )
    return str(spdx_id)


#: an http(s) URL with a host.
_WebUrl = Annotated[_NonEmpty, AfterValidator(_web_url)]


@with_config(_IDENTIFIER_SECTION)
@dataclass(frozen=True, slots=True)
class TypedIdentifier:
    """An identifier and its kind, such as a manufacturer's ROR or a type's FBbi IRI."""

    identifier: Annotated[_NonEmpty, Field(description="The identifier, e.g. a URL or IRI.")]
    identifier_type: Annotated[
        _NonEmpty, Field(description="Its kind, e.g. ROR, URL, DOI, FBbi or OBI.")
    ]


@with_config(_IDENTIFIER_SECTION)
@dataclass(frozen=True, slots=True)
class OwnerSettings:
    """A PIDINST Owner: who runs the instrument."""

    name: Annotated[_NonEmpty, Field(description="Name of the owning institution or group.")]
    identifier: Annotated[
        _NonEmpty | None, Field(description="Its identifier, e.g. https://ror.org/05qj6w324.")
    ] = None
    identifier_type: Annotated[
        _NonEmpty | None,
        Field(validate_default=True, description="Kind of identifier, e.g. ROR; needed with it."),
    ] = None
    contact: Annotated[
        _NonEmpty | None, Field(description="Contact of the owner, e.g. a facility e-mail.")
    ] = None

    @field_validator("identifier_type")
    @classmethod
    def _typed(cls, kind: str | None, info: ValidationInfo) -> str | None:
        if (kind is None) != (info.data.get("identifier") is None):
            raise PydanticCustomError("pair", "set identifier and identifier_type together")
        return kind


@with_config(_IDENTIFIER_SECTION)
@dataclass(frozen=True, slots=True)
class AlternateIdentifier:
    """Another identifier of the instrument: its serial or inventory number."""

    identifier: Annotated[_NonEmpty, Field(description="The serial or inventory number.")]
    identifier_type: Annotated[
        AlternateIdentifierType, Field(description="What it is (PIDINST's vocabulary).")
    ]
    name: Annotated[_NonEmpty | None, Field(description="What it numbers, e.g. 'scan head'.")] = (
        None
    )


@with_config(_IDENTIFIER_SECTION)
@dataclass(frozen=True, slots=True)
class RelatedIdentifier:
    """Something the instrument relates to: a component, a manual, a hardware description."""

    identifier: Annotated[_NonEmpty, Field(description="The related resource's identifier.")]
    identifier_type: Annotated[
        RelatedIdentifierType, Field(description="Its kind (PIDINST's vocabulary).")
    ]
    relation_type: Annotated[
        RelationType, Field(description="How the instrument relates to it (PIDINST's vocabulary).")
    ]
    name: Annotated[_NonEmpty | None, Field(description="What it is, e.g. 'detector'.")] = None


@with_config(_SECTION)
@dataclass(frozen=True, slots=True)
class FacilitySettings:
    """The facility that runs the instrument, as packages name it."""

    name: Annotated[_NonEmpty, Field(description="Name of the facility.")]
    ror: Annotated[
        Annotated[_NonEmpty, AfterValidator(_ror_uri)] | None,
        Field(description="Its ROR id (bare or as https://ror.org/... URI; packages get the URI)."),
    ] = None


@with_config(_IDENTIFIER_SECTION)  # serial numbers, models
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
    model: Annotated[
        _Text | None,
        Field(
            description="Model name of the instrument, as its files spell it: every package "
            "compares it with the model the file reports (provenance.identity_check)."
        ),
    ] = None
    serial_number: Annotated[
        _Text | None,
        Field(
            description="Serial number of the instrument, compared with the one each file "
            "reports (provenance.identity_check). Quote it: YAML reads 0123 as a number."
        ),
    ] = None
    type: Annotated[
        _Text | None,
        Field(
            description="Kind of instrument, for example 'MRI scanner' or 'electron microscope'."
        ),
    ] = None
    owner: Annotated[
        _Text | None,
        Field(description="Facility or group that runs the instrument (one name; see owners)."),
    ] = None
    # PIDINST properties beyond the flat keys above (all optional)
    landing_page: Annotated[
        _WebUrl | None, Field(description="Web page that describes the instrument (its PID's).")
    ] = None
    description: Annotated[_Text | None, Field(description="What the instrument is and does.")] = (
        None
    )
    owners: Annotated[
        tuple[OwnerSettings, ...], Field(description="Who owns the instrument, with identifiers.")
    ] = ()
    manufacturer_identifier: Annotated[
        TypedIdentifier | None,
        Field(description="Identifier of the manufacturer, e.g. its ROR."),
    ] = None
    model_identifier: Annotated[
        TypedIdentifier | None,
        Field(description="Identifier of the model, e.g. a catalogue URL."),
    ] = None
    type_identifier: Annotated[
        TypedIdentifier | None,
        Field(description="Vocabulary term of the type, e.g. an FBbi or OBI IRI."),
    ] = None
    measured_variables: Annotated[
        tuple[_NonEmpty, ...], Field(description="What the instrument measures, free text.")
    ] = ()
    commissioned: Annotated[
        date | None, Field(description="Date the instrument was commissioned (YYYY-MM-DD).")
    ] = None
    decommissioned: Annotated[
        date | None,
        Field(description="Date it was decommissioned (YYYY-MM-DD)."),
    ] = None
    alternate_identifiers: Annotated[
        tuple[AlternateIdentifier, ...],
        Field(
            description="Serial and inventory numbers; a SerialNumber is checked like "
            "serial_number."
        ),
    ] = ()
    related_identifiers: Annotated[
        tuple[RelatedIdentifier, ...],
        Field(description="Components, manuals and other related resources."),
    ] = ()

    @field_validator("manufacturer_identifier", "model_identifier", "type_identifier")
    @classmethod
    def _names_what_it_identifies(
        cls, identifier: TypedIdentifier | None, info: ValidationInfo
    ) -> TypedIdentifier | None:
        named = str(info.field_name).removesuffix("_identifier")
        if identifier is not None and not info.data.get(named):
            raise PydanticCustomError("unnamed", f"needs instrument.{named} set too")
        return identifier

    @field_validator("decommissioned")
    @classmethod
    def _after_commissioning(cls, end: date | None, info: ValidationInfo) -> date | None:
        start = info.data.get("commissioned")
        if end is not None and isinstance(start, date) and end < start:
            raise PydanticCustomError("order", "must not be before commissioned")
        return end

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
    format: Annotated[
        Literal["package", "ro-crate"],
        Field(
            description="What is delivered: 'package', the package JSON; 'ro-crate', the "
            "package rendered as an RO-Crate 1.1 metadata document (JSON-LD), posted as "
            "application/ld+json or written as <package_id>.ro-crate-metadata.json. The "
            "outbox holds the package either way; the package_id stays the Idempotency-Key."
        ),
    ] = "package"
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
    retain_dates: Annotated[
        bool,
        Field(
            description="Deprecated: write dates: keep. true is read as dates: keep (and "
            "contradicts any other dates value); false leaves dates to decide."
        ),
    ] = False
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
    dates: Annotated[
        Literal["remove", "shift", "keep"],
        Field(
            description="DICOM dates: 'shift' moves every date of a patient back by the "
            "same keyed number of whole days (1 to 3650; the profile's Retain Longitudinal "
            "Temporal Information with Modified Dates option: intervals and times of day "
            "stay, acquisition.started is present and shifted); 'remove' drops them; 'keep' "
            "keeps them unchanged (Full Dates option)."
        ),
    ] = "shift"
    burned_in: Annotated[
        Literal["warn", "hold"],
        Field(
            description="DICOM images that may carry burned-in text (BurnedInAnnotation or "
            "RecognizableVisualFeatures YES, or unknown for US, SC, OT, XA, ES and secondary "
            "captures; pixels are never cleaned): 'warn' adds a warning to the package and "
            "the log; 'hold' keeps the package in the outbox, undelivered, until "
            "`acqharvest outbox release ID`."
        ),
    ] = "warn"
    paths: Annotated[
        Literal["redact", "keep"],
        Field(
            description="'redact' replaces a file or folder name holding a value the profile "
            "removed (patient name parts, IDs, birth date, accession number; case-insensitive, "
            "parts of 3 characters or more) by a keyed pseudonym, in files[].path, the "
            "path_template fields and every other text of the package; 'keep' leaves names."
        ),
    ] = "redact"
    operator: Annotated[
        Literal["keep", "pseudonymize", "remove"],
        Field(
            description="Operator names of non-DICOM headers (metadata.operator, OME "
            "Experimenter and vendor user fields): kept, replaced by a keyed pseudonym "
            "(stable per installation), or removed. DICOM operator names are always removed."
        ),
    ] = "keep"

    @model_validator(mode="before")
    @classmethod
    def _retain_dates_is_dates_keep(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("retain_dates") is True:
            if data.get("dates", "keep") != "keep":
                raise PydanticCustomError(
                    "retain_dates",
                    "retain_dates: true (deprecated) means dates: keep, which contradicts "
                    f"dates: {data['dates']}; remove retain_dates",
                )
            data = {**data, "dates": "keep"}
        return data

    @property
    def date_policy(self) -> Literal["remove", "shift", "keep"]:
        """``dates``, with the deprecated ``retain_dates: true`` read as ``keep``."""
        return "keep" if self.retain_dates else self.dates


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
            description="Format of the log on standard error: 'auto' is 'console' (for "
            "people) when standard error is a terminal and 'json' otherwise (a service, a "
            "pipe); the log file is always JSON lines."
        ),
    ] = "auto"
    file: Annotated[
        _ConfigPath | None,
        Field(description="JSON-lines log file; null means acqharvest.log in state_dir."),
    ] = None
    max_bytes: Annotated[
        int,
        Field(
            ge=64 * 1024,
            le=2**40,
            description="Size in bytes at which the log file is rotated: renamed to "
            "<file>.1 (older ones shifted to .2 and on) and started afresh.",
        ),
    ] = 10 * 2**20
    backups: Annotated[
        int,
        Field(
            ge=1,
            le=1000,
            description="Rotated log files kept besides the current one; the oldest is deleted.",
        ),
    ] = 5


def _listen_parts(listen: str) -> tuple[str, int]:
    """(host, port) of a ``host:port`` listen address; ``[v6]:port`` for IPv6."""
    host, colon, port = listen.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    unbracketed_v6 = ":" in host and not bracketed
    if not colon or not host or unbracketed_v6 or not port.isdigit() or int(port) > 65535:
        raise PydanticCustomError(
            "listen", "must be host:port, for example 127.0.0.1:9847 or [::1]:9847"
        )
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise PydanticCustomError(
                "listen",
                "the host must be an IP address or localhost, not '{host}'",
                {"host": host},
            ) from None
    return host, int(port)


@with_config(
    _SECTION | ConfigDict(json_schema_extra={"not": {"required": ["token_file", "token_env"]}})
)
# kw_only: listen, the one required key, comes after the keys its check reads
@dataclass(frozen=True, slots=True, kw_only=True)
class StatusServerSettings:
    """The status server: /healthz, /metrics (Prometheus) and a status page."""

    allow_remote: Annotated[
        bool,
        Field(
            description="Allow a listen address other than loopback (0.0.0.0, a LAN "
            "address). Needs token_file or token_env: the status names acquisitions. The "
            "server speaks plain HTTP; put it behind a TLS proxy to cross a network."
        ),
    ] = False
    token_file: Annotated[
        _ConfigPath | None,
        Field(
            description="File whose content is the bearer token every request must carry "
            "(Authorization: Bearer ...). Use this or token_env, not both."
        ),
    ] = None
    token_env: Annotated[
        _NonEmpty | None,
        Field(
            description="Environment variable holding the bearer token every request must "
            "carry. Use this or token_file, not both."
        ),
    ] = None
    listen: Annotated[
        _NonEmpty,
        Field(
            description="host:port to serve on: 127.0.0.1:PORT or [::1]:PORT (loopback). "
            "Any other address is refused unless allow_remote is true and a token is set."
        ),
    ]

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) to bind."""
        return _listen_parts(self.listen)

    @field_validator("token_env")
    @classmethod
    def _one_token_source(cls, token_env: str | None, info: ValidationInfo) -> str | None:
        if token_env is not None and info.data.get("token_file") is not None:
            raise PydanticCustomError(
                "token", "token_file and token_env are mutually exclusive; set only one"
            )
        return token_env

    @field_validator("listen")
    @classmethod
    def _loopback_unless_allowed(cls, listen: str, info: ValidationInfo) -> str:
        host, _ = _listen_parts(listen)
        if host == "localhost" or ipaddress.ip_address(host).is_loopback:
            return listen
        if not info.data.get("allow_remote"):
            raise PydanticCustomError(
                "remote",
                "{host} is not a loopback address; the status server listens on 127.0.0.1 "
                "or [::1] unless status_server.allow_remote is true and a token is set",
                {"host": host},
            )
        if info.data.get("token_file") is None and info.data.get("token_env") is None:
            raise PydanticCustomError(
                "token",
                "{host} is not a loopback address: status_server.allow_remote needs "
                "status_server.token_file or status_server.token_env",
                {"host": host},
            )
        return listen


def default_state_dir() -> Path:
    """``state_dir`` when the config names none: where the platform keeps a service's data
    (beside the service's default config on Windows and macOS)."""
    if sys.platform == "win32":
        return Path(os.environ.get("PROGRAMDATA", "C:\\ProgramData"), "acqharvest", "state")
    elif sys.platform == "darwin":  # branches, so that mypy checks each platform's part
        return Path("/Library/Application Support/acqharvest/state")
    else:
        return Path("/var/lib/acqharvest")


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
            "It must be outside every watched folder. Default: the platform's place for a "
            "service's data, /var/lib/acqharvest on Linux, C:\\ProgramData\\acqharvest\\state "
            "on Windows, /Library/Application Support/acqharvest/state on macOS.",
        ),
    ] = field(default_factory=default_state_dir)
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
    sidecar_names: Annotated[
        tuple[_SidecarName, ...],
        Field(
            description="File names of sidecars: key/value files (.xlsx, .csv or .yaml) a "
            "microscopist puts in an acquisition's folder or any folder above it, up to the "
            "watch folder. Their values go into the package's acquisition.annotations, the "
            "nearest file winning key by key; a file with one of these names is never "
            "harvested as an acquisition itself. An empty list reads no sidecars."
        ),
    ] = DEFAULT_SIDECAR_NAMES
    people: Annotated[
        _ConfigPath | None,
        Field(
            description="CSV or XLSX file of the people who acquire (columns username, name, "
            "orcid, email, group; username and name required): the operator's full name, "
            "ORCID iD and group go into packages. Read at start and again whenever it "
            "changes. Relative to the config file's folder."
        ),
    ] = None
    people_include_email: Annotated[
        bool,
        Field(
            description="Also put the operator's e-mail address from the people file into "
            "packages. Off by default: packages travel further than the people file."
        ),
    ] = False
    facility: Annotated[
        FacilitySettings | None,
        Field(description="The facility, as packages name it (name and ROR id)."),
    ] = None
    license: Annotated[
        Annotated[_NonEmpty, AfterValidator(_license)] | None,
        Field(description="License of the data, as an SPDX id (CC-BY-4.0) or a URL."),
    ] = None
    status_server: Annotated[
        StatusServerSettings | None,
        Field(
            description="Serve /healthz, /metrics and a status page for the microscopist; "
            "null (the default) serves nothing."
        ),
    ] = None
    original_metadata_max_bytes: Annotated[
        int,
        Field(
            ge=64 * 1024,
            le=64 * 1024 * 1024,
            description="Most bytes of a file's own metadata document (the OME-XML of an "
            "OME-TIFF or bioformats2raw store) kept whole in a package's original_metadata; "
            "a longer one keeps its first bytes and is marked ome_xml_cut, with a warning. "
            "original_metadata as a whole may take twice this plus 256 KiB; beyond that its "
            "largest entries are dropped, with a warning.",
        ),
    ] = ORIGINAL_METADATA_MAX_BYTES
    #: where the config came from, for messages: set by the loader, not a key of the file.
    source: Annotated[str, SkipJsonSchema()] = EMBEDDED_SOURCE
