"""Multi-file acquisitions in adapter tests: claimed and drafted as the agent does, with
the bytes read counted per file for the headers-only rule."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from acqharvest.adapter_api import HEAD_BYTES, Adapter, AdapterOutput, Claim, Draft, FileProbe
from acqharvest.readonly import FileReader
from acqharvest.testing.checks import digests_of

#: headers only: of a file over 1 MB an adapter reads at most 5%
LARGE_FILE = 1_000_000
LARGE_FILE_SHARE = 0.05


def claims_of(adapter: Adapter, files: Iterable[Path]) -> dict[Path, Claim | None]:
    reader = FileReader()
    return {
        path: adapter.claim(
            FileProbe(path, path.stat().st_size, reader.head(path, HEAD_BYTES)), reader
        )
        for path in files
    }


def draft_of(adapter: Adapter, files: Iterable[Path]) -> Draft:
    """The one acquisition the files form by their claims, primary first, with the digests
    the agent computes of them (as the agent)."""
    claims = claims_of(adapter, files)
    assert all(claims.values()), [str(p) for p, c in claims.items() if c is None]
    keys = {c.group_key for c in claims.values() if c is not None}
    assert len(keys) == 1, keys
    ordered = sorted(claims, key=lambda p: (claims[p].role != "primary", p))  # type: ignore[union-attr]
    return Draft(keys.pop(), ordered[0], tuple(ordered), digests_of(adapter.info, ordered))


def extract_all(adapter: Adapter, files: Iterable[Path]) -> tuple[AdapterOutput, FileReader]:
    reader = FileReader()
    return adapter.extract(draft_of(adapter, files), reader), reader


def overread(reader: FileReader) -> dict[str, tuple[int, int]]:
    """Files over 1 MB of which more than 5% was read: name -> (read, size)."""
    return {
        path.name: (read, path.stat().st_size)
        for path, read in reader.read_by_path.items()
        if path.stat().st_size > LARGE_FILE and read > LARGE_FILE_SHARE * path.stat().st_size
    }
