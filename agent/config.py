"""The configuration file: YAML -> validated pydantic models -> frozen ``model.Settings``.

Owns the config schema (its field descriptions are the reference docs), error messages that
name the file, line and key path, and the embedded demo default.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeGuard, get_args
from urllib.parse import SplitResult, urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from acqharvest.identity import template_problem
from acqharvest.model import (
    DeidentifySettings,
    EndpointSettings,
    InstrumentSettings,
    LogSettings,
    Settings,
    WatchMode,
    WatchSettings,
)
from acqharvest.urls import credential_parameters, is_loopback

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
#: environment variable naming the config file when none is passed.
CONFIG_ENV = "ACQHARVEST_CONFIG"

_SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"

_Loc = tuple[str | int, ...]

#: one day and one week in seconds: the upper bounds of the time settings.
DAY = 86_400.0
WEEK = 7 * DAY
#: most worker processes: each is a process with its own memory budget, so a few per core.
MAX_WORKERS = 64
#: largest ``extract_memory_mb``: 1 TiB.
MAX_MEMORY_MB = 1_048_576
#: most values (mappings, lists, scalars) a config may hold once its YAML aliases are
#: expanded: a real config holds hundreds, a config of a thousand watch folders tens of
#: thousands; a few lines of nested aliases hold billions.
MAX_NODES = 100_000
#: C0 and C1 control characters and DEL: a NUL cannot be in a path, and a newline or an
#: escape in an instrument id goes into every package and log line unseen.
_CONTROL_CHARS = r"\x00-\x1f\x7f-\x9f"
_CONTROL = re.compile(f"[{_CONTROL_CHARS}]")


def _no_control(value: str) -> str:
    if found := _CONTROL.search(value):
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


class ConfigError(Exception):
    """The configuration is unusable; ``messages`` holds one line per problem found."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


# --------------------------------------------------------------------------- models


class _Section(BaseModel):
    # 1e309 reads as infinity: a settle time that never ends, not a typo to accept
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class InstrumentConfig(_Section):
    """PIDINST-style identity of the instrument, copied into every package."""

    # serial numbers and models are often plain numbers in YAML
    model_config = ConfigDict(coerce_numbers_to_str=True)

    id: _Text = Field(
        description="Persistent identifier of the instrument (a PIDINST handle, DOI or URN). "
        "It is part of every package id, so changing it re-sends everything."
    )
    name: _Text | None = Field(default=None, description="Human-readable instrument name.")
    manufacturer: _Text | None = Field(default=None, description="Manufacturer of the instrument.")
    model: _Text | None = Field(default=None, description="Model name of the instrument.")
    serial_number: _Text | None = Field(
        default=None, description="Serial number of the instrument."
    )
    type: _Text | None = Field(
        default=None,
        description="Kind of instrument, for example 'MRI scanner' or 'electron microscope'.",
    )
    owner: _Text | None = Field(
        default=None, description="Facility or group that runs the instrument."
    )

    @field_validator("id")
    @classmethod
    def _id_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError("blank", "must not be empty")
        return value


