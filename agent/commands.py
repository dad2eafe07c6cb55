"""The one-shot commands' work: ``extract`` (``preview``), ``check`` and ``status``.

Each runs apart from any daemon and reads what it needs itself; ``cli`` only parses
arguments and prints what these return.

- ``preview`` runs the daemon's stages in this process on files given by hand: probe,
  group (every file taken as complete), extract, and ``enrich``, the chain the daemon
  packages with. Nothing is written or sent.
- ``check_installation`` tries what the daemon will need, one (ok, message) line each:
  the watch folders readable, the state dir writable, the adapters loaded and named
  rightly, the endpoint answering.
- ``read_status`` reads the outbox and the registry without changing anything, even
  beside a running daemon, and creates nothing where no daemon ever ran.
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
from acqharvest.deliver import build_sender, safe_url
from acqharvest.durable import writable_folder
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
        extraction = workers.extract_acquisition(acquisition, settings.original_metadata_max_bytes)
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


def check_installation(settings: Settings) -> Iterable[tuple[bool, str]]:
    """(ok, message) lines for ``acqharvest check``: folders, state dir, adapters, endpoint."""
    yield True, f"config {settings.source} is valid"
    for folder in settings.watch:
        try:
            with os.scandir(folder.path) as entries:
                next(entries, None)
            yield True, f"watch folder {folder.path} is readable"
        except OSError as error:
            yield False, f"watch folder {folder.path}: {error.strerror or error}"
    ok, detail = writable_folder(settings.state_dir)
    yield ok, f"state dir {settings.state_dir}: {detail}"
    from acqharvest.registry import load_registry

    registry = load_registry()
    yield bool(registry.adapters), "adapters loaded: " + (", ".join(registry.adapters) or "none")
    for load_error in registry.errors:
        yield False, f"adapter {load_error.name} failed to load: {load_error.error}"
    for name in registry.missing:
        # not a failure: the files are still packaged, with checksums only
        yield True, str(registry.unavailable(name))
    for index, folder in enumerate(settings.watch):
        unknown = [name for name in folder.adapters if name not in registry.adapters]
        if unknown:
            yield (
                False,
                (
                    f"watch[{index}].adapters names adapters that are not installed: "
                    f"{', '.join(unknown)} (installed: {', '.join(registry.adapters) or 'none'})"
                ),
            )
    sender = build_sender(settings.endpoint)  # DeliveryConfigError: the caller exits 2
    try:
        ok, detail = sender.probe()
        yield ok, f"endpoint {endpoint_label(settings)}: {detail}"
    finally:
        sender.close()


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
