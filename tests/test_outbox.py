"""The durable outbox: behaviour, crash-window recovery, and a model-based stateful test."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from structlog.testing import capture_logs

from acqharvest.model import Package
from acqharvest.outbox import Outbox, OutboxError, serialize


def package(package_id: str, **extra: Any) -> Package:
    return Package(
        package_id=package_id,
        acquisition_key=f"key-{package_id}",
        body={"package_id": package_id, "schema_version": 1, **extra},
    )


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox.open(tmp_path / "outbox")


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# --------------------------------------------------------------------------- behaviour


def test_open_creates_the_layout(tmp_path: Path) -> None:
    Outbox.open(tmp_path / "state" / "outbox")
    root = tmp_path / "state" / "outbox"
    for folder in ("tmp", "pending", "held", "delivered", "rejected", "attempts", "corrupt"):
        assert (root / folder).is_dir()


def test_spool_writes_exact_deterministic_bytes(outbox: Outbox) -> None:
    pkg = package("a1", title="Mikroskopie µ", nested={"z": 1, "a": [2, 1]})
    assert outbox.spool([pkg]) == ["a1"]
    expected = json.dumps(
        pkg.body, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    ).encode()
    on_disk = (outbox.root / "pending" / "a1.json").read_bytes()
    assert on_disk == expected == serialize(pkg.body) == outbox.body("a1")
    assert "µ".encode() in on_disk
    assert files_in(outbox.root / "tmp") == []


def test_spool_is_idempotent_for_pending_delivered_and_rejected(outbox: Outbox) -> None:
    assert outbox.spool([package("a"), package("b"), package("c")]) == ["a", "b", "c"]
    outbox.confirm("b", 200, "HTTP 200")
    outbox.reject("c", 400, "HTTP 400: bad")
    assert outbox.spool([package("a"), package("b"), package("c"), package("d")]) == ["d"]
    assert outbox.spool([package("e"), package("e")]) == ["e"]
    assert outbox.pending() == ["a", "d", "e"]
    assert outbox.state_of("b") == "delivered"
    assert outbox.state_of("c") == "rejected"


def test_spool_rejects_a_body_naming_another_package(outbox: Outbox) -> None:
    wrong = Package("a", "key", {"package_id": "b"})
    with pytest.raises(OutboxError, match="does not match"):
        outbox.spool([wrong])
    assert outbox.pending() == []


@pytest.mark.parametrize("bad", ["../evil", "a/b", "", ".hidden", "x.reason", "a" * 201])
def test_unsafe_package_ids_are_refused(outbox: Outbox, bad: str) -> None:
    with pytest.raises(OutboxError, match="invalid package_id"):
        outbox.spool([Package(bad, "key", {"package_id": bad})])


def test_pending_is_in_spool_order_across_batches_and_restarts(tmp_path: Path) -> None:
    root = tmp_path / "outbox"
    outbox = Outbox.open(root)
    # names deliberately out of alphabetical order, many in one batch
    first = [f"z{i:03d}" for i in range(30, 0, -1)]
    outbox.spool([package(i) for i in first])
    outbox.spool([package("a-late"), package("m-later")])
    expected = [*first, "a-late", "m-later"]
    assert outbox.pending() == expected
    reopened = Outbox.open(root)
    assert reopened.pending() == expected
    reopened.spool([package("0-last")])
    assert Outbox.open(root).pending() == [*expected, "0-last"]


def test_spool_stamps_strictly_increasing_mtimes_even_if_the_clock_stands_still(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Coarse filesystem timestamps (FAT, SMB, kernel tick) would tie; the stamps must not.
    frozen = 1_900_000_000_000_000_000
    monkeypatch.setattr(time, "time_ns", lambda: frozen)
    outbox.spool([package("c"), package("b"), package("a")])
    stamps = [(outbox.root / "pending" / f"{i}.json").stat().st_mtime_ns for i in "cba"]
    assert stamps == [frozen, frozen + 1, frozen + 2]
    assert outbox.pending() == ["c", "b", "a"]


def test_confirm_writes_a_receipt_and_removes_pending(outbox: Outbox) -> None:
    outbox.spool([package("a")])
    outbox.note_failure("a", "HTTP 500: boom")
    outbox.confirm("a", 201, "HTTP 201")
    assert outbox.pending() == []
    assert outbox.state_of("a") == "delivered"
    receipt = json.loads((outbox.root / "delivered" / "a.json").read_bytes())
    assert receipt["package_id"] == "a"
    assert receipt["http_status"] == 201
    assert receipt["detail"] == "HTTP 201"
    assert receipt["confirmed_at"].endswith("Z")
    assert receipt["outbox_format"] == 1
    assert files_in(outbox.root / "attempts") == []
    assert outbox.attempts("a") == 0


def test_reject_moves_package_and_saves_reason(outbox: Outbox) -> None:
    outbox.spool([package("a")])
    original = outbox.body("a")
    outbox.reject("a", 422, "HTTP 422: missing field instrument")
    assert outbox.state_of("a") == "rejected"
    assert outbox.rejected() == ["a"]
    assert (outbox.root / "rejected" / "a.json").read_bytes() == original
    reason = json.loads((outbox.root / "rejected" / "a.reason.json").read_bytes())
    assert reason["http_status"] == 422
    assert reason["detail"] == "HTTP 422: missing field instrument"
    assert outbox.body("a") == original  # still readable for `outbox show`


def test_reject_of_a_package_that_is_not_pending_fails_cleanly(outbox: Outbox) -> None:
    with pytest.raises(OutboxError, match="not pending"):
        outbox.reject("ghost", 400, "nope")
    assert files_in(outbox.root / "rejected") == []


def test_retry_rejected_goes_to_the_back_of_the_queue(outbox: Outbox) -> None:
    outbox.spool([package("a"), package("b")])
    outbox.reject("a", 400, "bad")
    outbox.spool([package("c")])
    assert outbox.retry_rejected("a") is True
    assert outbox.pending() == ["b", "c", "a"]
    assert files_in(outbox.root / "rejected") == []
    assert outbox.retry_rejected("a") is False
    assert outbox.retry_rejected("never-seen") is False


def held_package(package_id: str, verdict: str = "YES") -> Package:
    body = {"provenance": {"deidentification": {"burned_in_annotation": verdict}}}
    return Package(package_id, f"key-{package_id}", {"package_id": package_id, **body}, held=True)


def test_a_held_package_waits_durably_until_released(tmp_path: Path) -> None:
    root = tmp_path / "outbox"
    outbox = Outbox.open(root)
    assert outbox.spool([package("a"), held_package("h")]) == ["a", "h"]
    assert outbox.pending() == ["a"]  # delivery never sees a held one
    assert outbox.held() == ["h"]
    assert outbox.state_of("h") == "held"
    assert outbox.spool([held_package("h")]) == []  # rebuilt after a restart: known
    assert files_in(root / "held") == ["h.json"]
    assert outbox.body("h") == serialize(held_package("h").body)

    # a restart (recovery) keeps it held; another process sees it and may release it
    reopened = Outbox.open(root)
    assert reopened.held() == ["h"]
    assert reopened.pending() == ["a"]
    summary = Outbox.open(root, recover=False, create=False).summary()
    assert summary.held == 1
    (problem,) = [p for p in summary.problems if p.state == "held"]
    assert (
        problem.last_error == "burned-in annotation YES; deliver with: acqharvest outbox release h"
    )
    other = Outbox.open(root, recover=False)
    assert other.release("h") is True
    assert other.release("h") is False  # released already: pending now
    assert other.state_of("h") == "pending"
    assert reopened.pending() == ["a", "h"]  # at the back of the queue
    assert files_in(root / "held") == []
    assert reopened.release("never-seen") is False
    reopened.confirm("h", 200, "ok")
    assert reopened.state_of("h") == "delivered"


def test_a_corrupt_held_file_is_moved_aside_at_open(tmp_path: Path) -> None:
    root = tmp_path / "outbox"
    Outbox.open(root).spool([held_package("h")])
    (root / "held" / "h.json").write_bytes(b'{"package_id": "h", "tor')
    outbox = Outbox.open(root)
    assert outbox.held() == []
    assert files_in(root / "corrupt") == ["h.json"]


def test_an_outbox_of_an_older_version_gains_the_held_folder(tmp_path: Path) -> None:
    root = tmp_path / "outbox"
    Outbox.open(root).spool([package("a")])
    (root / "held").rmdir()
    assert Outbox.open(root, recover=False, create=False).summary().held == 0
    assert Outbox.open(root).held() == []
    assert (root / "held").is_dir()


def test_note_failure_counts_and_persists(tmp_path: Path) -> None:
    root = tmp_path / "outbox"
    outbox = Outbox.open(root)
    outbox.spool([package("a"), package("b")])
    outbox.note_failure("a", "HTTP 503: busy")
    outbox.note_failure("a", "timed out")
    assert outbox.attempts("a") == 2
    assert outbox.attempts("b") == 0
    # another process (the status command) sees the same
    other = Outbox.open(root, recover=False)
    assert other.attempts("a") == 2
    problems = {p.package_id: p for p in other.summary().problems}
    assert problems["a"].last_error == "timed out"
    assert problems["a"].state == "pending"
    assert "b" not in problems


def test_oldest_pending_at_is_when_the_first_in_line_was_spooled(outbox: Outbox) -> None:
    assert outbox.oldest_pending_at() is None
    before = time.time()
    outbox.spool([package("first")])
    outbox.spool([package("second")])
    oldest = outbox.oldest_pending_at()
    assert oldest is not None
    assert before - 1 <= oldest <= time.time() + 1
    outbox.confirm("first", 200, "ok")
    later = outbox.oldest_pending_at()
    assert later is not None
    assert later > oldest
    outbox.confirm("second", 200, "ok")
    assert outbox.oldest_pending_at() is None


def test_summary_counts_and_recent_problems(outbox: Outbox) -> None:
    outbox.spool([package(i) for i in "abcde"])
    outbox.confirm("a", 200, "ok")
    outbox.confirm("b", 409, "conflict")
    outbox.reject("c", 400, "HTTP 400: nope")
    outbox.note_failure("d", "cannot connect")
    summary = outbox.summary()
    assert (summary.pending, summary.delivered, summary.rejected, summary.corrupt) == (2, 2, 1, 0)
    by_id = {p.package_id: p for p in summary.problems}
    assert set(by_id) == {"c", "d"}
    assert by_id["c"].state == "rejected"
    assert by_id["c"].last_error is not None
    assert "nope" in by_id["c"].last_error
    assert by_id["d"].attempts == 1
    assert len(outbox.summary(limit=1).problems) == 1


def test_prune_delivered_removes_only_old_receipts(outbox: Outbox) -> None:
    outbox.spool([package("old"), package("new")])
    outbox.confirm("old", 200, "ok")
    outbox.confirm("new", 200, "ok")
    week_ago = time.time() - 7 * 86400
    os.utime(outbox.root / "delivered" / "old.json", (week_ago, week_ago))
    assert outbox.prune_delivered(older_than_seconds=86400) == 1
    assert outbox.state_of("old") is None
    assert outbox.state_of("new") == "delivered"


def test_body_of_unknown_package_raises(outbox: Outbox) -> None:
    with pytest.raises(OutboxError, match="neither pending, held nor rejected"):
        outbox.body("ghost")


# --------------------------------------------------------------------------- failures


def test_write_failure_raises_outbox_error_and_leaves_nothing(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox.spool([package("before")])
    real_fsync = os.fsync
    calls = {"n": 0}

    def fsync_fills_disk_on_second_file(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_fills_disk_on_second_file)
    with pytest.raises(OutboxError, match=r"cannot write package to .*tmp") as info:
        outbox.spool([package("x"), package("y"), package("z")])
    monkeypatch.undo()
    assert info.value.code == "ENOSPC"
    assert info.value.path == outbox.root / "tmp"
    assert outbox.pending() == ["before"]
    assert files_in(outbox.root / "tmp") == []
    assert outbox.spool([package("x")]) == ["x"]


def test_a_temp_file_that_could_not_be_removed_is_removed_by_the_next_write(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The state dir turns read-only between the temp file's creation and its rename,
    # as a read-only remount does: both the rename and the clean-up get EROFS.
    outbox.spool([package("delivered")])

    def read_only(*_: object, **__: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as patched:
        patched.setattr(os, "replace", read_only)
        patched.setattr(Path, "unlink", read_only)
        with pytest.raises(OutboxError, match="cannot record delivered") as info:
            outbox.confirm("delivered", 200, "stored")
    assert info.value.code == "EROFS"
    assert len(files_in(outbox.root / "tmp")) == 1
    assert outbox.pending() == ["delivered"]

    outbox.confirm("delivered", 200, "stored")
    assert files_in(outbox.root / "tmp") == []
    assert outbox.pending() == []


def test_unwritable_tmp_folder_names_the_folder(tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path / "outbox")
    shutil.rmtree(tmp_path / "outbox" / "tmp")
    (tmp_path / "outbox" / "tmp").write_text("a file where the folder should be")
    with pytest.raises(OutboxError) as info:
        outbox.spool([package("a")])
    assert str(tmp_path / "outbox" / "tmp") in str(info.value)
    assert outbox.pending() == []


def test_ensure_folders_recreates_a_deleted_layout(tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path / "outbox")
    outbox.spool([package("a")])
    shutil.rmtree(tmp_path / "outbox")
    with pytest.raises(OutboxError) as info:
        outbox.spool([package("b")])
    assert info.value.code == "ENOENT"
    outbox.ensure_folders()
    assert outbox.spool([package("b")]) == ["b"]
    assert outbox.pending() == ["b"]


# --------------------------------------------------------------------------- crash windows


def test_open_discards_tmp_leftovers(tmp_path: Path) -> None:
    root = tmp_path / "outbox"
    Outbox.open(root)
    (root / "tmp" / "a.1234.abcd.tmp").write_bytes(b'{"package_id": "a", "half')
    (root / "tmp" / "b.json.1234.ef01.tmp").write_bytes(b"")
    outbox = Outbox.open(root)
    assert files_in(root / "tmp") == []
    assert outbox.pending() == []
    assert outbox.state_of("a") is None


def test_open_without_recover_keeps_other_process_writes(tmp_path: Path) -> None:
    root = tmp_path / "outbox"
    Outbox.open(root)
    (root / "tmp" / "a.99.abcd.tmp").write_bytes(b"in progress elsewhere")
    (root / "pending" / "broken.json").write_bytes(b"{")
    Outbox.open(root, recover=False)
    assert files_in(root / "tmp") == ["a.99.abcd.tmp"]
    assert files_in(root / "pending") == ["broken.json"]


def test_open_removes_pending_that_was_already_delivered(tmp_path: Path) -> None:
    root = tmp_path / "outbox"
    outbox = Outbox.open(root)
    outbox.spool([package("a"), package("b")])
    # crash between the receipt write and the pending unlink in confirm()
    receipt = {"outbox_format": 1, "package_id": "a", "http_status": 200, "detail": "ok"}
    (root / "delivered" / "a.json").write_text(json.dumps(receipt))
    reopened = Outbox.open(root)
    assert reopened.pending() == ["b"]
    assert reopened.state_of("a") == "delivered"


def test_open_moves_corrupt_pending_aside_with_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "outbox"
    outbox = Outbox.open(root)
    outbox.spool([package("good")])
    (root / "pending" / "truncated.json").write_bytes(b'{"package_id": "trunc')
    (root / "pending" / "renamed.json").write_bytes(b'{"package_id": "other"}')
    (root / "pending" / "list.json").write_bytes(b"[1, 2]")
    (root / "pending" / "notes.txt").write_bytes(b"someone's notes")
    with capture_logs() as logs:
        reopened = Outbox.open(root)
    assert reopened.pending() == ["good"]
    assert files_in(root / "corrupt") == [
        "list.json",
        "notes.txt",
        "renamed.json",
        "truncated.json",
    ]
    warned = {
        Path(event["path"]).name: event
        for event in logs
        if event["event"] == "outbox_corrupt_file" and event["log_level"] == "warning"
    }
    assert set(warned) == {"list.json", "notes.txt", "renamed.json", "truncated.json"}
    assert "does not match" in warned["renamed.json"]["problem"]
    assert "not valid JSON" in warned["truncated.json"]["problem"]
    assert reopened.summary().corrupt == 4
    # a second start-up is calm: nothing left to move, and the corrupt ones stay put
    with capture_logs() as again:
        Outbox.open(root)
    assert not [event for event in again if event["event"] == "outbox_corrupt_file"]


def test_corrupt_name_collision_keeps_both(tmp_path: Path) -> None:
    root = tmp_path / "outbox"
    Outbox.open(root)
    (root / "pending" / "x.json").write_bytes(b"first")
    Outbox.open(root)
    (root / "pending" / "x.json").write_bytes(b"second")
    Outbox.open(root)
    contents = sorted(path.read_bytes() for path in (root / "corrupt").iterdir())
    assert contents == [b"first", b"second"]


def test_open_deletes_orphan_reason_and_attempt_records(tmp_path: Path) -> None:
    root = tmp_path / "outbox"
    outbox = Outbox.open(root)
    outbox.spool([package("a"), package("b")])
    outbox.reject("b", 400, "bad")
    # crash inside reject(): reason written, package not yet moved
    (root / "rejected" / "a.reason.json").write_text('{"http_status": 400}')
    # attempts of a package confirmed by a process that crashed before cleaning up
    (root / "attempts" / "gone.json").write_text('{"attempts": 3}')
    reopened = Outbox.open(root)
    assert files_in(root / "rejected") == ["b.json", "b.reason.json"]
    assert files_in(root / "attempts") == []
    assert reopened.state_of("a") == "pending"


def test_damaged_attempt_record_does_not_stop_open(tmp_path: Path) -> None:
    root = tmp_path / "outbox"
    outbox = Outbox.open(root)
    outbox.spool([package("a")])
    (root / "attempts" / "a.json").write_text("{not json")
    assert Outbox.open(root).attempts("a") == 0


# --------------------------------------------------------------------------- model-based

IDS = st.sampled_from(["p0", "p1", "p2", "p3", "p4"])


class OutboxMachine(RuleBasedStateMachine):
    """The outbox against a dict-and-list model, across reopen (restart) too."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-model-"))
        self.outbox = Outbox.open(self.dir)
        self.state: dict[str, str] = {}
        self.queue: list[str] = []
        self.fails: dict[str, int] = {}

    @rule(ids=st.lists(IDS, max_size=4))
    def spool(self, ids: list[str]) -> None:
        expected = []
        for package_id in ids:
            if package_id not in self.state:
                self.state[package_id] = "pending"
                self.queue.append(package_id)
                expected.append(package_id)
        assert self.outbox.spool([package(i) for i in ids]) == expected

    @rule(package_id=IDS)
    def confirm(self, package_id: str) -> None:
        if self.state.get(package_id) != "pending":
            return
        self.outbox.confirm(package_id, 200, "ok")
        self.state[package_id] = "delivered"
        self.queue.remove(package_id)
        self.fails.pop(package_id, None)

    @rule(package_id=IDS)
    def reject(self, package_id: str) -> None:
        if self.state.get(package_id) != "pending":
            with pytest.raises(OutboxError):
                self.outbox.reject(package_id, 400, "bad")
            return
        self.outbox.reject(package_id, 400, "bad")
        self.state[package_id] = "rejected"
        self.queue.remove(package_id)
        self.fails.pop(package_id, None)

    @rule(package_id=IDS)
    def retry(self, package_id: str) -> None:
        moved = self.outbox.retry_rejected(package_id)
        assert moved == (self.state.get(package_id) == "rejected")
        if moved:
            self.state[package_id] = "pending"
            self.queue.append(package_id)

    @rule(package_id=IDS)
    def fail(self, package_id: str) -> None:
        if self.state.get(package_id) != "pending":
            return
        self.outbox.note_failure(package_id, "HTTP 503")
        self.fails[package_id] = self.fails.get(package_id, 0) + 1

    @rule()
    def reopen(self) -> None:
        self.outbox = Outbox.open(self.dir)

    @invariant()
    def agrees_with_model(self) -> None:
        assert self.outbox.pending() == self.queue
        for package_id in ["p0", "p1", "p2", "p3", "p4"]:
            assert self.outbox.state_of(package_id) == self.state.get(package_id)
            assert self.outbox.attempts(package_id) == self.fails.get(package_id, 0)
        summary = self.outbox.summary()
        states = list(self.state.values())
        assert summary.pending == states.count("pending")
        assert summary.delivered == states.count("delivered")
        assert summary.rejected == states.count("rejected")

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


OutboxMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
test_outbox_matches_model = OutboxMachine.TestCase


def test_spooling_and_delivering_threads_share_one_outbox(outbox: Outbox) -> None:
    """The runtime spools on one thread while the delivery thread lists and confirms."""
    import threading

    ids = [f"p{n:04d}" for n in range(300)]
    errors: list[BaseException] = []
    spooled = threading.Event()

    def spool() -> None:
        try:
            for start in range(0, len(ids), 10):
                outbox.spool([package(pid) for pid in ids[start : start + 10]])
        except Exception as error:  # noqa: BLE001 - reported to the test thread
            errors.append(error)
        finally:
            spooled.set()

    def deliver() -> None:
        try:
            while not (spooled.is_set() and not outbox.pending()):
                for pid in outbox.pending():
                    outbox.confirm(pid, 200, "ok")
        except Exception as error:  # noqa: BLE001 - reported to the test thread
            errors.append(error)

    threads = [threading.Thread(target=spool), threading.Thread(target=deliver)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert all(outbox.state_of(pid) == "delivered" for pid in ids)


def test_a_read_only_open_creates_nothing(tmp_path: Path) -> None:
    root = tmp_path / "outbox"
    outbox = Outbox.open(root, recover=False, create=False)
    summary = outbox.summary()
    assert (summary.pending, summary.delivered, summary.rejected, summary.corrupt) == (0, 0, 0, 0)
    assert outbox.pending() == []
    assert not root.exists()