class WatchConfig(_Section):
    """One instrument output folder to watch."""

    path: _NonEmpty = Field(
        description="Folder the instrument writes acquisitions into. Relative paths are "
        "relative to the config file's folder."
    )
    include: tuple[str, ...] = Field(
        default=("*",),
        description="Shell-style patterns; only file names matching one are harvested.",
    )
    exclude: tuple[str, ...] = Field(
        default=DEFAULT_EXCLUDE,
        description="Shell-style patterns of file names never harvested (temporary and "
        "partial files, OS clutter). Setting this replaces the default list.",
    )
    recursive: bool = Field(default=True, description="Also watch every subfolder.")
    settle_seconds: float = Field(
        default=10.0,
        ge=0,
        le=DAY,
        description="A file counts as complete once its size and modification time have not "
        "changed for this many seconds.",
    )
    settle_on_close: bool = Field(
        default=True,
        description="When the operating system reports that the writer closed a file "
        "(Linux), one confirming look a second later is enough. Turn off for software that "
        "reopens a file for every chunk it appends.",
    )
    blank_head_wait_seconds: float = Field(
        default=300.0,
        ge=0,
        le=DAY,
        description="A file whose first 4 KiB are all zero bytes is taken for space the "
        "software reserved but has not written yet: it waits up to this many seconds for "
        "content, then is harvested anyway. 0 turns the check off.",
    )
    mode: WatchMode = Field(
        default="auto",
        description="How changes are noticed: 'native' uses operating-system events, "
        "'polling' re-lists the folder (needed for SMB/NFS shares), 'auto' picks for you.",
    )
    path_template: _Text | None = Field(
        default=None,
        description="Folder-naming convention below this folder from which fields such as "
        "the operator and project are read, for example '{operator}/{project}/**': {name} "
        "matches within one folder level, * any text within one level, ** any number of "
        "levels; the file name is never used. Null reads none.",
    )

    @field_validator("path_template")
    @classmethod
    def _usable_template(cls, template: str | None) -> str | None:
        if template is not None and (problem := template_problem(template)):
            raise PydanticCustomError("template", problem)
        return template

    group_quiet_seconds: float | None = Field(
        default=None,
        ge=0,
        le=DAY,
        description="How long a multi-file acquisition (for example a DICOM series) must "
        "receive no new files before it is packaged; null means settle_seconds.",
    )
    group_timeout_seconds: float = Field(
        default=3600.0,
        gt=0,
        le=WEEK,
        description="An acquisition still incomplete after this many seconds is sent "
        "anyway, flagged incomplete.",
    )
    adapters: tuple[_Text, ...] = Field(
        default=(),
        description="Names of the format adapters allowed to read files in this folder; "
        "empty means every enabled adapter.",
    )


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


