"""Builds the package document (schema v1) and its deterministic ``package_id``.

The id is a digest of the instrument id, the acquisition key and the sorted list of
(relative path, size, sha256): the same acquisition content always gives the same id,
so re-harvesting after a crash is idempotent end to end. Warnings lose every value the
de-identification removed or replaced, in case an adapter quoted one. Knows nothing of I/O.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from acqharvest import __version__
from acqharvest.model import Acquisition, Deidentified, Extraction, Package

SCHEMA_VERSION = "1.0"
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


def redact(texts: Iterable[str], redactions: Mapping[str, str]) -> list[str]:
    """``texts`` with every whole occurrence of a redacted value replaced by its stand-in.

    Whole means not inside a longer word or number (``1.2.3`` stays in ``1.2.3.4``);
    values of one character are left alone, as they occur everywhere by chance.
    """
    texts = list(texts)
    values = sorted((v for v in redactions if len(v) > 1), key=len, reverse=True)
    if not texts or not values:
        return texts
    pattern = re.compile(
        r"(?<![\w.])(?:" + "|".join(re.escape(v) for v in values) + r")(?![\w]|\.\w)"
    )
    return [pattern.sub(lambda match: redactions[match.group(0)], text) for text in texts]


def build_package(
    extraction: Extraction,
    deidentified: Deidentified,
    *,
    instrument: Mapping[str, Any],
    acquisition_fields: Mapping[str, str],
    previous: str | None,
    created: float,
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
        **acquisition_fields,
    }
    if started:
        acquisition_block["started"] = started
    body: dict[str, Any] = {
        "package_id": identifier,
        "schema_version": SCHEMA_VERSION,
        "created": rfc3339(created),
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
            {
                "path": relative_path(member.settled.path, acquisition.root),
                "size": member.settled.size,
                "sha256": member.sha256,
                "modified": rfc3339_ns(member.settled.mtime_ns),
            }
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
            "warnings": redact(extraction.warnings, deidentified.redactions),
        },
    }
    return Package(package_id=identifier, acquisition_key=acquisition.key, body=body)
