"""The decisions around one extraction, as plain values: no daemon, no files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from acqharvest.decisions import (
    Build,
    Fail,
    SettleAgain,
    after_extraction,
    failed,
    with_earlier_members,
)
from acqharvest.model import (
    Acquisition,
    Extraction,
    ExtractionFailure,
    FileRefused,
    FileSeen,
    FileSettled,
    ProbedFile,
)
from acqharvest.state import HarvestedFile

ROOT = Path("/instrument")
KEY = "dicom:series-1"
Role = Literal["primary", "member", "sidecar"]


def _member(name: str, *, size: int = 10, role: Role = "member", **extra: Any) -> ProbedFile:
    settled = FileSettled(ROOT / name, ROOT, size, 1_000, f"1:{name}:1")
    return ProbedFile(settled, "0" * 64, "dicom", KEY, role=role, **extra)


def _seen(member: ProbedFile, *, size: int | None = None) -> FileSeen:
    s = member.settled
    return FileSeen(
        s.path, s.root, s.size if size is None else size, s.mtime_ns, s.file_id, 0.0, "scan"
    )


def _series(*names: str) -> Acquisition:
    return Acquisition(KEY, "dicom", ROOT, tuple(_member(n) for n in names))


def _extraction(acquisition: Acquisition) -> Extraction:
    return Extraction(acquisition, "dicom", "1.0", "DICOM", {}, {})


def test_an_extraction_of_unchanged_files_is_built() -> None:
    acquisition = _series("i1.dcm", "i2.dcm")
    extraction = _extraction(acquisition)
    now = [_seen(m) for m in acquisition.members]
    assert after_extraction(extraction, now, set()) == Build(extraction)


def test_a_member_deleted_since_it_was_read_changes_nothing() -> None:
    acquisition = _series("i1.dcm", "i2.dcm")
    extraction = _extraction(acquisition)
    now = [_seen(acquisition.members[0]), None]
    assert after_extraction(extraction, now, set()) == Build(extraction)


def test_a_member_written_or_refused_since_it_settled_is_settled_again() -> None:
    acquisition = _series("i1.dcm", "i2.dcm", "i3.dcm")
    i1, i2, i3 = acquisition.members
    refused = FileRefused(i3.settled.path, ROOT, "a link out of the watch folder")
    now: list[FileSeen | FileRefused | None] = [_seen(i1), _seen(i2, size=99), refused]
    failure = ExtractionFailure(acquisition, "dicom", i2.settled.path, "truncated")
    # not failed: the failure may only mean the writer was not done
    assert after_extraction(failure, now, set()) == SettleAgain((i2.settled.path, i3.settled.path))


def test_a_failure_of_unchanged_files_fails() -> None:
    acquisition = _series("i1.dcm", "i2.dcm")
    failure = ExtractionFailure(acquisition, "dicom", acquisition.members[1].settled.path, "bad")
    decision = after_extraction(failure, [_seen(m) for m in acquisition.members], set())
    assert isinstance(decision, Fail)
    assert decision.failure is failure


def test_only_the_named_file_fails_and_its_siblings_in_progress_are_grouped_again() -> None:
    acquisition = _series("i1.dcm", "i2.dcm", "old.dcm")
    i1, i2, _old = acquisition.members
    failure = ExtractionFailure(acquisition, "dicom", i2.settled.path, "truncated")
    # old.dcm was merged in from the registry: not in progress, the next package lists it
    decision = failed(failure, {i1.settled.path, i2.settled.path})
    assert decision == Fail(failure, failed=(i2,), regroup=(i1,))


def test_a_failure_naming_no_member_fails_every_member() -> None:
    acquisition = _series("i1.dcm", "i2.dcm")
    failure = ExtractionFailure(acquisition, "dicom", ROOT / "DICOMDIR", "bad index")
    in_progress = {m.settled.path for m in acquisition.members}
    assert failed(failure, in_progress) == Fail(failure, acquisition.members, ())


def _record(member: ProbedFile, *, root: Path = ROOT) -> HarvestedFile:
    s = member.settled
    return HarvestedFile(s.path, root, s.size, s.mtime_ns, s.file_id, member.sha256)


def _as_now(*members: ProbedFile) -> Callable[[Path, Path], FileSeen | None]:
    """Files as they are now: these members, unchanged; any other is gone."""
    seen = {m.settled.path: _seen(m) for m in members}
    return lambda path, _root: seen.get(path)


def test_a_late_member_lists_the_unchanged_files_packaged_earlier() -> None:
    early, late = _member("i1.dcm"), _member("i2.dcm")
    changed = _member("i3.dcm")
    elsewhere = _member("i4.dcm")
    acquisition = Acquisition(KEY, "dicom", ROOT, (late,))
    earlier = [
        _record(early),
        _record(late),  # packaged before, and read again now: listed once
        _record(changed),
        _record(elsewhere, root=Path("/other")),
    ]
    now = _as_now(early, late, elsewhere)  # i3.dcm gone since

    merged = with_earlier_members(acquisition, earlier, now)

    assert [m.settled.path.name for m in merged.members] == ["i1.dcm", "i2.dcm"]
    assert merged.members[0].settled == early.settled
    assert merged.members[0].role == "member"
    assert merged.complete


def test_an_acquisition_with_nothing_earlier_is_returned_as_it_is() -> None:
    acquisition = _series("i1.dcm")
    assert with_earlier_members(acquisition, [], _as_now()) is acquisition


def test_an_expected_file_packaged_earlier_and_changed_since_leaves_it_incomplete() -> None:
    index = _member("index.xml", expects=("index.xml", "a.tif"))
    packaged = _member("a.tif")
    acquisition = Acquisition(KEY, "dicom", ROOT, (index,))
    # the grouper counted a.tif as present; it was rewritten since it was packaged
    merged = with_earlier_members(acquisition, [_record(packaged)], _as_now())
    assert merged.members == (index,)
    assert not merged.complete