class EndpointConfig(_Section):
    """Where packages are delivered: an HTTP endpoint or a local folder."""

    # the cross-field rules of the validators below, for editors that read the schema
    model_config = ConfigDict(
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

    # allow_plaintext and token_file come before the fields whose checks read them
    type: Literal["http", "directory"] = Field(
        description="'http' posts each package to url; 'directory' writes it as a JSON file "
        "into path."
    )
    allow_plaintext: bool = Field(
        default=False,
        description="Allow a plain http:// url to a host other than loopback. Packages and "
        "the token then cross the network unencrypted.",
    )
    url: str | None = Field(
        default=None,
        validate_default=True,
        description="URL packages are posted to; required when type is 'http'. Must be "
        "https:// unless the host is loopback or allow_plaintext is true. No credential in "
        "it (user:pass@, or a query parameter such as token, api_key, sig or code); query "
        "values are masked wherever the URL is shown.",
    )
    proxy: _NonEmpty | None = Field(
        default=None,
        description="http:// or https:// URL of a proxy to reach an https url through "
        "(CONNECT: TLS stays end to end, the proxy sees neither packages nor token). Proxy "
        "credentials may go in it (http://user:pass@host:port) and are never logged. "
        "Environment variables such as HTTPS_PROXY are ignored; null connects directly.",
    )
    path: _NonEmpty | None = Field(
        default=None,
        validate_default=True,
        description="Folder packages are written to; required when type is 'directory'. "
        "Must be outside every watched folder.",
    )
    token_file: _NonEmpty | None = Field(
        default=None,
        description="File whose content is the bearer token sent to the endpoint. Use this "
        "or token_env, not both.",
    )
    token_env: _NonEmpty | None = Field(
        default=None,
        description="Environment variable holding the bearer token. Use this or token_file, "
        "not both.",
    )
    ca_bundle: _NonEmpty | None = Field(
        default=None,
        description="PEM file of CA certificates trusted for https; null uses the system "
        "store. TLS is always verified.",
    )
    client_cert: _NonEmpty | None = Field(
        default=None,
        description="PEM client certificate presented to the endpoint (mutual TLS). Its key "
        "is in client_key, or in this file when client_key is not set.",
    )
    client_key: _NonEmpty | None = Field(
        default=None,
        description="PEM private key of client_cert, unencrypted; keep it readable only by "
        "the account acqharvest runs as. Never logged.",
    )
    require_receipt: bool = Field(
        default=False,
        description="Count a 2xx or 409 as delivered only when its body is a JSON receipt "
        "naming the package_id. Without it, an empty body or a JSON object counts too. An "
        "HTML page or other text, or a receipt that names another package or another "
        "sha256, never counts, whatever this says. Recommended: it also guards against an "
        "endpoint that answers 409 while the first request with the same key is still in "
        "progress.",
    )
    timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=DAY,
        description="Longest one delivery attempt may take, connecting, sending and reading "
        "the answer together; an endpoint still answering then is cut off and retried.",
    )
    max_backoff_seconds: float = Field(
        default=300.0,
        gt=0,
        le=DAY,
        description="Longest wait between retries of a failed delivery.",
    )

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
        if credential_parameters(url):
            raise PydanticCustomError(
                "credentials",
                "must not carry a credential in its query ({names}); put it in token_file or "
                "token_env",
                {"names": ", ".join(credential_parameters(url))},
            )
        if (
            parts.scheme == "http"
            and not is_loopback(parts.hostname or "")
            and not info.data.get("allow_plaintext", False)
        ):
            raise PydanticCustomError(
                "plaintext",
                "plain http:// to a host other than loopback would send packages and the "
                "token unencrypted; use https:// or set endpoint.allow_plaintext: true",
            )
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
    def _path_for_directory(cls, path: str | None, info: ValidationInfo) -> str | None:
        if path is None and info.data.get("type") == "directory":
            raise PydanticCustomError("required", "required when type is directory")
        return path

    @field_validator("client_key")
    @classmethod
    def _key_needs_cert(cls, client_key: str | None, info: ValidationInfo) -> str | None:
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


class DeidentifyConfig(_Section):
    """Patient-data policy. Identifiers are removed unless a retain option says otherwise."""

    enabled: bool = Field(
        default=True, description="Remove patient identifiers from the metadata before packaging."
    )
    retain_uids: bool = Field(
        default=False, description="Keep study, series and instance UIDs unchanged."
    )
    retain_device_identity: bool = Field(
        default=True,
        description="Keep what identifies the instrument (serial numbers, station names, "
        "detector IDs): the profile's Retain Device Identity option.",
    )
    retain_dates: bool = Field(default=False, description="Keep dates and times unchanged.")
    retain_patient_characteristics: bool = Field(
        default=False, description="Keep age, sex, size and weight of the patient."
    )
    retain_descriptions: bool = Field(
        default=False,
        description="Keep free-text descriptions (study, series and protocol names, comments); "
        "they help find data but may hold a name or a case number.",
    )


