"""The registry of harvested file versions, on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from acqharvest.model import FileSettled, ProbedFile
from acqharvest.state import State, StateError, same_file


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


def test_a_corrupt_database_read_only_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match=r"state\.sqlite3") as caught:
        State.open(path, readonly=True)
    assert caught.value.path == path
    assert caught.value.code == "SQLITE_NOTADB"
    assert path.read_bytes() == b"this is not a database" * 100


def test_a_garbage_database_is_moved_aside_and_a_new_one_created(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    state = State.open(path)
    try:
        assert state.counts() == {"files": 0, "acquisitions": 0, "failures": 0}
    finally:
        state.close()
    (aside,) = tmp_path.glob("state.sqlite3.corrupt-*Z")
    assert aside.read_bytes() == b"this is not a database" * 100


def test_damaged_pages_are_found_at_open(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    state = State.open(path)
    state.record_packages(
        ("k", f"p{i}", "tiff", [probed(tmp_path, f"file-{i:05d}-" + "x" * 200)])
        for i in range(2000)
    )
    state._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    state.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 64 * 4096
    data[40 * 4096 : 48 * 4096] = b"\xa5" * (8 * 4096)  # pages in the middle, not the header
    path.write_bytes(bytes(data))

    reopened = State.open(path)
    try:
        assert reopened.counts()["files"] == 0
        assert not reopened.is_done(tmp_path / ("file-00001-" + "x" * 200), 5, 7)
    finally:
        reopened.close()
    assert len(list(tmp_path.glob("state.sqlite3.corrupt-*"))) == 1


@pytest.mark.parametrize(
    ("recorded", "seen", "same"),
    [
        ("1:10:500", "1:10:500", True),
        ("1:10:500", "1:11:500", False),  # another file (inode reuse needs a new ctime too)
        ("1:10:500", "1:10:501", False),  # rewritten in place, size and mtime put back
        ("1:10:500", "2:99:500", True),  # remounted: new device, renumbered inodes
        ("1:10:500", "2:10:501", False),
        ("1:10", "1:10:500", True),  # recorded before identities held a ctime
        ("1:10", "1:11:500", False),
    ],
)
def test_same_file(recorded: str, seen: str, same: bool) -> None:
    assert same_file(recorded, seen) is same


def test_a_replaced_file_of_the_same_size_and_mtime_is_not_done(tmp_path: Path) -> None:
    state = State.open(tmp_path / "state.sqlite3")
    root = tmp_path / "watch"
    first = ProbedFile(
        FileSettled(root / "a", root, 5, 7, "1:10:500"), "d" * 64, "dicom", "dicom:9"
    )
    state.record_packages([("dicom:9", "p1", "dicom", [first])])
    assert state.is_done(root / "a", 5, 7, "1:10:500")
    assert not state.is_done(root / "a", 5, 7, "1:10:777")
    # the same content under a new identity: recorded, not packaged again
    touched = ProbedFile(FileSettled(root / "a", root, 5, 9, "1:10:777"), "d" * 64, None, "x")
    assert state.refresh_unchanged(touched)
    assert state.is_done(root / "a", 5, 9, "1:10:777")
    changed = ProbedFile(FileSettled(root / "a", root, 5, 11, "1:10:999"), "e" * 64, None, "x")
    assert not state.refresh_unchanged(changed)
    assert not state.is_done(root / "a", 5, 11, "1:10:999")
    state.close()
