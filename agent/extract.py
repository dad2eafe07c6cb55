"""The extract stage: runs an adapter on one acquisition and never lets it fail the daemon.

Turns any adapter failure into an ``ExtractionFailure`` naming the file, makes the output
JSON-safe, caps ``original_metadata``, names each file's media type (the claiming adapter's
word, else ``application/octet-stream``), and drops, with a warning naming the key, metadata
keys the adapter did not declare and values that are not of their declared type (a
non-finite number, a ``datetime`` or ``started`` that is not RFC 3339, a malformed
``channels`` item). An ``incomplete`` reason leads the warnings.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from acqharvest.adapter_api import (
    ORIGINAL_METADATA_MAX_BYTES,
    Adapter,
    AdapterError,
    AdapterInfo,
    AdapterOutput,
    Draft,
    FieldSpec,
    Identifier,
    Reader,
    channel_problems,
    identifier_problem,
    value_problem,
)
from acqharvest.model import Acquisition, Extraction, ExtractionFailure
from acqharvest.pathtext import escape

#: room in ``original_metadata`` for what the file says besides its one long document.
ORIGINAL_METADATA_ROOM = 256 * 1024
#: nesting deeper than this is stringified; guards against cycles and pathological input.
_MAX_DEPTH = 32

_BINARY = (bytes, bytearray, memoryview)


def original_metadata_cap(document_max_bytes: int) -> int:
    """Serialized size of ``original_metadata`` above which its largest entries are dropped.

    Twice the document cap (JSON escapes every quote of an XML document) plus room for
    the rest, so a document the adapter kept whole is never dropped for its size.
    """
    return 2 * document_max_bytes + ORIGINAL_METADATA_ROOM


def draft_for(
    acquisition: Acquisition, original_metadata_max_bytes: int = ORIGINAL_METADATA_MAX_BYTES
) -> Draft:
    """The adapter's view of an acquisition: its key, its files, primary first, their
    digests (sha256 and whatever else was computed of each as it was hashed), and the
    site's cap on a metadata document kept in ``original_metadata``."""
    primary = acquisition.primary
    others = tuple(m.settled.path for m in acquisition.members if m is not primary)
    return Draft(
        key=acquisition.key,
        primary=primary.settled.path,
        members=(primary.settled.path, *others),
        digests={m.settled.path: {**m.digests, "sha256": m.sha256} for m in acquisition.members},
        original_metadata_max_bytes=original_metadata_max_bytes,
    )


def _media_types(adapter: Adapter | None, draft: Draft) -> dict[Path, str]:
    """Each member's media type, as the claiming adapter names it (the registry refused an
    adapter whose table is malformed)."""
    info = getattr(adapter, "info", None)
    if not isinstance(info, AdapterInfo):
        return {}
    return {path: info.media_type_for(path) for path in draft.members}


def extract(
    acquisition: Acquisition,
    adapter: Adapter | None,
    reader: Reader,
    *,
    memory_limit: int | None = None,
    unavailable: str | None = None,
    original_metadata_max_bytes: int = ORIGINAL_METADATA_MAX_BYTES,
) -> Extraction | ExtractionFailure:
    """Run ``adapter.extract`` on ``acquisition``; every failure becomes an ExtractionFailure.

    ``memory_limit`` is the budget this process runs under, named in the failure when
    the adapter runs out of memory. ``unavailable`` says why the claiming adapter cannot
    read here (its optional reader is not installed): the acquisition is then packaged
    with checksums only, under the adapter's name, with that as its warning. Failures are
    not logged here: the daemon logs each one once, as ``extraction_failed``, where it
    records it. ``original_metadata_max_bytes`` is the site's cap on one metadata document
    (the adapter cuts a longer one) and sets the cap on ``original_metadata`` as a whole.
    """
    draft = draft_for(acquisition, original_metadata_max_bytes)
    media_types = _media_types(adapter, draft)
    if adapter is not None and unavailable is not None:
        formats = adapter.info.formats
        return Extraction(
            acquisition=acquisition,
            adapter=adapter.info.name,
            adapter_version=adapter.info.version,
            format=formats[0].name if formats else "unknown",
            metadata={},
            original_metadata={},
            warnings=(unavailable,),
            media_types=media_types,
        )
    if adapter is None:
        return Extraction(
            acquisition=acquisition,
            adapter="none",
            adapter_version="",
            format="unknown",
            metadata={},
            original_metadata={},
        )
    name = str(getattr(getattr(adapter, "info", None), "name", "?"))
    try:
        output: object = adapter.extract(draft, reader)
    except AdapterError as exc:
        return ExtractionFailure(acquisition, name, exc.path, exc.reason)
    except MemoryError:
        budget = "" if memory_limit is None else f" (memory budget {memory_limit // 2**20} MiB)"
        reason = f"{draft.primary}: adapter {name} ran out of memory reading it{budget}"
        return ExtractionFailure(acquisition, name, draft.primary, reason)
    except Exception as exc:  # noqa: BLE001 - a vendor adapter may raise anything; the daemon goes on
        reason = f"adapter {name} crashed: {type(exc).__name__}: {exc}"
        return ExtractionFailure(acquisition, name, draft.primary, reason)
    if not isinstance(output, AdapterOutput):
        reason = f"adapter {name} returned {type(output).__name__}, not AdapterOutput"
        return ExtractionFailure(acquisition, name, draft.primary, reason)

    notes: list[str] = []
    specs = {spec.key: spec for spec in adapter.info.fields}
    metadata = _declared_only(_jsonable(output.metadata, "metadata", notes), specs, "", notes)
    original = _jsonable(output.original_metadata, "original_metadata", notes)
    if not isinstance(original, dict):
        notes.append("original_metadata was not a mapping; dropped")
        original = {}
    original = _cap(original, original_metadata_cap(original_metadata_max_bytes), notes)
    started = output.started
    if started is not None and (problem := value_problem("datetime", started)):
        notes.append(f"started: {problem}; dropped")
        started = None
    incomplete = _incomplete(output.incomplete)
    if incomplete is not None:
        notes.insert(0, f"acquisition incomplete: {incomplete}")
    return Extraction(
        acquisition=acquisition,
        adapter=name,
        adapter_version=adapter.info.version,
        format=str(output.format),
        metadata=metadata,
        original_metadata=original,
        started=started,
        warnings=(*(str(w) for w in output.warnings), *notes),
        incomplete=incomplete,
        identifiers=_identifiers(output.identifiers, notes),
        media_types=media_types,
    )