class LogConfig(_Section):
    """Logging of the daemon itself."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Least severe level that is logged."
    )
    format: Literal["auto", "json", "console"] = Field(
        default="auto",
        description="Format of the log on standard error: 'auto' is 'console' on a terminal "
        "and 'json' otherwise.",
    )
    file: _NonEmpty | None = Field(
        default=None,
        description="JSON-lines log file; null means acqharvest.log in state_dir.",
    )


class ConfigFile(_Section):
    """The acqharvest configuration file."""

    model_config = ConfigDict(title="acqharvest configuration")

    instrument: InstrumentConfig = Field(description="The instrument this daemon runs beside.")
    watch: list[WatchConfig] = Field(
        min_length=1, description="The folders to watch; at least one."
    )
    endpoint: EndpointConfig = Field(description="Where packages are delivered.")
    state_dir: _NonEmpty = Field(
        description="Folder for the outbox, the registry of harvested files and the log. It "
        "must be outside every watched folder."
    )
    deidentify: DeidentifyConfig = Field(
        default=DeidentifyConfig(), description="Patient-data policy."
    )
    log: LogConfig = Field(default=LogConfig(), description="Logging.")
    workers: int = Field(
        default=2,
        ge=0,
        le=MAX_WORKERS,
        description="Worker processes for header extraction and checksums; 0 runs them "
        f"in the main process. At most {MAX_WORKERS}.",
    )
    rescan_seconds: float = Field(
        default=300.0,
        gt=0,
        le=WEEK,
        description="Seconds between full scans of every watched folder, which catch files "
        "the change events missed.",
    )
    extract_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        le=DAY,
        description="Longest a worker process may spend in an adapter on one file's headers "
        "or one acquisition's metadata, and longest a checksum may go without reading a byte; "
        "a worker stuck longer is terminated. A hung adapter fails its file with one failure "
        "naming this budget; a stalled checksum (a dead network share) is read again later, "
        "with backoff. Checksums of files of any size take as long as they need while they "
        "progress. Needs workers >= 1.",
    )
    extract_memory_mb: int | None = Field(
        default=2048,
        ge=64,
        le=MAX_MEMORY_MB,
        description="Address-space limit of each worker process in MiB (Linux and other "
        "POSIX systems that enforce RLIMIT_AS; not enforced on Windows or macOS); an adapter "
        "that needs more fails on that file only. null: no limit. Needs workers >= 1.",
    )


# --------------------------------------------------------------------------- public API


def load_settings(path: Path | None, *, cwd: Path | None = None) -> Settings:
    """Load the config file at ``path``; None means ``$ACQHARVEST_CONFIG`` or the demo default.

    Relative paths inside a file resolve against the file's folder; inside the embedded
    default they resolve against ``cwd`` (default: the current directory).
    """
    base = (cwd or Path.cwd()).absolute()
    if path is None and os.environ.get(CONFIG_ENV):
        path = Path(os.environ[CONFIG_ENV])
    if path is None:
        return embedded_settings(cwd=base)
    file = base / path
    try:
        # utf-8-sig: editors on Windows instrument PCs like to write a byte-order mark
        text = file.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: config file is not UTF-8 text: {exc.reason}"]) from exc
    return parse_settings(text, source=str(path), base_dir=file.parent)


def embedded_settings(*, cwd: Path | None = None) -> Settings:
    """The embedded demo default, whatever ``$ACQHARVEST_CONFIG`` says."""
    text = resources.files("acqharvest").joinpath("demo.yaml").read_text(encoding="utf-8")
    return parse_settings(text, source=EMBEDDED_SOURCE, base_dir=(cwd or Path.cwd()).absolute())


def parse_settings(text: str, *, source: str, base_dir: Path) -> Settings:
    """Validate YAML ``text``; ``source`` prefixes messages, relative paths join ``base_dir``."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None and (problem := _alias_problem(node)):
            raise ConfigError([f"{source}: {problem}"])
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        reason = "; ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigError([f"{where}: YAML syntax error: {reason}"]) from exc
    except RecursionError as exc:
        raise ConfigError([f"{source}: YAML nested too deeply to be a config"]) from exc
    finally:
        loader.dispose()
    if node is None:
        raise ConfigError([f"{source}: the config file is empty"])
    if not isinstance(node, yaml.MappingNode) or not isinstance(data, dict):
        raise ConfigError(
            [f"{source}:{node.start_mark.line + 1}: the config must be a mapping of keys to values"]
        )

    base_dir = base_dir.absolute()
    problems = _duplicate_keys(node, ()) + _overlaps(data, base_dir)
    try:
        config = ConfigFile.model_validate(data)
    except ValidationError as exc:
        problems += [(tuple(error["loc"]), _reason(error)) for error in exc.errors()]
    if problems:
        located = sorted(
            ((_line_of(node, loc), loc, reason) for loc, reason in problems),
            key=lambda item: item[0],
        )
        raise ConfigError(
            [f"{source}:{line}: {_dotted(loc)}: {reason}" for line, loc, reason in located]
        )
    return _to_settings(config, source=source, base_dir=base_dir)


