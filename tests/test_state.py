"""The registry of harvested file versions, on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from acqharvest.model import FileSettled, ProbedFile
from acqharvest.state import State, StateError


def probed(root: Path, name: str, size: int = 5, mtime: int = 7) -> ProbedFile:
    settled = FileSettled(root / name, root, size, mtime, "1:1")
    return ProbedFile(settled, "d" * 64, "dicom", "dicom:9")


def test_packaged_versions_are_done_until_they_change(tmp_path: Path) -> None:
    state = State.open(tmp_path / "state.sqlite3")
    root = tmp_path / "watch"
    state.record_packages([("dicom:9", "p1", "dicom", [probed(root, "a"), probed(root, "b")])])
    assert state.is_done(root / "a", 5, 7)
    assert not state.is_done(root / "a", 6, 7)
    assert not state.is_done(root / "c", 5, 7)
    assert state.package_of("dicom:9") == "p1"
    assert [m.path.name for m in state.members_of("dicom:9")] == ["a", "b"]
    state.close()

    reopened = State.open(tmp_path / "state.sqlite3", readonly=True)
    assert reopened.is_done(root / "b", 5, 7)
    assert reopened.counts() == {"files": 2, "acquisitions": 1, "failures": 0}
    reopened.close()


def test_failures_are_remembered_per_version_and_cleared_by_a_package(tmp_path: Path) -> None:
    state = State.open(tmp_path / "s.sqlite3")
    root = tmp_path / "watch"
    state.record_failure(root / "bad.tif", 5, 7, "truncated")
    assert state.is_done(root / "bad.tif", 5, 7)
    assert not state.is_done(root / "bad.tif", 9, 7)
    (failure,) = state.failures()
    assert failure.reason == "truncated"
    state.record_packages([("tiff:x", "p2", "tiff", [probed(root, "bad.tif", 9)])])
    assert state.failures() == []


def test_a_passing_read_error_is_shown_but_retried(tmp_path: Path) -> None:
    state = State.open(tmp_path / "s.sqlite3")
    path = tmp_path / "watch" / "locked.tif"
    state.record_failure(path, 5, 7, "permission denied", final=False)
    assert not state.is_done(path, 5, 7)
    assert [f.reason for f in state.failures()] == ["permission denied"]


def test_a_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match=r"state\.sqlite3"):
        State.open(path)
