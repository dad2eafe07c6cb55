"""The configuration file: YAML -> the frozen ``settings.Settings``, validated by pydantic.

Owns the config schema (its field descriptions are the reference docs), error messages that
name the file, line and key path, and the embedded demo default.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeGuard, get_args, get_type_hints
from urllib.parse import SplitResult

import yaml
from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError

from acqharvest.settings import CONTROL, Loading, Settings, resolve_path
from acqharvest.settings import DEFAULT_EXCLUDE as DEFAULT_EXCLUDE
from acqharvest.settings import EMBEDDED_SOURCE as EMBEDDED_SOURCE
from acqharvest.settings import MAX_MEMORY_MB as MAX_MEMORY_MB
from acqharvest.settings import MAX_WORKERS as MAX_WORKERS
from acqharvest.urls import credential_parameters, is_loopback

#: environment variable naming the config file when none is passed.
CONFIG_ENV = "ACQHARVEST_CONFIG"

_SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"

_Loc = tuple[str | int, ...]

#: most values (mappings, lists, scalars) a config may hold once its YAML aliases are
#: expanded: a real config holds hundreds, a config of a thousand watch folders tens of
#: thousands; a few lines of nested aliases hold billions.
MAX_NODES = 100_000

#: validates a config file's data straight into the frozen settings the stages use.
_SETTINGS = TypeAdapter(Settings)
#: ``Settings.source`` says where the config came from; the file itself may not set it.
_NOT_A_KEY = "source"


class ConfigError(Exception):
    """The configuration is unusable; ``messages`` holds one line per problem found."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


def _url_policy(url: str, parts: SplitResult, allow_plaintext: bool) -> None:
    """What delivery refuses in an endpoint URL (``Loading.url_policy``)."""
    if credential_parameters(url):
        raise PydanticCustomError(
            "credentials",
            "must not carry a credential in its query ({names}); put it in token_file or token_env",
            {"names": ", ".join(credential_parameters(url))},
        )
    if parts.scheme == "http" and not is_loopback(parts.hostname or "") and not allow_plaintext:
        raise PydanticCustomError(
            "plaintext",
            "plain http:// to a host other than loopback would send packages and the "
            "token unencrypted; use https:// or set endpoint.allow_plaintext: true",
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
    if _NOT_A_KEY in data:
        problems.append(((_NOT_A_KEY,), _unknown_key(_NOT_A_KEY, _keys(Settings))))
    try:
        settings = _SETTINGS.validate_python(
            {**data, _NOT_A_KEY: source},
            context=Loading(base_dir=base_dir, url_policy=_url_policy),
        )
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
    return settings


def is_embedded_default(settings: Settings) -> bool:
    """True when ``settings`` came from the embedded demo config, not a file."""
    return settings.source == EMBEDDED_SOURCE


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the config file, generated from the models."""
    return {"$schema": _SCHEMA_URI, **_SETTINGS.json_schema()}


def json_schema_text() -> str:
    """``json_schema()`` exactly as committed in ``config/acqharvest.schema.json``."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


# --------------------------------------------------------------------------- helpers


def _overlaps(data: Mapping[Any, Any], base_dir: Path) -> list[tuple[_Loc, str]]:
    """Folders the daemon writes to must not lie in a folder it watches (it would harvest them).

    Compared as written, through symbolic links, and by device and inode (a bind mount):
    any path that leads there would be harvested. Works on the raw data so these problems
    are reported together with every other one.
    """
    watch = data.get("watch")
    roots = [
        (i, resolve_path(item["path"], base_dir))
        for i, item in enumerate(watch if isinstance(watch, list) else [])
        if isinstance(item, dict) and _usable_path(item.get("path"))
    ]
    problems: list[tuple[_Loc, str]] = []
    state_dir = data.get("state_dir")
    if _usable_path(state_dir):
        state = resolve_path(state_dir, base_dir)
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
    status = data.get("status_server")
    endpoint = endpoint if isinstance(endpoint, dict) else {}
    log = log if isinstance(log, dict) else {}
    status = status if isinstance(status, dict) else {}
    # Paths the daemon writes, or secrets it reads: inside a watched folder they would be
    # harvested (a log would even be harvested again every time it grows).
    inside_rules = (
        (("endpoint", "path"), endpoint.get("path"), "delivered packages would be harvested again"),
        (("log", "file"), log.get("file"), "the log would be harvested as it grows"),
        (("endpoint", "token_file"), endpoint.get("token_file"), "the secret would be harvested"),
        (("endpoint", "ca_bundle"), endpoint.get("ca_bundle"), "it would be harvested"),
        (("endpoint", "client_cert"), endpoint.get("client_cert"), "it would be harvested"),
        (("endpoint", "client_key"), endpoint.get("client_key"), "the key would be harvested"),
        (("people",), data.get("people"), "the people file would be harvested"),
        (
            ("status_server", "token_file"),
            status.get("token_file"),
            "the secret would be harvested",
        ),
    )
    for loc, raw, consequence in inside_rules:
        if not _usable_path(raw):
            continue
        target = resolve_path(raw, base_dir)
        problems += [
            (loc, f"{overlap}; {consequence}")
            for i, root in roots
            if (overlap := _overlap(target, root, f"watch[{i}].path", either_way=False))
        ]
    return problems


def _usable_path(raw: object) -> TypeGuard[str]:
    # a control character is reported by the validation; a NUL would break os.stat here
    return isinstance(raw, str) and bool(raw) and not CONTROL.search(raw)


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
    if kind == "unexpected_keyword_argument":
        return _unknown_key(str(error["loc"][-1]), _keys(_section_at(error["loc"][:-1])))
    if kind == "missing":
        return "required key is missing"
    if kind == "dataclass_type":
        return "should be a mapping of keys to values"
    if kind in ("list_type", "tuple_type"):
        return "should be a list"
    if kind in ("string_too_short", "too_short"):
        return "must not be empty"
    if kind == "finite_number":
        # infinity and NaN (1e309 reads as infinity): name the limit the key has
        section = _section_at(error["loc"][:-1])
        hint = get_type_hints(section, include_extras=True)[str(error["loc"][-1])]
        limits = [
            f" of at most {m.le:g}"
            for info in get_args(hint)[1:]
            if isinstance(info, FieldInfo)
            for m in info.metadata
            if hasattr(m, "le")
        ]
        return "must be a finite number" + "".join(limits)
    return error["msg"]


def _unknown_key(unknown: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(unknown, allowed, n=1, cutoff=0.8)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown key ({hint}allowed: {', '.join(allowed)})"


def _keys(section: type) -> list[str]:
    """The keys a config section may hold, in declaration order."""
    return [field.name for field in fields(section) if field.name != _NOT_A_KEY]


def _section_at(loc: Sequence[str | int]) -> type:
    """The settings class that validates the mapping at ``loc`` (list indexes are skipped)."""
    section: type = Settings
    for part in loc:
        if isinstance(part, str):
            annotation = get_type_hints(section)[part]
            # tuple[WatchSettings, ...] -> WatchSettings
            section = next(
                arg
                for arg in (annotation, *get_args(annotation))
                if isinstance(arg, type) and is_dataclass(arg)
            )
    return section


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
