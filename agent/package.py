"""Builds the package document (schema v1) and its deterministic ``package_id``.

The id is a digest of the instrument id, the acquisition key and the sorted list of
(relative path, size, sha256) of its files and of the sidecars read for it: the same
acquisition content always gives the same id, so re-harvesting after a crash is
idempotent end to end. The document holds no clock reading (``created`` is the newest
member's modification time), so a package rebuilt after the state dir was lost carries
the bytes sent before under its id, as endpoints that deduplicate by ``Idempotency-Key``
require. Warnings lose every value the de-identification removed or replaced, in case
an adapter quoted one, and so do the sidecars' values (``acquisition.annotations``,
merged farthest first so the nearest wins; each sidecar applied is listed in ``files``
with ``role: "sidecar"``, each found in ``provenance.sidecars``). Knows nothing of I/O.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from acqharvest import __version__
from acqharvest.adapter_api import OCTET_STREAM
from acqharvest.model import (
    Acquisition,
    Deidentified,
    Extraction,
    Package,
    ProbedFile,
    Sidecar,
)
from acqharvest.pathtext import PERCENT, escape, is_text
from acqharvest.redaction import redact
from acqharvest.settings import SIDECAR_MEDIA_TYPES

SCHEMA_VERSION = "1.1"
HARVESTER = "acqharvest"


def relative_path(member_path: Path, root: Path) -> str:
    """Path below the watch root with ``/`` separators, as packages name files.

    A path that climbs out with ``..`` is refused like any path outside the root.
    """
    # String slicing: pathlib's relative_to showed up in profiles (every file, thrice).
    text, prefix = str(member_path), str(root)
    if not text.startswith(prefix) or text[len(prefix) : len(prefix) + 1] not in (os.sep, "/"):
        raise ValueError(f"{member_path} is not below {root}")
    relative = text[len(prefix) + 1 :].replace(os.sep, "/")
    if ".." in relative.split("/"):
        raise ValueError(f"{member_path} is not below {root}: it climbs out with '..'")
    return relative


def _shown(path: str, pseudonyms: Mapping[str, str]) -> str:
    """``path`` with each file or folder name the policy redacted replaced by its pseudonym."""
    if not pseudonyms:
        return path
    return "/".join(pseudonyms.get(component, component) for component in path.split("/"))


def _file_entry(
    path: Path,
    root: Path,
    size: int,
    sha256: str,
    mtime_ns: int,
    media_type: str,
    pseudonyms: Mapping[str, str],
) -> dict[str, Any]:
    """One ``files`` item. A name that is not valid UTF-8 is given in the percent form,
    flagged by ``path_encoding`` (see ``pathtext``): percent-decoding gives its bytes."""
    relative = _shown(relative_path(path, root), pseudonyms)
    entry: dict[str, Any] = {
        "path": escape(relative),
        "size": size,
        "sha256": sha256,
        "modified": rfc3339_ns(mtime_ns),
        "media_type": media_type,
    }
    if not is_text(relative):
        entry["path_encoding"] = PERCENT
    return entry


def _member_entry(
    member: ProbedFile, root: Path, media_type: str, pseudonyms: Mapping[str, str]
) -> dict[str, Any]:
    settled = member.settled
    return _file_entry(
        settled.path, root, settled.size, member.sha256, settled.mtime_ns, media_type, pseudonyms
    )


def _sidecar_entry(sidecar: Sidecar, pseudonyms: Mapping[str, str]) -> dict[str, Any]:
    # applied, so read: its size, sha256 and mtime are known
    assert sidecar.size is not None
    assert sidecar.sha256 is not None
    assert sidecar.mtime_ns is not None
    media_type = SIDECAR_MEDIA_TYPES.get(sidecar.path.suffix.lower(), OCTET_STREAM)
    entry = _file_entry(
        sidecar.path,
        sidecar.root,
        sidecar.size,
        sidecar.sha256,
        sidecar.mtime_ns,
        media_type,
        pseudonyms,
    )
    return {**entry, "role": "sidecar"}


def package_id(
    instrument_id: str, acquisition: Acquisition, sidecars: Sequence[Sidecar] = ()
) -> str:
    """Deterministic id of an acquisition's content on an instrument.

    Every sidecar read counts, applied or not: a sidecar edited (or mended) between two
    builds of one acquisition gives another body, so it must give another id.
    """
    files = sorted(
        [
            *(
                (relative_path(m.settled.path, acquisition.root), m.settled.size, m.sha256)
                for m in acquisition.members
            ),
            *(
                (relative_path(s.path, s.root), s.size, s.sha256)
                for s in sidecars
                if s.sha256 is not None
            ),
        ]
    )
    canonical = json.dumps([instrument_id, acquisition.key, files], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def rfc3339(seconds: float) -> str:
    """UTC timestamp with a ``Z`` suffix, second precision or finer when given."""
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.isoformat().replace("+00:00", "Z")


def rfc3339_ns(nanoseconds: int) -> str:
    """A file mtime in nanoseconds, truncated (never rounded up) to microseconds."""
    seconds, remainder = divmod(nanoseconds, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.replace(microsecond=remainder // 1000).isoformat().replace("+00:00", "Z")


def build_package(
    extraction: Extraction,
    deidentified: Deidentified,
    *,
    instrument: Mapping[str, Any],
    acquisition_fields: Mapping[str, str],
    previous: str | None,
    host: str | None = None,
    identity_check: Mapping[str, Any] | None = None,
    attribution: Mapping[str, Any] | None = None,
    unknown_operator: str | None = None,
) -> Package:
    """The package document for one extracted, de-identified acquisition.

    ``identity_check`` goes into ``provenance``; ``attribution`` holds top-level fields
    (``people``, ``facility``, ``license``); ``unknown_operator``, an operator the people
    file does not list, becomes a warning.
    """
    acquisition = extraction.acquisition
    sidecars = extraction.sidecars
    identifier = package_id(str(instrument["id"]), acquisition, sidecars)
    # the policy's: none when it removed the acquisition date, shifted with the dates
    started = extraction.started if deidentified.profile is None else deidentified.started
    pseudonyms = deidentified.path_redactions
    redactions = {**deidentified.redactions, **pseudonyms}
    acquisition_block: dict[str, Any] = {
        "format": extraction.format,
        # the grouper's verdict on the files, and the adapter's on what they hold
        "complete": acquisition.complete and extraction.incomplete is None,
        # folder names: one that is not valid UTF-8 in the percent form
        **{name: escape(_shown(value, pseudonyms)) for name, value in acquisition_fields.items()},
    }
    if started:
        acquisition_block["started"] = started
    applied = [sidecar for sidecar in sidecars if sidecar.error is None]
    annotations = {key: value for s in applied for key, value in s.values.items()}
    if annotations:
        # a value the de-identification removed from the headers goes from here too
        values = redact(annotations.values(), redactions)
        acquisition_block["annotations"] = dict(zip(annotations, values, strict=True))
    # an error may quote the sidecar, so it loses removed values too
    errors = redact((s.error or "" for s in sidecars), redactions)
    found = [
        {
            "path": escape(_shown(relative_path(s.path, s.root), pseudonyms)),
            "applied": s.error is None,
        }
        | ({} if s.error is None else {"error": error})
        for s, error in zip(sidecars, errors, strict=True)
    ]
    risk = deidentified.burned_in_risk
    notes = (
        *extraction.warnings,
        *((f"burned-in annotation: {risk}",) if risk else ()),
        *(
            (f"operator {unknown_operator!r} is not in the people file: no person is named",)
            if unknown_operator
            else ()
        ),
    )
    warnings = [escape(w) for w in redact(notes, redactions)]
    warnings += [f"sidecar {f['path']} not applied: {f['error']}" for f in found if "error" in f]
    body: dict[str, Any] = {
        "package_id": identifier,
        "schema_version": SCHEMA_VERSION,
        # the content's time, not the build's: the same id always carries the same bytes
        "created": rfc3339_ns(max(member.settled.mtime_ns for member in acquisition.members)),
        "instrument": dict(instrument),
        **(attribution or {}),
        "harvester": {
            "name": HARVESTER,
            "version": __version__,
            "host": host or socket.gethostname(),
            "adapter": extraction.adapter,
            "adapter_version": extraction.adapter_version,
        },
        "acquisition": acquisition_block,
        "files": [
            *(
                _member_entry(
                    member,
                    acquisition.root,
                    extraction.media_types.get(member.settled.path, OCTET_STREAM),
                    pseudonyms,
                )
                for member in acquisition.members
            ),
            *(_sidecar_entry(sidecar, pseudonyms) for sidecar in applied),
        ],
        "metadata": dict(deidentified.metadata),
        "original_metadata": dict(deidentified.original_metadata),
        # the earlier package of this acquisition, unless this is the same one rebuilt
        "replaces": previous if previous != identifier else None,
        "provenance": {
            "deidentification": {
                "profile": deidentified.profile,
                "options": list(deidentified.options),
                "removed": deidentified.removed,
                **deidentified.record,
            },
            "warnings": warnings,
        },
    }
    if found:
        body["provenance"]["sidecars"] = found
    if identity_check is not None:
        body["provenance"]["identity_check"] = dict(identity_check)
    return Package(
        package_id=identifier,
        acquisition_key=acquisition.key,
        body=body,
        burned_in_risk=deidentified.burned_in_risk,
        held=deidentified.held,
        unknown_operator=unknown_operator,
    )
