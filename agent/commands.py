"""The one-shot commands' work: ``extract`` (``preview``) and ``status``.

Each runs apart from any daemon and reads what it needs itself; ``cli`` only parses
arguments and prints what these return.

- ``preview`` runs the daemon's stages in this process on files given by hand: probe,
  group (every file taken as complete), extract, and ``enrich``, the chain the daemon
  packages with. Nothing is written or sent.
- ``read_status`` reads the outbox and the registry without changing anything, even
  beside a running daemon, and creates nothing where no daemon ever ran.

``check`` and ``doctor`` live in ``doctor``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acqharvest import workers
from acqharvest.deidentify import Deidentifier
from acqharvest.deliver import safe_url
from acqharvest.enrich import enrich
from acqharvest.group import Grouper
from acqharvest.identity import instrument_block
from acqharvest.model import ExtractionFailure, FileSettled, Settings
from acqharvest.outbox import Outbox
from acqharvest.package import rfc3339 as package_rfc3339
from acqharvest.pathtext import escape
from acqharvest.state import State, StateError
from acqharvest.statedir import state_dir_problems, state_paths
from acqharvest.watch import stat_file


def preview(
    paths: Iterable[Path], settings: Settings, deidentifier: Deidentifier
) -> tuple[list[dict[str, Any]], list[str]]:
    """Packages the daemon would build from these files now (``acqharvest extract``).

    Files are taken as complete; folders are walked. Nothing is written or sent.
    """
    files = sorted(_expand(paths))
    if not files:
        return [], ["no files given"]
    root = Path(os.path.commonpath([f.parent for f in files]))
    grouper = Grouper(lambda _: 0.0, lambda _: 0.0)
    errors: list[str] = []
    for path in files:
        seen = stat_file(path, root, "scan")
        if seen is None:
            errors.append(f"{path}: cannot stat the file")
            continue
        settled = FileSettled(path, root, seen.size, seen.mtime_ns, seen.file_id)
        result = workers.probe(settled)
        if isinstance(result, workers.ProbeFailure):
            errors.append(result.reason)
        else:
            grouper.add(result, 0.0)
    instrument = instrument_block(settings.instrument)
    packages: list[dict[str, Any]] = []
    for acquisition in grouper.ready(math.inf):
        extraction = workers.extract_acquisition(acquisition)
        if isinstance(extraction, ExtractionFailure):
            errors.append(f"{extraction.path}: {extraction.reason}")
            continue
        package = enrich(
            extraction, deidentifier, instrument=instrument, path_template=None, previous=None
        )
        packages.append(dict(package.body))
    return packages, errors


def _expand(paths: Iterable[Path]) -> Iterable[Path]:
    for path in paths:
        absolute = path.resolve()
        if absolute.is_dir():
            yield from (p for p in absolute.rglob("*") if p.is_file())
        else:
            yield absolute


def endpoint_label(settings: Settings) -> str:
    """The endpoint as logs and messages name it: a folder, or the URL without secrets."""
    endpoint = settings.endpoint
    return str(endpoint.path) if endpoint.type == "directory" else safe_url(str(endpoint.url))


@dataclass(frozen=True, slots=True)
class Status:
    outbox: dict[str, int]
    registry: dict[str, int]
    problems: list[str]
    #: one line per adapter whose reader is missing and whose files were packaged without it
    readers_missing: list[str] = field(default_factory=list)


def read_status(settings: Settings) -> Status:
    """Outbox counts, harvest counts and recent problems, read without changing anything."""
    outbox_dir, db_path, _ = state_paths(settings)
    outbox = {"pending": 0, "delivered": 0, "rejected": 0, "corrupt": 0}
    problems: list[str] = []
    if outbox_dir.is_dir():  # else the daemon never ran here; create nothing
        summary = Outbox.open(outbox_dir, recover=False, create=False).summary()
        outbox = {
            "pending": summary.pending,
            "delivered": summary.delivered,
            "rejected": summary.rejected,
            "corrupt": summary.corrupt,
        }
        problems = [
            f"{p.at or '-'}  {p.state:<9} {p.package_id[:16]}  attempts={p.attempts}  "
            f"{p.last_error or ''}"
            for p in summary.problems
        ]
    registry = {"files": 0, "acquisitions": 0, "failures": 0}
    readers_missing: list[str] = []
    if db_path.exists():
        try:
            state = State.open(db_path, readonly=True)
        except StateError as error:
            problems.append(f"{error} (the daemon moves a corrupt one aside when it starts)")
        else:
            try:
                registry = state.counts()
                readers_missing = _readers_missing(state.acquisitions_by_adapter())
                problems += [
                    f"{package_rfc3339(f.at)}  failed    {escape(str(f.path))}: {f.reason}"
                    for f in state.failures()
                ]
            finally:
                state.close()
    return Status(
        outbox, registry, state_dir_problems(settings.state_dir) + problems, readers_missing
    )


def _readers_missing(packaged: dict[str, int]) -> list[str]:
    """Once per adapter, not per file: its acquisitions lack metadata, and how to fix it."""
    from acqharvest.registry import load_registry

    registry = load_registry()
    return [
        f"{name}: {packaged[name]} acquisition(s) packaged with checksums only, its reader "
        f"({', '.join(modules)}) is not installed: {registry.install_line(name)}"
        for name, modules in registry.missing.items()
        if packaged.get(name)
    ]