def is_embedded_default(settings: Settings) -> bool:
    """True when ``settings`` came from the embedded demo config, not a file."""
    return settings.source == EMBEDDED_SOURCE


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the config file, generated from the models."""
    return {"$schema": _SCHEMA_URI, **ConfigFile.model_json_schema()}


def json_schema_text() -> str:
    """``json_schema()`` exactly as committed in ``config/acqharvest.schema.json``."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


# --------------------------------------------------------------------------- helpers


def _resolve(raw: str, base_dir: Path) -> Path:
    # lexical, not Path.resolve(): folders need not exist yet and symlinks stay as written
    return Path(os.path.normpath(base_dir / os.path.expanduser(raw)))


def _overlaps(data: Mapping[Any, Any], base_dir: Path) -> list[tuple[_Loc, str]]:
    """Folders the daemon writes to must not lie in a folder it watches (it would harvest them).

    Compared as written, through symbolic links, and by device and inode (a bind mount):
    any path that leads there would be harvested. Works on the raw data so these problems
    are reported together with every other one.
    """
    watch = data.get("watch")
    roots = [
        (i, _resolve(item["path"], base_dir))
        for i, item in enumerate(watch if isinstance(watch, list) else [])
        if isinstance(item, dict) and _usable_path(item.get("path"))
    ]
    problems: list[tuple[_Loc, str]] = []
    state_dir = data.get("state_dir")
    if _usable_path(state_dir):
        state = _resolve(state_dir, base_dir)
        problems += [
            (
                ("state_dir",),
                f"{overlap}; the state folder must be outside every watched folder",
            )
            for i, root in roots
            if (overlap := _overlap(state, root, f"watch[{i}].path", either_way=True))
        ]
    endpoint = data.get("endpoint")
    log = data.get("log")
    endpoint = endpoint if isinstance(endpoint, dict) else {}
    log = log if isinstance(log, dict) else {}
    # Paths the daemon writes, or secrets it reads: inside a watched folder they would be
    # harvested (a log would even be harvested again every time it grows).
    inside_rules = (
        (("endpoint", "path"), endpoint.get("path"), "delivered packages would be harvested again"),
        (("log", "file"), log.get("file"), "the log would be harvested as it grows"),
        (("endpoint", "token_file"), endpoint.get("token_file"), "the secret would be harvested"),
        (("endpoint", "ca_bundle"), endpoint.get("ca_bundle"), "it would be harvested"),
        (("endpoint", "client_cert"), endpoint.get("client_cert"), "it would be harvested"),
        (("endpoint", "client_key"), endpoint.get("client_key"), "the key would be harvested"),
    )
    for loc, raw, consequence in inside_rules:
        if not _usable_path(raw):
            continue
        target = _resolve(raw, base_dir)
        problems += [
            (loc, f"{overlap}; {consequence}")
            for i, root in roots
            if (overlap := _overlap(target, root, f"watch[{i}].path", either_way=False))
        ]
    return problems


def _usable_path(raw: object) -> TypeGuard[str]:
    # a control character is reported by the validation; a NUL would break os.stat here
    return isinstance(raw, str) and bool(raw) and not _CONTROL.search(raw)


