"""The one-shot commands' work: ``extract`` (``preview``) and ``status``.

Each runs apart from any daemon and reads what it needs itself; ``cli`` only parses
arguments and prints what these return.

- ``preview`` runs the daemon's stages in this process on files given by hand: probe,
  group (every file taken as complete), extract with the sidecars found from each
  acquisition's folder up to the folder given, and ``enrich``, the chain the daemon
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
from acqharvest.model import ExtractionFailure, FileSettled, Settings, WatchSettings
from acqharvest.outbox import Outbox
from acqharvest.package import rfc3339 as package_rfc3339
from acqharvest.pathtext import escape
from acqharvest.people import Attribution, PeopleError, read_people
from acqharvest.state import State, StateError
from acqharvest.statedir import state_dir_problems, state_paths
from acqharvest.watch import stat_file


def preview(
    paths: Iterable[Path], settings: Settings, deidentifier: Deidentifier
) -> tuple[list[dict[str, Any]], list[str]]:
    """Packages the daemon would build from these files now (``acqharvest extract``).

    Files are taken as complete; folders are walked. Files inside a configured watch folder
    are taken as that folder's: paths are relative to it, its ``path_template`` applies and
    sidecars are looked for up to it, as the daemon does, so the package is the one the
    daemon would send. Other files stand for a watch folder of their own: paths are
    relative to the folder all given paths share. Nothing is written or sent.
    """
    paths = list(paths)
    # a sidecar is read for the acquisitions below it, never packaged as one
    files = sorted(f for f in _expand(paths) if f.name not in settings.sidecar_names)
    if not files:
        return [], ["no files given"]
    given = [p.resolve() for p in paths]
    root = Path(os.path.commonpath([p if p.is_dir() else p.parent for p in given]))
    path_template = None
    folder = _watch_folder_of(root, settings)
    if folder is not None:
        root, path_template = folder.path.resolve(), folder.path_template
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
    people = None
    if settings.people is not None:
        try:
            people = read_people(settings.people)
        except PeopleError as error:
            errors.append(f"people: {error}")  # the packages are shown without people
    attribution = Attribution.of(settings, people)
    packages: list[dict[str, Any]] = []
    for acquisition in grouper.ready(math.inf):
        extraction = workers.extract_acquisition(
            acquisition,
            sidecar_names=settings.sidecar_names,
            original_metadata_max_bytes=settings.original_metadata_max_bytes,
        )
        if isinstance(extraction, ExtractionFailure):
            errors.append(f"{extraction.path}: {extraction.reason}")
            continue
        package = enrich(
            extraction,
            deidentifier,
            instrument=instrument,
            path_template=path_template,
            previous=None,
            attribution=attribution,
        )
        packages.append(dict(package.body))
    return packages, errors


def _watch_folder_of(folder: Path, settings: Settings) -> WatchSettings | None:
    """The configured watch folder ``folder`` is in (the deepest, if they nest), or None."""
    holding = [ws for ws in settings.watch if folder.is_relative_to(ws.path.resolve())]
    return max(holding, key=lambda ws: len(ws.path.resolve().parts), default=None)


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
    #: one line per acquisition whose file reports another instrument than the config
    identity_mismatches: list[str] = field(default_factory=list)


def read_status(settings: Settings) -> Status:
    """Outbox counts, harvest counts and recent problems, read without changing anything."""
    outbox_dir, db_path, _ = state_paths(settings)
    outbox = {"pending": 0, "held": 0, "delivered": 0, "rejected": 0, "corrupt": 0}
    problems: list[str] = []
    if outbox_dir.is_dir():  # else the daemon never ran here; create nothing
        summary = Outbox.open(outbox_dir, recover=False, create=False).summary()
        outbox = {
            "pending": summary.pending,
            "held": summary.held,
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
    mismatches: list[str] = []
    if db_path.exists():
        try:
            state = State.open(db_path, readonly=True)
        except StateError as error:
            problems.append(f"{error} (the daemon moves a corrupt one aside when it starts)")
        else:
            try:
                registry = state.counts()
                readers_missing = _readers_missing(state.acquisitions_by_adapter())
                mismatches = [
                    f"{package_rfc3339(m.at)}  {escape(str(m.path))}: "
                    + "; ".join(
                        f"{item['field']} configured {item['configured']!r}, "
                        f"file reports {item['reported']!r}"
                        for item in m.mismatches
                    )
                    + f" (package {m.package_id[:16]})"
                    for m in state.identity_mismatches()
                ]
                problems += [
                    f"{package_rfc3339(f.at)}  failed    {escape(str(f.path))}: {f.reason}"
                    for f in state.failures()
                ]
            finally:
                state.close()
    return Status(
        outbox,
        registry,
        state_dir_problems(settings.state_dir) + problems,
        readers_missing,
        mismatches,
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
