"""Pieces of the runtime shell that are not the harvest loop itself."""

from __future__ import annotations

import stat
from pathlib import Path

from acqharvest.runtime import installation_secret


def test_installation_secret_is_created_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "secret.key"
    first = installation_secret(path)
    assert len(first) == 32
    assert installation_secret(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_an_incomplete_secret_left_by_a_crash_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_bytes(b"")
    replaced = installation_secret(path)
    assert len(replaced) == 32
    assert path.read_bytes() == replaced
