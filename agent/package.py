"""Builds the package document (schema v1) and its deterministic ``package_id``.

The id is a digest of the instrument id, the acquisition key and the sorted list of
(relative path, size, sha256): the same acquisition content always gives the same id,
so re-harvesting after a crash is idempotent end to end. The document holds no clock
reading (``created`` is the newest member's modification time), so a package rebuilt
after the state dir was lost carries the bytes sent before under its id, as endpoints
that deduplicate by ``Idempotency-Key`` require. Warnings lose every value the
de-identification removed or replaced, in case an adapter quoted one. Knows nothing of I/O.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from acqharvest import __version__
from acqharvest.adapter_api import OCTET_STREAM
from acqharvest.model import Acquisition, Deidentified, Extraction, Package, ProbedFile
from acqharvest.pathtext import PERCENT, escape, is_text
from acqharvest.redaction import redact

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


def _file_entry(member: ProbedFile, root: Path, media_type: str) -> dict[str, Any]:
    """One ``files`` item. A name that is not valid UTF-8 is given in the percent form,
    flagged by ``path_encoding`` (see ``pathtext``): percent-decoding gives its bytes."""
    path = relative_path(member.settled.path, root)
    entry: dict[str, Any] = {
        "path": escape(path),
        "size": member.settled.size,
        "sha256": member.sha256,
        "modified": rfc3339_ns(member.settled.mtime_ns),
        "media_type": media_type,
    }
    if not is_text(path):
        entry["path_encoding"] = PERCENT
    return entry


def package_id(instrument_id: str, acquisition: Acquisition) -> str:
    """Deterministic id of an acquisition's content on an instrument."""
    files = sorted(
        (relative_path(member.settled.path, acquisition.root), member.settled.size, member.sha256)
        for member in acquisition.members
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
) -> Package:
    """The package document for one extracted, de-identified acquisition."""
    acquisition = extraction.acquisition
    identifier = package_id(str(instrument["id"]), acquisition)
    started = extraction.started
    if deidentified.profile is not None and "acquired" not in deidentified.metadata:
        started = None  # the policy removed the acquisition date; don't leak it here
    acquisition_block: dict[str, Any] = {
        "format": extraction.format,
        # the grouper's verdict on the files, and the adapter's on what they hold
        "complete": acquisition.complete and extraction.incomplete is None,
        # folder names: one that is not valid UTF-8 in the percent form
        **{name: escape(value) for name, value in acquisition_fields.items()},
    }
    if started:
        acquisition_block["started"] = started
    body: dict[str, Any] = {
        "package_id": identifier,
        "schema_version": SCHEMA_VERSION,
        # the content's time, not the build's: the same id always carries the same bytes
        "created": rfc3339_ns(max(member.settled.mtime_ns for member in acquisition.members)),
        "instrument": dict(instrument),
        "harvester": {
            "name": HARVESTER,
            "version": __version__,
            "host": host or socket.gethostname(),
            "adapter": extraction.adapter,
            "adapter_version": extraction.adapter_version,
        },
        "acquisition": acquisition_block,
        "files": [
            _file_entry(
                member,
                acquisition.root,
                extraction.media_types.get(member.settled.path, OCTET_STREAM),
            )
            for member in acquisition.members
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
            },
            "warnings": [escape(w) for w in redact(extraction.warnings, deidentified.redactions)],
        },
    }
    return Package(package_id=identifier, acquisition_key=acquisition.key, body=body)
