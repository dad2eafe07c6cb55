"""Work that reads instrument files, run in worker processes (or in-process with workers: 0).

Probing (head bytes, adapter claim, checksum) and extraction are CPU-bound Python, so the
runtime spreads them over processes to use every core. Each worker loads the adapter
registry once; the functions here take and return only picklable model objects.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from acqharvest.adapter_api import HEAD_BYTES, FileProbe
from acqharvest.extract import extract
from acqharvest.model import Acquisition, Extraction, ExtractionFailure, FileSettled, ProbedFile
from acqharvest.readonly import FileReader
from acqharvest.registry import Registry, load_registry

_registry: Registry | None = None


def init_worker(enabled: Collection[str] | None = None) -> None:
    """Process initializer: load the adapters once per worker."""
    global _registry
    _registry = load_registry(enabled)


def _current_registry() -> Registry:
    if _registry is None:
        init_worker()
    assert _registry is not None
    return _registry


@dataclass(frozen=True, slots=True)
class ProbeFailure:
    """A settled file that could not be probed (vanished, unreadable, or changed meanwhile)."""

    settled: FileSettled
    reason: str
    #: True when the file changed while being read: observe it again rather than fail it.
    changed: bool = False


def probe(settled: FileSettled, allowed: tuple[str, ...] = ()) -> ProbedFile | ProbeFailure:
    """Head bytes, adapter claim and sha256 of one settled file."""
    reader = FileReader()
    path = settled.path
    try:
        head = reader.head(path, HEAD_BYTES)
        found = _current_registry().claim(FileProbe(path, settled.size, head), reader, allowed)
        digest = reader.sha256(path)
        after = os.stat(path)
    except OSError as error:
        return ProbeFailure(settled, f"cannot read {path}: {error.strerror or error}")
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


def probe_paths(paths: Collection[Path]) -> list[ProbedFile | ProbeFailure]:
    """Probe files given on the command line (no settling: they are taken as complete)."""
    results: list[ProbedFile | ProbeFailure] = []
    for path in paths:
        st = os.stat(path)
        settled = FileSettled(
            path, path.parent, st.st_size, st.st_mtime_ns, f"{st.st_dev}:{st.st_ino}"
        )
        results.append(probe(settled))
    return results