def _incomplete(reason: object) -> str | None:
    """The adapter's reason for calling the data incomplete; any flag without one counts."""
    if reason is None or reason is False:
        return None
    text = reason.strip() if isinstance(reason, str) else ""
    return text or f"the adapter says so, without a reason ({reason!r})"


def _identifiers(declared: Any, notes: list[str]) -> tuple[Identifier, ...]:
    """The well-formed ``Identifier`` items; a malformed one is dropped with a note.

    Its value may then reach the package: the conformance kit reports it to the adapter's
    author (``field_problems``).
    """
    kept: list[Identifier] = []
    for item in declared if isinstance(declared, (list, tuple)) else ():
        problem = identifier_problem(item)
        if problem is None:
            kept.append(item)
        else:
            notes.append(f"identifiers: {problem}; dropped")
    return tuple(kept)


def _declared_only(
    value: Any, specs: Mapping[str, FieldSpec], prefix: str, notes: list[str]
) -> dict[str, Any]:
    """Keep only declared dotted keys whose values have their declared type.

    A declared key keeps everything beneath it, except that ``channels`` items keep only
    the keys of ``CHANNEL_FIELDS``, with their types.
    """
    if not isinstance(value, dict):
        if prefix == "":
            notes.append("metadata was not a mapping; dropped")
        return {}
    kept: dict[str, Any] = {}
    for key, item in value.items():
        dotted = f"{prefix}{key}"
        spec = specs.get(dotted)
        if spec is not None:
            if problem := value_problem(spec.type, item):
                notes.append(f"{dotted}: {problem}; dropped")
            elif dotted == "channels":
                kept[key] = [
                    c for c in (_channel(dotted, i, x, notes) for i, x in enumerate(item)) if c
                ]
            else:
                kept[key] = item
            continue
        below = f"{dotted}."
        if any(d.startswith(below) for d in specs):
            if isinstance(item, dict):
                if section := _declared_only(item, specs, below, notes):
                    kept[key] = section
                continue
            if isinstance(item, list) and all(isinstance(x, dict) for x in item):
                kept[key] = [_declared_only(x, specs, below, notes) for x in item]
                continue
        notes.append(f"metadata key {dotted!r} is not declared in the adapter's fields; dropped")
    return kept


def _channel(key: str, index: int, item: Any, notes: list[str]) -> dict[str, Any]:
    """One ``channels`` item with only well-typed ``CHANNEL_FIELDS`` keys."""
    where = f"{key}[{index}]"
    problems = channel_problems(item)
    if "" in problems:
        notes.append(f"{where}: {problems['']}; dropped")
        return {}
    notes.extend(f"{where}.{name}: {problem}; dropped" for name, problem in problems.items())
    return _without(item, set(problems), "")


def _without(item: Mapping[str, Any], dotted: set[str], prefix: str) -> dict[str, Any]:
    """``item`` without the values at the ``dotted`` keys; a mapping left empty goes too."""
    kept: dict[str, Any] = {}
    for name, value in item.items():
        here = f"{prefix}{name}"
        if here in dotted:
            continue
        if isinstance(value, Mapping) and any(d.startswith(f"{here}.") for d in dotted):
            value = _without(value, dotted, f"{here}.")
            if not value:
                continue
        kept[name] = value
    return kept


def _jsonable(value: Any, where: str, notes: list[str], depth: int = 0) -> Any:
    """A JSON-serializable copy of ``value``; what cannot be represented is noted."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return escape(value)  # a file name an adapter quoted may not be valid UTF-8
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, _BINARY):
        notes.append(f"{where}: binary value dropped")
        return None
    if depth >= _MAX_DEPTH:
        notes.append(f"{where}: nested too deep; stringified")
        return str(value)
    if type(value).__module__ == "numpy":
        # numpy scalars and arrays become Python values without importing numpy here
        converted = value.item() if getattr(value, "ndim", 0) == 0 else value.tolist()
        return _jsonable(converted, where, notes, depth + 1)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(item, _BINARY):
                notes.append(f"{where}.{key}: binary value dropped")
                continue
            out[escape(str(key))] = _jsonable(item, f"{where}.{key}", notes, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[]", notes, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_jsonable(v, f"{where}[]", notes, depth + 1) for v in value), key=repr)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, PurePath):
        return escape(value.as_posix())
    return str(value)


def _cap(original: dict[str, Any], limit: int, notes: list[str]) -> dict[str, Any]:
    """Drop the largest top-level entries until the serialized mapping fits ``limit``."""
    sizes = {k: _size({k: v}) for k, v in original.items()}
    total = _size(original)
    if total <= limit:
        return original
    dropped: list[str] = []
    for key in sorted(sizes, key=lambda k: (-sizes[k], k)):
        if total <= limit:
            break
        total -= sizes[key]
        dropped.append(key)
    notes.append(
        f"original_metadata exceeded {limit} bytes; dropped largest entries: {', '.join(dropped)}"
    )
    gone = set(dropped)
    return {k: v for k, v in original.items() if k not in gone}


def _size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