def _overlap(target: Path, root: Path, root_key: str, *, either_way: bool) -> str | None:
    """How ``target`` lies in the watch folder ``root`` (or, ``either_way``, contains it),
    as a sentence naming both; None when they are apart.

    Looked at as written, then with symbolic links resolved (either may lead into the
    other), then by the device and inode of each existing folder above one against the
    other (a bind mount shows the same folder under another path).
    """
    real_target, real_root = Path(os.path.realpath(target)), Path(os.path.realpath(root))
    shown_target = target if real_target == target else f"{target} (really {real_target})"
    shown_root = root if real_root == root else f"{root}, really {real_root}"
    for inner, outer in ((target, root), (real_target, real_root)):
        if inner == outer:
            return f"{shown_target} is the same folder as {root_key} ({shown_root})"
        if inner.is_relative_to(outer):
            return f"{shown_target} is inside {root_key} ({shown_root})"
        if either_way and outer.is_relative_to(inner):
            return f"{shown_target} contains {root_key} ({shown_root})"
    pairs = [(real_target, real_root, "is inside")]
    if either_way:
        pairs.append((real_root, real_target, "contains"))
    for inner, outer, relation in pairs:
        wanted = _identity(outer)
        if wanted is None:
            continue  # not there yet: nothing can lead into it
        for above in (inner, *inner.parents):
            if _identity(above) == wanted:
                return (
                    f"{shown_target} {relation} {root_key} ({shown_root}): {above} is the "
                    f"same folder as {outer} (device {wanted[0]}, inode {wanted[1]})"
                )
    return None


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file or folder, else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _alias_problem(root: yaml.Node) -> str | None:
    """Why the document's aliases make it unusable: one that expands past ``MAX_NODES``
    values (a "billion laughs" file of a few lines) or refers to a node it is inside.

    Checked before anything walks the data: the duplicate-key check, the validation and
    every later reader would follow each alias again and never finish.
    """
    sizes: dict[int, int] = {}
    entered: set[int] = set()

    def size(node: yaml.Node) -> int:
        # memoized by node: an alias is the very node it names, so this is linear
        known = sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in entered:
            raise _AliasLoop
        entered.add(id(node))
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(key) + size(value) for key, value in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(item) for item in node.value)
        else:
            total = 1
        sizes[id(node)] = total
        return total

    try:
        expanded = size(root)
    except _AliasLoop:
        return "a YAML alias (*name) refers to a node it is inside; write the value out"
    if expanded > MAX_NODES:
        return (
            f"YAML aliases (*name) expand the config to {expanded} values, more than "
            f"{MAX_NODES}; write the values out"
        )
    return None


class _AliasLoop(Exception):
    """An alias inside the node it names: expanding it never ends."""


