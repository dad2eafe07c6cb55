"""The registry of harvested file versions, on a real SQLite file."""

from __future__ import annotations

import os
import sqlite3
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


def test_names_that_are_not_utf8_round_trip_exactly(tmp_path: Path) -> None:
    state = State.open(tmp_path / "s.sqlite3")
    root = tmp_path / os.fsdecode(b"Jos\xe9")  # a watch folder named in Latin-1, too
    latin1 = os.fsdecode(b"caf\xe9.dcm")
    literal = "caf%E9.dcm"  # the percent form of the other, but another name
    key = f"dicom:1.2@{root}"
    state.record_packages([(key, "p1", "dicom", [probed(root, latin1), probed(root, literal)])])
    assert state.is_done(root / latin1, 5, 7)
    assert state.is_done(root / literal, 5, 7)
    assert not state.is_done(root / os.fsdecode(b"caf\xe8.dcm"), 5, 7)
    assert state.package_of(key) == "p1"
    members = state.members_of(key)
    assert sorted(os.fsencode(m.path) for m in members) == sorted(
        [os.fsencode(root / latin1), os.fsencode(root / literal)]
    )
    assert {m.root for m in members} == {root}
    moved = probed(root, latin1, mtime=9)
    assert state.refresh_unchanged(moved)
    assert state.is_done(root / latin1, 5, 9)

    failed = root / os.fsdecode(b"5\xb5m.tif")
    state.record_failure(failed, 5, 7, f"{failed}: truncated")
    (failure,) = state.failures()
    assert failure.path == failed
    assert failure.reason == f"{tmp_path}/Jos%E9/5%B5m.tif: truncated"
    # the same cause is known as logged, another is not
    assert state.failed_already(failed, f"{failed}: truncated")
    assert not state.failed_already(failed, f"{failed}: cut short")
    assert not state.failed_already(root / os.fsdecode(b"5\xb6m.tif"), f"{failed}: truncated")
    state.close()

    reopened = State.open(tmp_path / "s.sqlite3", readonly=True)
    assert reopened.is_done(root / latin1, 5, 9)
    assert reopened.counts() == {"files": 2, "acquisitions": 1, "failures": 1}
    reopened.close()


def test_a_registry_written_before_keeps_matching_its_utf8_names(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    State.open(path).close()
    root = tmp_path / "watch"
    with sqlite3.connect(path) as db:  # the rows as earlier versions wrote them: TEXT
        db.execute(
            "INSERT INTO files VALUES (?, ?, 5, 7, '1:1', ?, 'k', 'p0', 0)",
            (str(root / "café.tif"), str(root), "d" * 64),
        )
    db.close()
    state = State.open(path)
    assert state.is_done(root / "café.tif", 5, 7)
    assert [m.path for m in state.members_of("k")] == [root / "café.tif"]
    state.close()


SERIAL = {"field": "serial_number", "configured": "9920004", "reported": "9920003"}
MODEL = {"field": "model", "configured": "Helios 5", "reported": "Helios NanoLab 660"}


def test_an_identity_mismatch_is_new_once_per_acquisition_until_it_changes(
    tmp_path: Path,
) -> None:
    state = State.open(tmp_path / "s.sqlite3")
    image = tmp_path / "watch" / "navcam.tif"

    assert state.record_identities([("tiff:a", "p1", image, [SERIAL])]) == {"tiff:a"}
    # the same acquisition packaged again (a file changed) with the same mismatch
    assert state.record_identities([("tiff:a", "p2", image, [SERIAL])]) == set()
    assert state.record_identities(
        [("tiff:a", "p3", image, [SERIAL, MODEL]), ("tiff:b", "p4", image, [SERIAL])]
    ) == {"tiff:a", "tiff:b"}
    state.close()

    reopened = State.open(tmp_path / "s.sqlite3", readonly=True)
    listed = reopened.identity_mismatches()
    reopened.close()
    assert sorted((m.package_id, m.path, m.mismatches) for m in listed) == [
        ("p3", image, [SERIAL, MODEL]),
        ("p4", image, [SERIAL]),
    ]


def test_a_later_package_that_matches_clears_the_mismatch(tmp_path: Path) -> None:
    state = State.open(tmp_path / "s.sqlite3")
    image = tmp_path / "watch" / "navcam.tif"
    state.record_identities([("tiff:a", "p1", image, [SERIAL])])

    assert (
        state.record_identities([("tiff:a", "p2", image, []), ("tiff:c", "p5", image, [])]) == set()
    )
    assert state.identity_mismatches() == []
    assert state.record_identities([("tiff:a", "p3", image, [SERIAL])]) == {"tiff:a"}


def test_a_registry_from_before_identity_checks_lists_none(tmp_path: Path) -> None:
    database = tmp_path / "s.sqlite3"
    State.open(database).close()
    with sqlite3.connect(database) as old:
        old.execute("DROP TABLE identity_mismatches")
    old.close()

    # status reads it read-only, beside a daemon that has not been updated yet
    reopened = State.open(database, readonly=True)
    assert reopened.identity_mismatches() == []
    reopened.close()
