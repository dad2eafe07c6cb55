"""The rules behind the conformance checks, as functions that return readable problems.

Each ``*_problems`` function returns a list of sentences, empty when all is well, so a
failing check says everything that is wrong at once.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, get_args

from acqharvest import adapter_api
from acqharvest.adapter_api import (
    FIELD_TYPES,
    HEAD_BYTES,
    NORMALIZED_FIELDS,
    Adapter,
    AdapterInfo,
    AdapterOutput,
    Claim,
    FileProbe,
    Stability,
    digests_problem,
    identifier_problem,
    media_types_problem,
    value_problem,
)
from acqharvest.readonly import FileReader

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def probe_of(path: Path) -> FileProbe:
    """The probe the agent would build for ``path`` (size and first ``HEAD_BYTES``)."""
    size = path.stat().st_size
    return FileProbe(path, size, FileReader().head(path, HEAD_BYTES))


def digests_of(info: AdapterInfo, paths: Iterable[Path]) -> dict[Path, dict[str, str]]:
    """The ``Draft.digests`` the agent hands ``extract`` for ``paths``: each file read whole
    once, for its sha256 and the digests ``info.digests`` asks for (by a reader of its own,
    so the bytes never count as the adapter's)."""
    found: dict[Path, dict[str, str]] = {}
    for path in paths:
        _, sha256, extra = FileReader().head_and_digests(path, 0, info.digests_for(path))
        found[path] = {**extra, "sha256": sha256}
    return found


def package_dir(adapter: Adapter) -> Path:
    """The folder of the module that defines the adapter's class."""
    # imported, not looked up in sys.modules: a test runner may have unloaded it since
    module = importlib.import_module(type(adapter).__module__)
    if module.__file__ is None:
        raise LookupError(f"{type(adapter).__module__} has no file; set cases_dir")
    return Path(module.__file__).resolve().parent


def resolve_samples(adapter: Adapter, roots: Iterable[Path]) -> list[Path]:
    """The adapter's ``info.samples`` that exist under one of ``roots`` or its package."""
    candidates = [*roots, package_dir(adapter)]
    found = []
    for rel in adapter.info.samples:
        for root in candidates:
            if (root / rel).is_file():
                found.append(root / rel)
                break
    return found


def drafted_order(claims: Mapping[Path, Claim]) -> list[Path]:
    """The files of one group in the order the agent drafts them: the primary first.

    The agent elects as primary the first file, by path, whose claim says ``primary``, and
    lists the others after it by path; a group without one takes its first file by path.
    """
    return sorted(claims, key=lambda path: (claims[path].role != "primary", path))


def grouping_problems(claims: Mapping[Path, Claim]) -> list[str]:
    """How a case's file list (``claims`` in case order) differs from the agent's draft."""
    listed = list(claims)
    drafted = drafted_order(claims)
    problems = []
    if listed[0] != drafted[0]:
        problems.append(
            f"the case lists {listed[0].name} first, but the claims elect {drafted[0].name} "
            f"as primary (role {claims[drafted[0]].role!r}): list it first"
        )
    for path, claim in claims.items():
        listed_here = {Path(os.path.relpath(other, path.parent)).as_posix() for other in listed}
        missing = sorted(set(claim.expects) - listed_here)
        if missing:
            problems.append(
                f"{path.name} expects {missing}, which the case does not list: the agent "
                "would wait for them; add them to the case"
            )
    return problems


def info_problems(info: AdapterInfo, entry_point: str | None) -> list[str]:
    """What is wrong with an adapter's ``info``."""
    problems = []
    if not _NAME.match(info.name):
        problems.append(f"name {info.name!r} is not lowercase_snake")
    if entry_point is not None and info.name != entry_point:
        problems.append(f"name {info.name!r} differs from the entry point {entry_point!r}")
    if info.stability not in get_args(Stability):
        problems.append(f"stability {info.stability!r} is not one of {get_args(Stability)}")
    if not info.version or not info.title:
        problems.append("version and title must be set")
    if not info.formats:
        problems.append("formats is empty")
    if not info.fields:
        problems.append("fields is empty: declare every metadata key extract emits")
    if problem := digests_problem(info):
        problems.append(problem)
    if problem := media_types_problem(info):
        problems.append(problem)
    seen: set[str] = set()
    for spec in info.fields:
        if spec.key in seen:
            problems.append(f"field {spec.key} is declared twice")
        seen.add(spec.key)
        if spec.type not in FIELD_TYPES:
            problems.append(f"field {spec.key}: type {spec.type!r} is not one of {[*FIELD_TYPES]}")
        catalogue = NORMALIZED_FIELDS.get(spec.key)
        if catalogue is not None and (spec.type, spec.unit) != (catalogue.type, catalogue.unit):
            problems.append(
                f"field {spec.key}: declared as {spec.type}/{spec.unit}, the catalogue "
                f"(adapter_api.NORMALIZED_FIELDS) says {catalogue.type}/{catalogue.unit}"
            )
        if not spec.source and not spec.description:
            problems.append(f"field {spec.key}: say where it is read (source) or what it means")
    return problems


def emitted_fields(
    metadata: Mapping[str, Any], declared: set[str]
) -> tuple[dict[str, Any], list[str]]:
    """(declared dotted key -> value, undeclared dotted keys) of a metadata mapping.

    A mapping value is descended into unless its own key is declared (``channels`` is a
    declared list; ``image`` is not declared, ``image.size_x`` is).
    """
    found: dict[str, Any] = {}
    undeclared: list[str] = []

    def walk(mapping: Mapping[str, Any], prefix: str) -> None:
        for key, value in mapping.items():
            dotted = f"{prefix}{key}"
            if dotted in declared:
                found[dotted] = value
            elif isinstance(value, Mapping):
                walk(value, f"{dotted}.")
            else:
                undeclared.append(dotted)

    walk(metadata, "")
    return found, undeclared


def field_problems(info: AdapterInfo, output: AdapterOutput) -> list[str]:
    """Undeclared keys, and values whose type differs from their declaration."""
    specs = {spec.key: spec for spec in info.fields}
    found, undeclared = emitted_fields(output.metadata, set(specs))
    problems = [f"{key} is emitted but not declared in info.fields" for key in undeclared]
    for key, value in sorted(found.items()):
        problem = value_problem(specs[key].type, value)
        if problem:
            problems.append(f"{key} = {value!r}: {problem}")
        elif key == "channels":
            problems.extend(channel_problems(value))
    if output.started is not None and value_problem("datetime", output.started):
        problems.append(f"started = {output.started!r} is not RFC 3339")
    if not isinstance(output.format, str) or not output.format:
        problems.append(f"format {output.format!r} must be a non-empty string")
    incomplete = output.incomplete
    if incomplete is not None and (not isinstance(incomplete, str) or not incomplete.strip()):
        problems.append(f"incomplete = {incomplete!r}: give the reason as text, or None")
    problems.extend(identifier_problems(output))
    return problems


def identifier_problems(output: AdapterOutput) -> list[str]:
    """Malformed identifiers, and paths that lead to no value of the output.

    A path that leads nowhere would leave the value it meant wherever it really is.
    """
    trees = {"metadata": output.metadata, "original_metadata": output.original_metadata}
    problems = []
    for index, item in enumerate(output.identifiers):
        problem = identifier_problem(item)
        if problem is None and item.path:
            found: Any = trees
            for key in item.path:
                found = found.get(key) if isinstance(found, Mapping) else None
            if found is None:
                problem = f"{item.attribute}: path {item.path!r} leads to no value of the output"
        if problem is not None:
            problems.append(f"identifiers[{index}]: {problem}")
    return problems


def channel_problems(channels: Iterable[Any]) -> list[str]:
    """Items of ``channels`` that are not mappings of well-typed ``CHANNEL_FIELDS`` keys."""
    problems = []
    for index, item in enumerate(channels):
        where = f"channels[{index}]"
        if isinstance(item, Mapping) and not item:
            problems.append(f"{where} is empty (leave it out instead)")
        for key, problem in adapter_api.channel_problems(item).items():
            problems.append(
                f"{where}{'.' + key if key else ''} = {item.get(key, item)!r}: {problem}"
            )
    return problems
