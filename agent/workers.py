"""Work that reads instrument files, run in worker processes (or in-process with workers: 0).

Probing (head bytes, adapter claim, checksum) and extraction are CPU-bound Python, so the
runtime spreads them over processes to use every core. Each worker loads the adapter
registry once; the functions here take and return only picklable model objects.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from acqharvest import logs
from acqharvest.adapter_api import HEAD_BYTES, FileProbe
from acqharvest.extract import extract
from acqharvest.model import (
    Acquisition,
    Extraction,
    ExtractionFailure,
    FileSettled,
    LogSettings,
    ProbedFile,
)
from acqharvest.readonly import FileReader
from acqharvest.registry import Registry, load_registry


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What every worker needs to know: logging, and which adapters each folder allows."""

    log: LogSettings | None = None
    #: watch root -> adapter names allowed there (empty: all).
    adapters_by_root: Mapping[Path, tuple[str, ...]] | None = None


_registry: Registry | None = None
_setup = WorkerSetup()


def init_worker(setup: WorkerSetup) -> None:
    """Process initializer (also called in-process when workers is 0)."""
    global _registry, _setup  # per-process state, set once at start
    _setup = setup
    if setup.log is not None:
        # A worker process: Ctrl-C and SIGTERM are for the parent, which stops the pool.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # JSON lines on the inherited stderr (the service's journal).
        # Only the parent writes the log file, so that its rotation stays safe.
        # Start-up notices are the parent's to give: workers speak only of problems.
        level = "debug" if setup.log.level == "debug" else "warning"
        logs.configure(level, "json", None, stream=sys.stderr)
    _registry = load_registry()
    for root, names in (setup.adapters_by_root or {}).items():
        unknown = [name for name in names if name not in _registry.adapters]
        if unknown:
            logs.get_logger().warning(
                "watch_adapters_unknown", folder=str(root), adapters=unknown, effect="ignored"
            )


def _current_registry() -> Registry:
    global _registry  # loaded lazily for one-shot commands
    if _registry is None:
        _registry = load_registry()
    return _registry


@dataclass(frozen=True, slots=True)
class ProbeFailure:
    """A settled file that could not be probed (vanished, unreadable, or changed meanwhile)."""

    settled: FileSettled
    reason: str
    #: True when the file changed while being read: observe it again rather than fail it.
    changed: bool = False
    #: False for errors that may pass (permissions, sharing violations): retried on rescan.
    final: bool = True


def probe(settled: FileSettled) -> ProbedFile | ProbeFailure:
    """Head bytes, adapter claim and sha256 of one settled file."""
    reader = FileReader()
    path = settled.path
    allowed = (_setup.adapters_by_root or {}).get(settled.root, ())
    try:
        head, digest = reader.head_and_sha256(path, HEAD_BYTES)
        found = _current_registry().claim(FileProbe(path, settled.size, head), reader, allowed)
        after = os.stat(path)
    except OSError as error:
        return ProbeFailure(settled, f"cannot read {path}: {error.strerror or error}", final=False)
    if after.st_size != settled.size or after.st_mtime_ns != settled.mtime_ns:
        return ProbeFailure(settled, f"{path} changed while it was read", changed=True)
    if found is None:
        return ProbedFile(settled, digest, None, f"file:{path}")
    name, claim = found
    # Claims name expected files relative to the file's folder; groups think in root terms.
    folder = path.parent.relative_to(settled.root)
    expects = tuple((folder / name).as_posix() for name in claim.expects)
    return ProbedFile(
        settled,
        digest,
        name,
        claim.group_key,
        role=claim.role,
        expects=expects,
        collects=claim.collects,
    )


def extract_acquisition(acquisition: Acquisition) -> Extraction | ExtractionFailure:
    """Run the claiming adapter over one acquisition (never raises)."""
    registry = _current_registry()
    adapter = registry.adapters.get(acquisition.adapter) if acquisition.adapter else None
    if acquisition.adapter and adapter is None:
        return ExtractionFailure(
            acquisition,
            acquisition.adapter,
            acquisition.primary.settled.path,
            f"adapter {acquisition.adapter} is not loaded in this process",
        )
    return extract(acquisition, adapter, FileReader())


ProbeOutcome = ProbedFile | ProbeFailure
ExtractOutcome = Extraction | ExtractionFailure


def probe_many(batch: list[FileSettled]) -> list[ProbeOutcome]:
    """``probe`` over a batch: one round trip to a worker process for many small files."""
    return [probe(settled) for settled in batch]


def extract_many(batch: list[Acquisition]) -> list[ExtractOutcome]:
    return [extract_acquisition(acquisition) for acquisition in batch]
