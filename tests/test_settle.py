"""Settle state machine: injected clock and a dict of file states, plus real files: runs,
real trees fed through the scan bound, and the daemon feeding one."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Literal

import pytest

from acqharvest.config import parse_settings
from acqharvest.model import FileSeen, FileSettled, WatchSettings
from acqharvest.runtime import Daemon
from acqharvest.settle import SCAN_BATCH, ScanFeed, Settler
from acqharvest.watch import Watcher, stat_file

ROOT = Path("/data/instrument")
SETTLE = 10.0
T0 = 1_000_000.0


class FakeFs:
    """File states by path; ``stat`` answers like the real one, ``None`` once deleted."""

    def __init__(self) -> None:
        self.files: dict[Path, FileSeen] = {}
        self.stats: list[Path] = []

    def write(
        self,
        name: str,
        size: int,
        at: float,
        *,
        mtime: float | None = None,
        source: Literal["event", "scan", "closed"] = "event",
        file_id: str = "1:1",
    ) -> FileSeen:
        seen = FileSeen(
            path=ROOT / name,
            root=ROOT,
            size=size,
            mtime_ns=int((at if mtime is None else mtime) * 1e9),
            file_id=file_id,
            seen_at=at,
            source=source,
        )
        self.files[seen.path] = seen
        return seen

    def stat(self, path: Path, root: Path) -> FileSeen | None:
        assert root == ROOT
        self.stats.append(path)
        return self.files.get(path)


@pytest.fixture
def fs() -> FakeFs:
    return FakeFs()


def folder(
    settle: float = SETTLE, *, on_close: bool = True, blank_wait: float = 300.0
) -> Callable[[Path], WatchSettings]:
    """The settle options of every watch root, as the runtime passes them."""
    return lambda root: WatchSettings(
        root, settle_seconds=settle, settle_on_close=on_close, blank_head_wait_seconds=blank_wait
    )


@pytest.fixture
def settler() -> Settler:
    return Settler(folder(), confirm_seconds=1.0)


def test_observe_says_when_a_file_version_starts_settling(fs: FakeFs, settler: Settler) -> None:
    # what the daemon counts as a file seen (acqharvest_files_seen_total)
    assert settler.observe(fs.write("a.tif", 10, T0)) is True
    assert settler.observe(fs.write("a.tif", 20, T0 + 1)) is False  # still the same file
    assert settler.observe(fs.write("old-empty.tif", 0, T0, mtime=T0 - 2 * SETTLE)) is False
    settler.forget(ROOT / "a.tif")
    assert settler.observe(fs.write("a.tif", 20, T0 + 2)) is True


def test_growing_file_never_settles_while_it_grows(fs: FakeFs, settler: Settler) -> None:
    now = T0
    settler.observe(fs.write("a.dcm", 100, now))
    for step in range(1, 60):
        now = T0 + step * 4.0  # grows every 4 s, well inside the 10 s window
        settler.observe(fs.write("a.dcm", 100 + step, now))
        assert settler.tick(now, fs.stat) == []
    assert settler.tracked == 1


def test_growth_seen_only_by_stat_restarts_the_window(fs: FakeFs, settler: Settler) -> None:
    settler.observe(fs.write("a.dcm", 100, T0))
    fs.write("a.dcm", 200, T0 + 5)  # no event: only the confirming stat sees it
    assert settler.tick(T0 + SETTLE, fs.stat) == []
    assert settler.tick(T0 + 2 * SETTLE - 0.1, fs.stat) == []
    assert [s.size for s in settler.tick(T0 + 2 * SETTLE, fs.stat)] == [200]


def test_settles_after_the_window(fs: FakeFs, settler: Settler) -> None:
    seen = fs.write("a.dcm", 4096, T0)
    settler.observe(seen)
    assert settler.tick(T0 + SETTLE - 0.01, fs.stat) == []
    assert fs.stats == []  # nothing is due, so nothing is stat-ed
    settled = settler.tick(T0 + SETTLE, fs.stat)
    assert settled == [
        FileSettled(
            path=seen.path, root=ROOT, size=4096, mtime_ns=seen.mtime_ns, file_id=seen.file_id
        )
    ]
    assert settler.tracked == 0
    assert settler.tick(T0 + 3 * SETTLE, fs.stat) == []


def test_rewrite_restarts_the_window(fs: FakeFs, settler: Settler) -> None:
    settler.observe(fs.write("a.dcm", 4096, T0))
    # Same size, new mtime: the acquisition software rewrote the file.
    settler.observe(fs.write("a.dcm", 4096, T0 + 8))
    assert settler.tick(T0 + SETTLE, fs.stat) == []
    assert len(settler.tick(T0 + 8 + SETTLE, fs.stat)) == 1


def test_replaced_file_new_identity_restarts_the_window(fs: FakeFs, settler: Settler) -> None:
    settler.observe(fs.write("a.dcm", 4096, T0, file_id="1:1"))
    settler.observe(fs.write("a.dcm", 4096, T0 + 8, mtime=T0, file_id="1:2"))
    assert settler.tick(T0 + SETTLE, fs.stat) == []
    assert [s.file_id for s in settler.tick(T0 + 8 + SETTLE, fs.stat)] == ["1:2"]


def test_repeated_unchanged_events_do_not_delay(fs: FakeFs, settler: Settler) -> None:
    seen = fs.write("a.dcm", 4096, T0)
    settler.observe(seen)
    settler.observe(replace(seen, seen_at=T0 + 9))
    assert len(settler.tick(T0 + SETTLE, fs.stat)) == 1


def test_close_hint_shortens_the_window(fs: FakeFs, settler: Settler) -> None:
    settler.observe(fs.write("a.dcm", 100, T0))
    settler.observe(fs.write("a.dcm", 5000, T0 + 2, source="closed"))
    assert settler.next_due(T0 + 2) == pytest.approx(1.0)
    assert settler.tick(T0 + 2.5, fs.stat) == []
    assert [s.size for s in settler.tick(T0 + 3, fs.stat)] == [5000]


def test_close_hint_still_needs_an_agreeing_stat(fs: FakeFs, settler: Settler) -> None:
    settler.observe(fs.write("a.dcm", 5000, T0, source="closed"))
    fs.write("a.dcm", 6000, T0 + 0.5)  # reopened and appended, no event seen
    assert settler.tick(T0 + 1, fs.stat) == []
    # The change voids the hint: the full window applies from the stat that saw it.
    assert settler.tick(T0 + 1 + SETTLE - 0.1, fs.stat) == []
    assert [s.size for s in settler.tick(T0 + 1 + SETTLE, fs.stat)] == [6000]


def test_close_hint_after_data_without_change(fs: FakeFs, settler: Settler) -> None:
    seen = fs.write("a.dcm", 5000, T0)
    settler.observe(seen)
    settler.observe(replace(seen, seen_at=T0 + 0.2, source="closed"))
    assert len(settler.tick(T0 + 1, fs.stat)) == 1


def test_old_file_at_first_sight_settles_after_confirm(fs: FakeFs, settler: Settler) -> None:
    # Written an hour before the daemon started; found by the start-up scan.
    settler.observe(fs.write("old.dcm", 4096, T0, mtime=T0 - 3600, source="scan"))
    assert settler.tick(T0 + 0.5, fs.stat) == []
    assert fs.stats == []  # the confirming stat waits for confirm_seconds
    assert len(settler.tick(T0 + 1.0, fs.stat)) == 1
    assert fs.stats == [ROOT / "old.dcm"]


def test_old_file_that_changes_loses_the_shortcut(fs: FakeFs, settler: Settler) -> None:
    settler.observe(fs.write("old.dcm", 4096, T0, mtime=T0 - 3600, source="scan"))
    fs.write("old.dcm", 8192, T0 + 0.5)
    assert settler.tick(T0 + 1, fs.stat) == []
    assert settler.tick(T0 + 2, fs.stat) == []
    assert len(settler.tick(T0 + 1 + SETTLE, fs.stat)) == 1


def test_future_mtime_counts_as_fresh(fs: FakeFs, settler: Settler) -> None:
    settler.observe(fs.write("skew.dcm", 4096, T0, mtime=T0 + 7200, source="scan"))
    assert settler.tick(T0 + 1, fs.stat) == []
    assert len(settler.tick(T0 + SETTLE, fs.stat)) == 1


def test_empty_file_is_never_settled_and_let_go_once_still(fs: FakeFs, settler: Settler) -> None:
    settler.observe(fs.write("empty.dcm", 0, T0))
    assert settler.tick(T0 + SETTLE / 2, fs.stat) == []
    assert settler.tracked == 1  # fresh: its data may be on the way
    assert settler.tick(T0 + SETTLE, fs.stat) == []
    assert settler.tracked == 0  # still for a whole window: no longer held in memory
    # the write that fills it (its event, or the next scan) brings it back
    now = T0 + 10 * SETTLE
    settler.observe(fs.write("empty.dcm", 10, now))
    assert [s.size for s in settler.tick(now + SETTLE, fs.stat)] == [10]


def test_old_empty_file_is_not_tracked(fs: FakeFs, settler: Settler) -> None:
    settler.observe(fs.write("marker.done", 0, T0, mtime=T0 - 3600, source="scan"))
    settler.observe(fs.write("closed.dcm", 0, T0, mtime=T0 - 3600, source="closed"))
    assert settler.tracked == 0
    assert settler.next_due(T0) is None
    settler.observe(fs.write("marker.done", 5, T0 + 1))
    assert settler.tracked == 1


def test_gone_file_is_dropped(fs: FakeFs, settler: Settler) -> None:
    settler.observe(fs.write("a.dcm", 4096, T0))
    del fs.files[ROOT / "a.dcm"]
    assert settler.tick(T0 + SETTLE, fs.stat) == []
    assert settler.tracked == 0
    assert settler.next_due(T0 + SETTLE) is None


def test_forget(fs: FakeFs, settler: Settler) -> None:
    settler.observe(fs.write("a.dcm", 4096, T0))
    settler.forget(ROOT / "a.dcm")
    settler.forget(ROOT / "never-seen.dcm")
    assert settler.tracked == 0
    assert settler.tick(T0 + SETTLE, fs.stat) == []
    assert fs.stats == []


def test_next_due(fs: FakeFs, settler: Settler) -> None:
    assert settler.next_due(T0) is None
    settler.observe(fs.write("a.dcm", 1, T0))
    settler.observe(fs.write("b.dcm", 1, T0 + 3))
    assert settler.next_due(T0) == pytest.approx(SETTLE)
    assert settler.next_due(T0 + 4) == pytest.approx(SETTLE - 4)
    settler.observe(fs.write("c.dcm", 1, T0 + 4, source="closed"))
    assert settler.next_due(T0 + 4) == pytest.approx(1.0)
    assert settler.next_due(T0 + 100) == 0.0


def test_settle_seconds_is_per_root(fs: FakeFs) -> None:
    fast_root = Path("/data/fast")
    settler = Settler(
        lambda root: WatchSettings(root, settle_seconds=2.0 if root == fast_root else SETTLE)
    )
    fast = replace(fs.write("f.dcm", 1, T0), path=fast_root / "f.dcm", root=fast_root)
    settler.observe(fast)
    settler.observe(fs.write("slow.dcm", 1, T0))

    def stat(path: Path, root: Path) -> FileSeen | None:
        return fast if path == fast.path else fs.files.get(path)

    assert [s.path for s in settler.tick(T0 + 2, stat)] == [fast.path]
    assert [s.path.name for s in settler.tick(T0 + SETTLE, stat)] == ["slow.dcm"]


def test_preallocated_file_stays_unsettled_while_its_mtime_moves(
    fs: FakeFs, settler: Settler
) -> None:
    # ftruncate to the final size first, then fill: the size never changes again.
    settler.observe(fs.write("pre.dat", 1 << 20, T0))
    now = T0
    for step in range(1, 30):
        now = T0 + step * 6.0  # a chunk every 6 s, inside the 10 s window
        written = fs.write("pre.dat", 1 << 20, now)
        if step % 2:
            settler.observe(written)  # the other writes only the confirming stat sees
        assert settler.tick(now, fs.stat) == []
    assert settler.tick(now + SETTLE - 0.1, fs.stat) == []
    assert [s.mtime_ns for s in settler.tick(now + SETTLE, fs.stat)] == [int(now * 1e9)]


def test_writer_that_reopens_after_close_loses_the_close_hint(fs: FakeFs, settler: Settler) -> None:
    settler.observe(fs.write("log.dat", 100, T0, source="closed"))
    settler.observe(fs.write("log.dat", 200, T0 + 0.5))  # reopened and appended
    settler.observe(fs.write("log.dat", 200, T0 + 0.5, source="closed"))
    assert settler.next_due(T0 + 0.5) == pytest.approx(SETTLE)
    assert settler.tick(T0 + 2, fs.stat) == []
    assert [s.size for s in settler.tick(T0 + 0.5 + SETTLE, fs.stat)] == [200]


def test_a_change_seen_only_by_stat_after_a_close_also_counts_as_reopening(
    fs: FakeFs, settler: Settler
) -> None:
    settler.observe(fs.write("log.dat", 100, T0, source="closed"))
    fs.write("log.dat", 300, T0 + 0.5)
    assert settler.tick(T0 + 1, fs.stat) == []
    settler.observe(fs.write("log.dat", 300, T0 + 0.5, source="closed"))
    assert settler.tick(T0 + 2, fs.stat) == []
    assert len(settler.tick(T0 + 1 + SETTLE, fs.stat)) == 1


def test_close_events_can_be_ignored_per_folder(fs: FakeFs) -> None:
    settler = Settler(folder(on_close=False))
    settler.observe(fs.write("a.dcm", 5000, T0, source="closed"))
    assert settler.next_due(T0) == pytest.approx(SETTLE)
    assert settler.tick(T0 + 2, fs.stat) == []
    assert len(settler.tick(T0 + SETTLE, fs.stat)) == 1


class Heads:
    """Which files have an all-zero head, and how often the settler asked."""

    def __init__(self) -> None:
        self.blank: set[Path] = set()
        self.asked: list[Path] = []

    def __call__(self, path: Path) -> bool:
        self.asked.append(path)
        return path in self.blank


def test_blank_head_waits_for_content(fs: FakeFs) -> None:
    heads = Heads()
    settler = Settler(folder(blank_wait=120.0), head_is_blank=heads)
    settler.observe(fs.write("pre.dat", 4096, T0))
    heads.blank.add(ROOT / "pre.dat")
    assert settler.tick(T0 + SETTLE - 1, fs.stat) == []
    assert heads.asked == []  # only a file that held still is looked at
    assert settler.tick(T0 + SETTLE, fs.stat) == []
    assert settler.tick(T0 + 2 * SETTLE, fs.stat) == []
    assert settler.tracked == 1
    heads.blank.clear()  # the header was written in place: size and mtime may even agree
    assert len(settler.tick(T0 + 3 * SETTLE, fs.stat)) == 1
    assert heads.asked == [ROOT / "pre.dat"] * 3


def test_blank_head_settles_after_its_wait(fs: FakeFs) -> None:
    heads = Heads()
    heads.blank.add(ROOT / "zeros.raw")
    settler = Settler(folder(blank_wait=25.0), head_is_blank=heads)
    settler.observe(fs.write("zeros.raw", 4096, T0))
    assert settler.tick(T0 + SETTLE, fs.stat) == []  # first found blank here
    assert settler.tick(T0 + 2 * SETTLE, fs.stat) == []
    assert settler.tick(T0 + 3 * SETTLE, fs.stat) == []
    assert len(settler.tick(T0 + 4 * SETTLE, fs.stat)) == 1  # 30 s blank >= 25 s


def test_blank_head_check_can_be_turned_off(fs: FakeFs) -> None:
    heads = Heads()
    heads.blank.add(ROOT / "zeros.raw")
    settler = Settler(folder(blank_wait=0.0), head_is_blank=heads)
    settler.observe(fs.write("zeros.raw", 4096, T0))
    assert len(settler.tick(T0 + SETTLE, fs.stat)) == 1
    assert heads.asked == []


def _real_stat(path: Path, root: Path) -> FileSeen | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return FileSeen(
        path=path,
        root=root,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        file_id=f"{st.st_dev}:{st.st_ino}",
        seen_at=time.time(),
        source="scan",
    )


def _settle_while_writing(
    settler: Settler,
    target: Path,
    root: Path,
    writer: Callable[[], None],
    done: threading.Event,
    too_early: str,
) -> list[FileSettled]:
    """Tick ``settler`` on real stats while ``writer`` runs; it must not settle before ``done``."""
    first = _real_stat(target, root)
    assert first is not None
    settler.observe(first)
    thread = threading.Thread(target=writer)
    thread.start()
    settled: list[FileSettled] = []
    deadline = time.monotonic() + 60
    try:
        while not settled and time.monotonic() < deadline:
            finished_before_tick = done.is_set()
            settled = settler.tick(time.time(), _real_stat)
            if settled:
                assert finished_before_tick, f"settled {too_early}"
            time.sleep(min(0.02, settler.next_due(time.time()) or 0.02))
    finally:
        thread.join()
    return settled


def test_real_file_appended_in_chunks_settles_only_when_done(tmp_path: Path) -> None:
    window = 1.0
    chunks, pause, chunk = 12, 0.1, b"x" * 4096  # pauses a tenth of the window
    target = tmp_path / "series.dcm"
    target.write_bytes(chunk)
    done = threading.Event()

    def writer() -> None:
        with target.open("ab") as fh:
            for _ in range(chunks - 1):
                time.sleep(pause)
                fh.write(chunk)
                fh.flush()
        done.set()

    settled = _settle_while_writing(
        Settler(folder(window)), target, tmp_path, writer, done, "while still appending"
    )
    assert [s.size for s in settled] == [len(chunk) * chunks]
    assert settled[0].size == target.stat().st_size


def test_real_preallocated_file_settles_only_when_filled(tmp_path: Path) -> None:
    window, pause = 1.0, 0.3
    data = os.urandom(64 * 1024)
    target = tmp_path / "frame.raw"
    with target.open("wb") as fh:
        fh.truncate(len(data))  # reserved: final size, all zero bytes
    done = threading.Event()

    def filler() -> None:
        time.sleep(2.5 * window)  # longer than the window before the first byte
        with target.open("r+b") as fh:
            for offset in range(0, len(data), 16 * 1024):
                fh.write(data[offset : offset + 16 * 1024])
                fh.flush()
                time.sleep(pause)
        done.set()

    def blank(path: Path) -> bool:
        with path.open("rb") as fh:
            head = fh.read(4096)
        return not head.strip(b"\0")

    settler = Settler(folder(window, blank_wait=60.0), head_is_blank=blank)
    settled = _settle_while_writing(
        settler, target, tmp_path, filler, done, "before the reserved file was filled"
    )
    assert [s.size for s in settled] == [len(data)]
    assert target.read_bytes() == data


# ---------------------------------------------------------------------- a cold start, bounded


def _tree(root: Path, folders: int, per_folder: int) -> set[str]:
    """``folders * per_folder`` new one-byte files, as a cold start finds them."""
    made: set[str] = set()
    for f in range(folders):
        folder = root / f"f{f:04d}"
        folder.mkdir(parents=True)
        for n in range(per_folder):
            path = os.path.join(folder, f"img{n:03d}.dat")
            descriptor = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
            os.write(descriptor, b"x")
            os.close(descriptor)
            made.add(path)
    return made


def _scan_stat(path: Path, root: Path) -> FileSeen | None:
    return stat_file(path, root, "scan")


def test_a_cold_start_keeps_the_settling_set_bounded_and_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "instrument"
    made = _tree(root, folders=200, per_folder=100)  # 20,000 files
    ws = WatchSettings(root, settle_seconds=SETTLE)
    settler = Settler(lambda _: ws)
    feed = ScanFeed(limit=1_000)
    feed.start(Watcher([ws], lambda _: None).scan_folder(ws))
    settled: Counter[str] = Counter()
    peak = rounds = 0
    while feed.active or settler.tracked:
        feed.feed(settler.observe, lambda: settler.tracked)
        peak = max(peak, settler.tracked)
        # a window later for every file fed so far
        settled.update(str(s.path) for s in settler.tick(time.time() + SETTLE, _scan_stat))
        rounds += 1
    assert peak == 1_000
    assert rounds == 21  # twenty batches, then the turn that finds the scan done
    assert set(settled) == made
    assert set(settled.values()) == {1}


def test_a_small_tree_goes_in_at_once_and_busy_counts_what_is_further_on(tmp_path: Path) -> None:
    root = tmp_path / "instrument"
    made = _tree(root, folders=5, per_folder=10)
    ws = WatchSettings(root, settle_seconds=SETTLE)
    feed = ScanFeed(limit=1_000)
    taken: list[FileSeen] = []
    feed.start(Watcher([ws], lambda _: None).scan_folder(ws))
    feed.feed(taken.append, lambda: 0)
    assert not feed.active
    assert {str(s.path) for s in taken} == made
    # files further down the pipeline count too: nothing is taken while they fill the limit
    held: list[FileSeen] = []
    feed = ScanFeed(limit=1_000)
    feed.start(Watcher([ws], lambda _: None).scan_folder(ws))
    feed.feed(held.append, lambda: 1_000)
    assert held == []
    assert feed.active
    feed.feed(held.append, lambda: 990 + len(held))
    assert len(held) == 10
    assert feed.active


def test_a_new_scan_replaces_one_under_way_without_losing_a_file(tmp_path: Path) -> None:
    root = tmp_path / "instrument"
    made = _tree(root, folders=10, per_folder=100)
    ws = WatchSettings(root, settle_seconds=SETTLE)
    watcher = Watcher([ws], lambda _: None)
    settler = Settler(lambda _: ws)
    feed = ScanFeed(limit=100)
    settled: Counter[str] = Counter()

    def take(seen: FileSeen) -> None:
        if str(seen.path) not in settled:  # as the registry skips what was harvested
            settler.observe(seen)

    feed.start(watcher.scan_folder(ws))
    feed.feed(take, lambda: settler.tracked)
    settled.update(str(s.path) for s in settler.tick(time.time() + SETTLE, _scan_stat))
    feed.feed(take, lambda: settler.tracked)  # part of the tree is still unvisited
    feed.start(watcher.scan_folder(ws))  # a rescan (events lost, an observer restarted)
    while feed.active or settler.tracked:
        feed.feed(take, lambda: settler.tracked)
        assert settler.tracked <= 100
        settled.update(str(s.path) for s in settler.tick(time.time() + SETTLE, _scan_stat))
    assert set(settled) == made
    assert set(settled.values()) == {1}


def test_the_daemon_feeds_a_cold_start_scan_through_the_bound(tmp_path: Path) -> None:
    made = _tree(tmp_path / "acquisitions", folders=250, per_folder=100)
    assert len(made) == SCAN_BATCH + 5_000
    settings = parse_settings(
        "instrument: {id: 'urn:test:instrument'}\n"
        "watch: [{path: acquisitions, settle_seconds: 10}]\n"
        "endpoint: {type: directory, path: harvested}\n"
        "state_dir: state\n"
        "workers: 0\n",
        source="test",
        base_dir=tmp_path,
    )
    daemon = Daemon(settings)
    try:
        daemon._scan(daemon.watcher.scan())
        assert daemon.settler.tracked == SCAN_BATCH  # the other 5,000 wait in the scan
        first = daemon.settler.tick(time.time() + 10, _scan_stat)
        daemon._feed_scan()
        assert daemon.settler.tracked == 5_000
        rest = daemon.settler.tick(time.time() + 10, _scan_stat)
        assert {str(s.path) for s in (*first, *rest)} == made
        assert len(first) + len(rest) == len(made)
    finally:
        daemon.state.close()


def test_tracks_under_tells_whether_a_file_of_a_folder_is_still_settling(
    fs: FakeFs, settler: Settler
) -> None:
    settler.observe(fs.write("run.zarr/0/0/1", 10, T0))
    assert settler.tracks_under(ROOT / "run.zarr")
    assert settler.tracks_under(ROOT / "run.zarr" / "0")
    # a sibling whose name merely starts the same is not under it
    assert not settler.tracks_under(ROOT / "run.za")
    assert not settler.tracks_under(ROOT / "other.zarr")
    assert settler.tick(T0 + SETTLE, fs.stat)
    assert not settler.tracks_under(ROOT / "run.zarr")


def deferring(max_seconds: float = 60.0) -> Callable[[Path], WatchSettings]:
    return lambda root: WatchSettings(
        root, settle_seconds=SETTLE, defer_while_writing=True, defer_max_seconds=max_seconds
    )


def test_a_finished_file_waits_while_its_neighbour_is_being_written(fs: FakeFs) -> None:
    settler = Settler(deferring(), confirm_seconds=1.0)
    settler.observe(fs.write("done.tif", 100, T0))
    for second in range(1, 30):  # the camera appends to the next file every second
        settler.observe(fs.write("stream.raw", 1000 * second, T0 + second))
        assert settler.tick(T0 + second, fs.stat) == [], f"released at {second} s"
    # the writing stopped at T0 + 29: the stream settles a window later, the finished
    # file, looked at again once per window, goes with it or just after
    settled = [f.path.name for t in range(30, 60) for f in settler.tick(T0 + t, fs.stat)]
    assert sorted(settled) == ["done.tif", "stream.raw"]


def _settled_beside_a_growing_file(
    settler: Settler, fs: FakeFs, done: str, growing: str
) -> list[str]:
    """Names settled in the 14 s while ``growing`` grows every second after ``done`` stopped."""
    settler.observe(fs.write(done, 100, T0))
    settled: list[str] = []
    for second in range(1, 15):
        settler.observe(fs.write(growing, 1000 * second, T0 + second))
        settled += [f.path.name for f in settler.tick(T0 + second, fs.stat)]
    return settled


def test_a_file_in_another_folder_is_not_held_back(fs: FakeFs) -> None:
    settler = Settler(deferring(), confirm_seconds=1.0)
    settled = _settled_beside_a_growing_file(settler, fs, "run1/done.tif", "run2/stream.raw")
    assert settled == ["done.tif"]


def test_a_file_is_held_back_no_longer_than_defer_max_seconds(fs: FakeFs) -> None:
    settler = Settler(deferring(max_seconds=25.0), confirm_seconds=1.0)
    settler.observe(fs.write("done.tif", 100, T0))
    released_at = None
    for second in range(1, 120):  # a time-lapse that writes for hours
        settler.observe(fs.write("timelapse.raw", 1000 * second, T0 + second))
        if [f for f in settler.tick(T0 + second, fs.stat) if f.path.name == "done.tif"]:
            released_at = second
            break
    assert released_at is not None, "held back for good"
    # held from its settling (T0 + 10) for 25 s, then at the next look (once per window)
    assert 35 <= released_at <= 35 + SETTLE


def test_without_defer_while_writing_a_neighbour_changes_nothing(fs: FakeFs) -> None:
    settler = Settler(folder(), confirm_seconds=1.0)  # the default: off
    assert _settled_beside_a_growing_file(settler, fs, "done.tif", "stream.raw") == ["done.tif"]


def test_a_neighbour_written_long_ago_does_not_hold_a_file_back(fs: FakeFs) -> None:
    """Files found by a start-up scan wait for their confirming look, not for each other."""
    settler = Settler(deferring(), confirm_seconds=1.0)
    settler.observe(fs.write("a.tif", 100, T0, mtime=T0 - 3600, source="scan"))
    settler.observe(fs.write("b.tif", 100, T0 + 0.5, mtime=T0 - 3600, source="scan"))
    assert [f.path.name for f in settler.tick(T0 + 1.2, fs.stat)] == ["a.tif"]