def _duplicate_keys(node: yaml.Node, loc: _Loc) -> list[tuple[_Loc, str]]:
    """YAML silently keeps the last of two equal keys; an admin almost never means that."""
    problems: list[tuple[_Loc, str]] = []
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            line = key.start_mark.line + 1
            if key.value in first_line:
                problems.append(
                    (
                        (*loc, key.value),
                        f"duplicate key (first set on line {first_line[key.value]})",
                    )
                )
            first_line.setdefault(key.value, line)
            problems += _duplicate_keys(value, (*loc, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems += _duplicate_keys(item, (*loc, i))
    return problems


def _reason(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        unknown = str(error["loc"][-1])
        allowed = list(_model_at(error["loc"][:-1]).model_fields)
        close = difflib.get_close_matches(unknown, allowed, n=1, cutoff=0.8)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"unknown key ({hint}allowed: {', '.join(allowed)})"
    if kind == "missing":
        return "required key is missing"
    if kind in ("model_type", "dict_type"):
        return "should be a mapping of keys to values"
    if kind in ("list_type", "tuple_type"):
        return "should be a list"
    if kind in ("string_too_short", "too_short"):
        return "must not be empty"
    if kind == "finite_number":
        # infinity and NaN (1e309 reads as infinity): name the limit the key has
        field = _model_at(error["loc"][:-1]).model_fields[str(error["loc"][-1])]
        limits = [f" of at most {m.le:g}" for m in field.metadata if hasattr(m, "le")]
        return "must be a finite number" + "".join(limits)
    return error["msg"]


def _model_at(loc: Sequence[str | int]) -> type[BaseModel]:
    """The model class that validates the mapping at ``loc`` (list indexes are skipped)."""
    model: type[BaseModel] = ConfigFile
    for part in loc:
        if isinstance(part, str):
            annotation = model.model_fields[part].annotation
            # list[WatchConfig] -> WatchConfig
            model = next(
                arg
                for arg in (annotation, *get_args(annotation))
                if isinstance(arg, type) and issubclass(arg, BaseModel)
            )
    return model


def _line_of(root: yaml.Node, loc: _Loc) -> int:
    """1-based line of the deepest node on ``loc`` that exists (a missing key: its parent)."""
    node = root
    line = root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            # the last equal key wins, as in the constructed data
            matches = [
                (key, value)
                for key, value in node.value
                if isinstance(key, yaml.ScalarNode) and key.value == part
            ]
            if not matches:
                break
            key, node = matches[-1]
            line = key.start_mark.line + 1
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _dotted(loc: _Loc) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def _optional_path(raw: str | None, base_dir: Path) -> Path | None:
    return None if raw is None else _resolve(raw, base_dir)


def _to_settings(config: ConfigFile, *, source: str, base_dir: Path) -> Settings:
    instrument, endpoint = config.instrument, config.endpoint
    return Settings(
        instrument=InstrumentSettings(
            id=instrument.id,
            name=instrument.name,
            manufacturer=instrument.manufacturer,
            model=instrument.model,
            serial_number=instrument.serial_number,
            type=instrument.type,
            owner=instrument.owner,
        ),
        watch=tuple(
            WatchSettings(
                path=_resolve(watch.path, base_dir),
                include=watch.include,
                exclude=watch.exclude,
                recursive=watch.recursive,
                settle_seconds=watch.settle_seconds,
                settle_on_close=watch.settle_on_close,
                blank_head_wait_seconds=watch.blank_head_wait_seconds,
                mode=watch.mode,
                path_template=watch.path_template,
                group_quiet_seconds=watch.group_quiet_seconds,
                group_timeout_seconds=watch.group_timeout_seconds,
                adapters=watch.adapters,
            )
            for watch in config.watch
        ),
        endpoint=EndpointSettings(
            type=endpoint.type,
            url=endpoint.url,
            path=_optional_path(endpoint.path, base_dir),
            token_file=_optional_path(endpoint.token_file, base_dir),
            token_env=endpoint.token_env,
            ca_bundle=_optional_path(endpoint.ca_bundle, base_dir),
            client_cert=_optional_path(endpoint.client_cert, base_dir),
            client_key=_optional_path(endpoint.client_key, base_dir),
            require_receipt=endpoint.require_receipt,
            timeout_seconds=endpoint.timeout_seconds,
            max_backoff_seconds=endpoint.max_backoff_seconds,
            allow_plaintext=endpoint.allow_plaintext,
            proxy=endpoint.proxy,
        ),
        state_dir=_resolve(config.state_dir, base_dir),
        deidentify=DeidentifySettings(
            enabled=config.deidentify.enabled,
            retain_uids=config.deidentify.retain_uids,
            retain_device_identity=config.deidentify.retain_device_identity,
            retain_dates=config.deidentify.retain_dates,
            retain_patient_characteristics=config.deidentify.retain_patient_characteristics,
            retain_descriptions=config.deidentify.retain_descriptions,
        ),
        log=LogSettings(
            level=config.log.level,
            format=config.log.format,
            file=_optional_path(config.log.file, base_dir),
        ),
        workers=config.workers,
        rescan_seconds=config.rescan_seconds,
        extract_timeout_seconds=config.extract_timeout_seconds,
        extract_memory_mb=config.extract_memory_mb,
        source=source,
    )
