"""Watch stage: real folders, real watchdog observers (native and polling), real scans."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from watchdog.observers.api import BaseObserver
from watchdog.utils import BaseThread

from acqharvest.model import FileGone, FileRefused, FileSeen, WatchMode, WatchSettings
from acqharvest.readonly import FileReader, NotSettledFile
from acqharvest.watch import Watcher, examine, file_identity, matches, stat_file
from tests.helpers import wait_until
from tests.simulator import write_past_path_max

TIMEOUT = 20.0
POLL = 0.2


def _wait_until(predicate: Callable[[], object]) -> bool:
    return wait_until(predicate, timeout=TIMEOUT, interval=0.02)


class Events:
    """Thread-safe collector for what the watcher emits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[FileSeen | FileGone | FileRefused] = []

    def __call__(self, item: FileSeen | FileGone | FileRefused) -> None:
        with self._lock:
            self._items.append(item)

    @property
    def items(self) -> list[FileSeen | FileGone | FileRefused]:
        with self._lock:
            return list(self._items)

    def seen(self, path: Path) -> list[FileSeen]:
        return [e for e in self.items if isinstance(e, FileSeen) and e.path == path]

    def gone(self, path: Path) -> list[FileGone]:
        return [e for e in self.items if isinstance(e, FileGone) and e.path == path]


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def watching(events: Events) -> Iterator[Callable[..., Watcher]]:
    """Start watchers for the test and always stop them afterwards."""
    started: list[Watcher] = []

    def start(*folders: WatchSettings, **kwargs: object) -> Watcher:
        watcher = Watcher(folders, events, poll_interval=POLL, **kwargs)  # type: ignore[arg-type]
        started.append(watcher)
        watcher.start()
        return watcher

    yield start
    for watcher in started:
        watcher.stop()


def _ws(path: Path, mode: WatchMode = "native", **kwargs: object) -> WatchSettings:
    return WatchSettings(path=path, mode=mode, **kwargs)  # type: ignore[arg-type]


MODES = pytest.mark.parametrize("mode", ["native", "polling"])


@MODES
def test_created_and_appended_file_is_seen(
    tmp_path: Path, events: Events, watching: Callable[..., Watcher], mode: WatchMode
) -> None:
    watcher = watching(_ws(tmp_path, mode))
    assert watcher.unwatched() == {}
    target = tmp_path / "sub" / "IM0001.dcm"
    target.parent.mkdir()
    target.write_bytes(b"a" * 100)
    assert _wait_until(lambda: any(s.size == 100 for s in events.seen(target)))
    with target.open("ab") as fh:
        fh.write(b"b" * 50)
    assert _wait_until(lambda: any(s.size == 150 for s in events.seen(target)))
    seen = events.seen(target)[-1]
    assert seen.root == tmp_path
    assert seen.file_id == file_identity(target.stat())
    assert seen.mtime_ns == target.stat().st_mtime_ns
    assert seen.source in ("event", "closed")


def test_native_close_write_is_reported_as_closed(
    tmp_path: Path, events: Events, watching: Callable[..., Watcher]
) -> None:
    watching(_ws(tmp_path, "native"))
    target = tmp_path / "a.tif"
    target.write_bytes(b"data")
    assert _wait_until(lambda: any(s.source == "closed" for s in events.seen(target)))


@MODES
def test_tmp_renamed_to_final_name(
    tmp_path: Path, events: Events, watching: Callable[..., Watcher], mode: WatchMode
) -> None:
    watching(_ws(tmp_path, mode, exclude=("*.tmp",)))
    tmp, final = tmp_path / "x.tmp", tmp_path / "x.dcm"
    tmp.write_bytes(b"d" * 64)
    tmp.rename(final)
    assert _wait_until(lambda: any(s.size == 64 for s in events.seen(final)))
    assert [e for e in events.items if e.path == tmp] == []


@MODES
def test_deleted_file_is_gone(
    tmp_path: Path, events: Events, watching: Callable[..., Watcher], mode: WatchMode
) -> None:
    watching(_ws(tmp_path, mode))
    target = tmp_path / "a.dcm"
    target.write_bytes(b"x")
    assert _wait_until(lambda: bool(events.seen(target)))
    target.unlink()
    assert _wait_until(lambda: events.gone(target) == [FileGone(path=target, root=tmp_path)])


def test_move_within_the_folder(
    tmp_path: Path, events: Events, watching: Callable[..., Watcher]
) -> None:
    watching(_ws(tmp_path))
    src, dest = tmp_path / "a.dcm", tmp_path / "b.dcm"
    src.write_bytes(b"x" * 10)
    assert _wait_until(lambda: bool(events.seen(src)))
    src.rename(dest)
    assert _wait_until(lambda: bool(events.gone(src)) and bool(events.seen(dest)))
    # the same inode under a new name (the rename changed its ctime)
    assert (
        events.seen(dest)[-1].file_id.split(":")[:2] == events.seen(src)[-1].file_id.split(":")[:2]
    )


@MODES
def test_symlinked_root_reports_paths_under_the_configured_root(
    tmp_path: Path, events: Events, watching: Callable[..., Watcher], mode: WatchMode
) -> None:
    # macOS reports resolved paths (/private/var/... for /var/...); either way the
    # emitted path must sit under the root as configured.
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    os.symlink(real, link)
    watching(_ws(link, mode))
    (real / "a.dcm").write_bytes(b"x")
    assert _wait_until(lambda: bool(events.seen(link / "a.dcm")))
    assert {e.root for e in events.items} == {link}
    ws = _ws(link)
    assert [s.path for s in Watcher([ws], Events()).scan_folder(ws)] == [link / "a.dcm"]


def test_include_limits_events(
    tmp_path: Path, events: Events, watching: Callable[..., Watcher]
) -> None:
    watching(_ws(tmp_path, include=("*.dcm",)))
    (tmp_path / "notes.txt").write_text("n")
    (tmp_path / "a.dcm").write_bytes(b"x")
    assert _wait_until(lambda: bool(events.seen(tmp_path / "a.dcm")))
    assert {e.path.name for e in events.items} == {"a.dcm"}


def test_handler_error_does_not_kill_the_observer(tmp_path: Path) -> None:
    received: list[FileSeen | FileGone | FileRefused] = []

    def emit(item: FileSeen | FileGone | FileRefused) -> None:
        if item.path.name == "bad.dcm":
            raise RuntimeError("downstream exploded")
        received.append(item)

    watcher = Watcher([_ws(tmp_path)], emit)
    watcher.start()
    try:
        with capture_logs() as logs:
            (tmp_path / "bad.dcm").write_bytes(b"x")
            (tmp_path / "good.dcm").write_bytes(b"x")
            assert _wait_until(lambda: any(e.path.name == "good.dcm" for e in received))
        assert watcher.unwatched() == {}
        assert any(log["event"] == "watch_event_failed" for log in logs)
    finally:
        watcher.stop()


def test_auto_falls_back_to_polling(
    tmp_path: Path, events: Events, watching: Callable[..., Watcher]
) -> None:
    def exhausted() -> BaseObserver:
        raise OSError(errno.EMFILE, "inotify instance limit reached")

    with capture_logs() as logs:
        watcher = watching(_ws(tmp_path, "auto"), native=exhausted)
    fallback = [log for log in logs if log["event"] == "watch_falling_back_to_polling"]
    assert [(log["log_level"], log["folder"]) for log in fallback] == [("warning", str(tmp_path))]
    assert watcher.unwatched() == {}
    (tmp_path / "a.dcm").write_bytes(b"x")
    assert _wait_until(lambda: bool(events.seen(tmp_path / "a.dcm")))


def test_native_mode_does_not_fall_back(tmp_path: Path, watching: Callable[..., Watcher]) -> None:
    def exhausted() -> BaseObserver:
        raise OSError(errno.EMFILE, "inotify instance limit reached")

    watcher = watching(_ws(tmp_path, "native"), native=exhausted)
    assert watcher.unwatched() == {tmp_path: "not running"}


def test_missing_folder_does_not_crash_and_is_restarted(
    tmp_path: Path, events: Events, watching: Callable[..., Watcher]
) -> None:
    missing = tmp_path / "share"
    present = tmp_path / "local"
    present.mkdir()
    with capture_logs() as logs:
        watcher = watching(_ws(missing), _ws(present))
        assert list(watcher.scan_folder(_ws(missing))) == []
    assert [log["folder"] for log in logs if log["log_level"] == "warning"] == [
        str(missing),
        str(missing),
    ]
    assert list(watcher.unwatched()) == [missing]
    assert watcher.check_health() == []

    missing.mkdir()
    assert watcher.check_health() == [missing]
    assert watcher.unwatched() == {}
    (missing / "a.dcm").write_bytes(b"x")
    assert _wait_until(lambda: bool(events.seen(missing / "a.dcm")))


@MODES
def test_deleted_watch_folder_is_reported_dead_and_recovers(
    tmp_path: Path, events: Events, watching: Callable[..., Watcher], mode: WatchMode
) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    watcher = watching(_ws(folder, mode))
    shutil.rmtree(folder)
    assert _wait_until(lambda: list(watcher.unwatched()) == [folder])
    folder.mkdir()
    # A polling observer on a folder that got its old inode back simply polls on. A native
    # one may be seen missing its folder before its emitter thread has died: the health
    # check that follows (every 10 s in the daemon; driven here) restarts it then.
    assert watcher.check_health() in ([folder], [])

    def recovered() -> bool:
        watcher.check_health()
        return watcher.unwatched() == {}

    assert _wait_until(recovered)
    (folder / "a.dcm").write_bytes(b"x")
    assert _wait_until(lambda: bool(events.seen(folder / "a.dcm")))


def _tree(root: Path) -> None:
    for rel in ("a.dcm", "b.tmp", "s1/c.dcm", "s1/s2/d.dcm", "s1/s2/e.tmp", "cache/f.dcm"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rel.encode())


def _names(seen: Iterator[FileSeen], root: Path) -> set[str]:
    return {s.path.relative_to(root).as_posix() for s in seen}


def test_scan_finds_nested_files(tmp_path: Path) -> None:
    _tree(tmp_path)
    ws = _ws(tmp_path, exclude=("*.tmp", "cache/*"))
    found = list(Watcher([ws], Events()).scan())
    assert _names(iter(found), tmp_path) == {"a.dcm", "s1/c.dcm", "s1/s2/d.dcm"}
    assert {s.source for s in found} == {"scan"}
    d = next(s for s in found if s.path.name == "d.dcm")
    st = (tmp_path / "s1/s2/d.dcm").stat()
    assert (d.root, d.size, d.mtime_ns, d.file_id) == (
        tmp_path,
        st.st_size,
        st.st_mtime_ns,
        file_identity(st),
    )


def test_scan_respects_recursive_false(tmp_path: Path) -> None:
    _tree(tmp_path)
    # exclude nothing: b.tmp shows that only the depth limits the scan
    ws = _ws(tmp_path, recursive=False, exclude=())
    assert _names(Watcher([ws], Events()).scan_folder(ws), tmp_path) == {"a.dcm", "b.tmp"}


def test_scan_prunes_excluded_folders_and_skips_directory_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _tree(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "z.dcm").write_bytes(b"z")
    os.symlink(outside, root / "link")
    ws = _ws(root, exclude=("s2",))
    assert _names(Watcher([ws], Events()).scan_folder(ws), root) == {
        "a.dcm",
        "b.tmp",
        "s1/c.dcm",
        "cache/f.dcm",
    }


def test_scan_is_a_generator(tmp_path: Path) -> None:
    _tree(tmp_path)
    ws = _ws(tmp_path)
    scan = Watcher([ws], Events()).scan_folder(ws)
    assert isinstance(scan, types.GeneratorType)
    assert isinstance(next(scan), FileSeen)
    scan.close()


def test_scan_of_all_folders(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        folder.mkdir()
        (folder / "x.dcm").write_bytes(b"x")
    watcher = Watcher([_ws(one), _ws(tmp_path / "gone"), _ws(two)], Events())
    assert {s.path for s in watcher.scan()} == {one / "x.dcm", two / "x.dcm"}


def test_stop_joins_all_observer_threads(tmp_path: Path, events: Events) -> None:
    def watchdog_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if isinstance(t, BaseThread) and t.is_alive()}

    before = watchdog_threads()
    folders = []
    for mode in ("native", "polling", "auto"):
        folder = tmp_path / mode
        folder.mkdir()
        folders.append(_ws(folder, mode))
    watcher = Watcher(folders, events, poll_interval=POLL)
    watcher.start()
    assert len(watchdog_threads() - before) >= 6  # an observer and an emitter per folder
    watcher.stop()
    assert watchdog_threads() - before == set()
    assert watcher.unwatched() == {}


@pytest.mark.parametrize(
    ("relpath", "include", "exclude", "expected"),
    [
        ("a.dcm", ("*",), (), True),
        ("deep/er/a.dcm", ("*",), (), True),
        ("deep/a.dcm", ("*.dcm",), (), True),
        ("deep/a.tif", ("*.dcm",), (), False),
        ("a.dcm", (), (), False),
        ("raw/a.tif", ("raw/*",), (), True),
        ("other/a.tif", ("raw/*",), (), False),
        ("x.tmp", ("*",), ("*.tmp",), False),
        ("deep/er/x.tmp", ("*",), ("*.tmp",), False),
        ("deep/er/x.dcm", ("*",), ("*.tmp",), True),
        ("cache/a.dcm", ("*",), ("cache/*",), False),
        ("cache/deep/a.dcm", ("*",), ("cache/*",), False),
        ("sub/cache/a.dcm", ("*",), ("cache/*",), True),
        ("sub/.git/objects/ab", ("*",), (".git",), False),
        ("a/b/c.dcm", ("*",), ("a/b",), False),
        ("ab/c.dcm", ("*",), ("a",), True),
        ("~$lock.dcm", ("*.dcm",), ("~$*",), False),
    ],
)
def test_matches(
    relpath: str, include: tuple[str, ...], exclude: tuple[str, ...], expected: bool
) -> None:
    assert matches(relpath, include, exclude) is expected


def test_file_identity_changes_when_the_file_is_replaced_or_rewritten(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"1")
    b.write_bytes(b"2")
    first = file_identity(a.stat())
    assert first != file_identity(b.stat())
    assert first == file_identity(a.stat())
    device, inode, _ = first.split(":")
    # rewritten in place, size and mtime put back: same inode, new ctime
    st = a.stat()
    a.write_bytes(b"3")
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    rewritten = file_identity(a.stat())
    assert (a.stat().st_size, a.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert rewritten != first
    assert rewritten.split(":")[:2] == [device, inode]


def _inotify_fd(watcher: Watcher, folder: Path) -> object:
    """The real inotify reader of a native observer (watchdog 7), to inject what it reads."""
    return watcher._live[folder].observer._inotify_fd  # type: ignore[attr-defined]


def test_kernel_queue_overflow_asks_for_a_rescan_and_watching_goes_on(
    tmp_path: Path, events: Events
) -> None:
    from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent

    lost = threading.Event()
    watcher = Watcher([_ws(tmp_path)], events, on_lost=lost.set)
    watcher.start()
    try:
        with capture_logs() as logs:
            # exactly what the kernel delivers when its queue overflowed: wd -1, IN_Q_OVERFLOW
            overflow = InotifyEvent(-1, InotifyConstants.IN_Q_OVERFLOW, 0, b"")  # type: ignore[arg-type]
            _inotify_fd(watcher, tmp_path).handle_event(overflow)  # type: ignore[attr-defined]
        assert lost.is_set()
        assert [log["event"] for log in logs] == ["watch_events_lost"]
        assert watcher.unwatched() == {}
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "after.dcm").write_bytes(b"x")
        assert _wait_until(lambda: bool(events.seen(tmp_path / "sub" / "after.dcm")))
    finally:
        watcher.stop()


def test_own_reads_and_scans_raise_no_events(
    tmp_path: Path, events: Events, watching: Callable[..., Watcher]
) -> None:
    # Open and close-without-write are not subscribed: our scans and reads must not flood
    # the kernel queue (a rescan of 100,000 folders would overflow it every time).
    watcher = watching(_ws(tmp_path))
    target = tmp_path / "a.dcm"
    target.write_bytes(b"x" * 10)
    assert _wait_until(lambda: any(s.source == "closed" for s in events.seen(target)))
    count = len(events.items)
    for _ in range(20):
        target.read_bytes()
    assert [s.path for s in watcher.scan()] == [target]
    (tmp_path / "marker.dcm").write_bytes(b"m")
    assert _wait_until(lambda: bool(events.seen(tmp_path / "marker.dcm")))
    assert {e.path for e in events.items[count:]} == {tmp_path / "marker.dcm"}


def test_stalled_handler_is_detected_and_replaced(tmp_path: Path) -> None:
    release = threading.Event()
    received: list[Path] = []

    def emit(item: FileSeen | FileGone | FileRefused) -> None:
        if item.path.name == "hang.dcm":
            release.wait(TIMEOUT)  # a stat blocked on a dead share, say
        received.append(item.path)

    watcher = Watcher([_ws(tmp_path)], emit, stall_seconds=0.3)
    watcher.start()
    try:
        (tmp_path / "hang.dcm").write_bytes(b"x")
        assert _wait_until(lambda: list(watcher.unwatched()) == [tmp_path])
        with capture_logs() as logs:
            assert watcher.check_health() == [tmp_path]
        assert next(log["problem"] for log in logs if "problem" in log).startswith(
            "handler stalled"
        )
        assert watcher.unwatched() == {}
        (tmp_path / "after.dcm").write_bytes(b"x")
        assert _wait_until(lambda: tmp_path / "after.dcm" in received)
    finally:
        release.set()
        watcher.stop()


@MODES
def test_root_link_pointed_elsewhere_restarts_the_observer(
    tmp_path: Path, events: Events, watching: Callable[..., Watcher], mode: WatchMode
) -> None:
    # a share remounted elsewhere, or the admin moving the link: the old observer hears nothing
    first, second, link = tmp_path / "first", tmp_path / "second", tmp_path / "link"
    first.mkdir()
    second.mkdir()
    os.symlink(first, link)
    watcher = watching(_ws(link, mode))
    assert watcher.unwatched() == {}
    link.unlink()
    os.symlink(second, link)
    assert watcher.unwatched() == {link: "the folder now resolves elsewhere"}
    with capture_logs() as logs:
        assert watcher.check_health() == [link]
    # the health check acts on, and reports, what ``unwatched`` found
    assert [log["problem"] for log in logs if log["event"] == "watch_observer_unhealthy"] == [
        "the folder now resolves elsewhere"
    ]
    (second / "a.dcm").write_bytes(b"x")
    assert _wait_until(lambda: bool(events.seen(link / "a.dcm")))


_LIMITED = """
import json, sys
from pathlib import Path
from structlog.testing import capture_logs
from acqharvest.model import WatchSettings
from acqharvest.watch import Watcher, watch_budget_exhausted
root, mode = Path(sys.argv[1]), sys.argv[2]
seen = []
with capture_logs() as logs:
    watcher = Watcher([WatchSettings(path=root, mode=mode)], seen.append)
    watcher.start()
    unwatched = [str(path) for path in watcher.unwatched()]
    again = watcher.check_health()
    scanned = len(list(watcher.scan()))
    watcher.stop()
print(json.dumps({"logs": logs, "unwatched": unwatched, "again": [str(p) for p in again],
                  "scanned": scanned, "native": type(watcher).__name__}))
"""


@pytest.mark.parametrize("mode", ["auto", "native"])
def test_exhausted_inotify_watch_limit_is_reported(tmp_path: Path, mode: WatchMode) -> None:
    # The limit is lowered in a user namespace of our own, never for the whole machine.
    for index in range(40):
        (tmp_path / f"d{index:02d}").mkdir()
        (tmp_path / f"d{index:02d}" / "a.dcm").write_bytes(b"x")
    script = (
        "echo 20 > /proc/sys/user/max_inotify_watches && exec "
        f'{sys.executable} -c "$0" {tmp_path} {mode}'
    )
    probe = subprocess.run(["unshare", "-U", "-r", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"no user namespaces here: {probe.stderr.decode().strip()}")
    done = subprocess.run(
        ["unshare", "-U", "-r", "sh", "-c", script, _LIMITED],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result = json.loads(done.stdout)
    warnings = [log for log in result["logs"] if log["event"] == "watch_limit_reached"]
    assert [(w["folder"], w["limit"]) for w in warnings] == [(str(tmp_path), 20)]
    assert "max_user_watches" in warnings[0]["fix"]
    # auto: scans cover the folder on purpose; native: keeps what it could watch
    assert result["unwatched"] == []
    assert result["again"] == []
    assert result["scanned"] == 40


def _hostile_tree(root: Path, outside: Path) -> dict[str, str]:
    """Good files beside every kind of object that must never be read; name -> reason."""
    (root / "good").mkdir(parents=True)
    (root / "good" / "a.dcm").write_bytes(b"a")
    (outside / "secret.txt").write_text("secret")
    os.symlink(outside / "secret.txt", root / "good" / "escape.dcm")
    os.symlink(outside, root / "escape-dir")  # a folder link: the scan never descends
    os.symlink("/dev/zero", root / "zero.dcm")
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    os.symlink("good/a.dcm", root / "inside.dcm")  # its target is harvested anyway
    os.mkfifo(root / "pipe.dcm")
    expected = {
        "good/escape.dcm": "outside the watch folder",
        "escape-dir": "outside the watch folder",
        "zero.dcm": "outside the watch folder",
        "loop-a": "loop",
        "loop-b": "loop",
        "pipe.dcm": "FIFO",
    }
    try:
        os.mknod(root / "null.dcm", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        expected["null.dcm"] = "device file"
    except PermissionError:
        pass  # not root: FIFOs and links still cover the scan paths
    return expected


def _refusals(events: Events, root: Path) -> dict[str, str]:
    return {
        e.path.relative_to(root).as_posix(): e.reason
        for e in events.items
        if isinstance(e, FileRefused)
    }


def test_scan_refuses_links_out_loops_fifos_and_devices_once(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    expected = _hostile_tree(root, outside)
    events = Events()
    watcher = Watcher([_ws(root)], events)
    with capture_logs() as logs:
        assert [s.path for s in watcher.scan()] == [root / "good" / "a.dcm"]
        assert [s.path for s in watcher.scan()] == [root / "good" / "a.dcm"]
    refused = _refusals(events, root)
    assert set(refused) == set(expected)
    for name, words in expected.items():
        assert words in refused[name], (name, refused[name])
    # one warning per path, naming it, even over two scans
    warned = [log["path"] for log in logs if log["event"] == "watch_refused"]
    assert sorted(warned) == sorted(str(root / name) for name in expected)


def test_paths_longer_than_path_max_are_refused_once_not_skipped(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "short.dcm").write_bytes(b"x")
    long_file, long_folder = write_past_path_max(root, b"x", ".dcm")
    events = Events()
    watcher = Watcher([_ws(root)], events)
    with capture_logs() as logs:
        assert [s.path for s in watcher.scan()] == [root / "short.dcm"]
        assert [s.path for s in watcher.scan()] == [root / "short.dcm"]
    refused = {e.path: e.reason for e in events.items if isinstance(e, FileRefused)}
    assert set(refused) == {long_file, long_folder}
    length = len(os.fsencode(long_file))
    assert refused[long_file].startswith(f"its path is {length} bytes long")
    assert "PATH_MAX 4096" in refused[long_folder]
    warned = [log["path"] for log in logs if log["event"] == "watch_refused"]
    assert sorted(warned) == sorted([str(long_file), str(long_folder)])
    # an event or a re-check before packaging names it the same way
    again = examine(long_file, root, "event")
    assert isinstance(again, FileRefused)
    assert again.reason == refused[long_file]


def _root_and_outside(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    return root, outside


def test_events_refuse_what_the_scan_refuses(
    tmp_path: Path, events: Events, watching: Callable[..., Watcher]
) -> None:
    root, outside = _root_and_outside(tmp_path)
    watching(_ws(root))
    os.mkfifo(root / "pipe.dcm")
    (outside / "secret.dcm").write_bytes(b"s")
    os.symlink(outside / "secret.dcm", root / "escape.dcm")
    (root / "good.dcm").write_bytes(b"g")
    assert _wait_until(lambda: set(_refusals(events, root)) == {"pipe.dcm", "escape.dcm"})
    assert _wait_until(lambda: bool(events.seen(root / "good.dcm")))
    assert not [e for e in events.items if isinstance(e, FileSeen) and e.path.name != "good.dcm"]


def test_polling_never_follows_a_folder_link_out_of_the_root(
    tmp_path: Path, events: Events, watching: Callable[..., Watcher]
) -> None:
    root, outside = _root_and_outside(tmp_path)
    os.symlink(outside, root / "escape")
    watching(_ws(root, "polling"))
    (outside / "secret.dcm").write_bytes(b"s")
    (root / "marker.dcm").write_bytes(b"m")
    assert _wait_until(lambda: bool(events.seen(root / "marker.dcm")))
    assert all("escape" not in e.path.parts for e in events.items)


def test_a_folder_swapped_for_a_link_cannot_lead_a_read_outside(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "x.dcm").write_bytes(b"x")
    (outside / "x.dcm").write_bytes(b"secret")
    assert stat_file(root / "sub" / "x.dcm", root, "scan") is not None
    shutil.rmtree(root / "sub")
    os.symlink(outside, root / "sub")
    assert stat_file(root / "sub" / "x.dcm", root, "scan") is None
    refused = examine(root / "sub" / "x.dcm", root, "scan")
    assert isinstance(refused, FileRefused)
    assert "outside" in refused.reason


def _swap_for_link(folder: Path, target: Path) -> None:
    shutil.rmtree(folder)
    os.symlink(target, folder)


@pytest.mark.parametrize("swapped", ["the folder", "its parent"])
def test_a_folder_swapped_for_a_link_while_the_scan_is_busy_is_not_entered(
    tmp_path: Path, swapped: str
) -> None:
    # The scan lists ``a`` (and within it ``sub``) long before it descends into ``sub``:
    # on a huge tree, hours. A link put in place meanwhile must not lead it outside.
    root, outside = _root_and_outside(tmp_path)
    (root / "a" / "sub").mkdir(parents=True)
    for number in range(3):
        (root / "a" / f"{number}.dat").write_bytes(b"a")
    (root / "a" / "sub" / "inside.dat").write_bytes(b"i")
    (outside / "sub").mkdir()
    (outside / "secret.dat").write_bytes(b"s")
    (outside / "sub" / "secret.dat").write_bytes(b"s")
    ws = _ws(root)
    scan = Watcher([ws], Events()).scan_folder(ws)
    first = [next(scan) for _ in range(3)]  # the files of ``a``: ``sub`` is listed, not entered
    assert {s.path.name for s in first} == {"0.dat", "1.dat", "2.dat"}
    if swapped == "the folder":
        _swap_for_link(root / "a" / "sub", outside)
    else:
        _swap_for_link(root / "a", outside)
    with capture_logs() as logs:
        rest = list(scan)
    assert rest == []
    if swapped == "the folder":
        warned = [log for log in logs if log["event"] == "watch_folder_swapped"]
        assert [log["path"] for log in warned] == [str(root / "a" / "sub")]


def test_a_scan_holds_a_descriptor_per_level_and_releases_them(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*(f"d{level}" for level in range(30)))
    deep.mkdir(parents=True)
    (deep / "bottom.dat").write_bytes(b"b")
    for level in range(5):
        (tmp_path / f"side{level}").mkdir()
        (tmp_path / f"side{level}" / "x.dat").write_bytes(b"x")
    ws = _ws(tmp_path)
    before = len(os.listdir("/proc/self/fd"))
    with capture_logs() as logs:
        found = list(Watcher([ws], Events()).scan_folder(ws))
    assert {s.path for s in found} == {deep / "bottom.dat", *(tmp_path.glob("side*/x.dat"))}
    assert len(os.listdir("/proc/self/fd")) == before
    finished = [log for log in logs if log["event"] == "watch_scan_finished"]
    assert [(log["folder"], log["files"]) for log in finished] == [(str(tmp_path), 6)]
    # a scan dropped halfway (a rescan replaced it) closes what it held
    scan = Watcher([ws], Events()).scan_folder(ws)
    assert isinstance(scan, types.GeneratorType)
    next(scan)
    assert len(os.listdir("/proc/self/fd")) > before
    scan.close()
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_parent_folder_swapped_after_settling_cannot_lead_a_read_outside(
    tmp_path: Path,
) -> None:
    # The read happens later, in a worker, by path: it must not read the file now behind
    # the link, even one with the same name, size and header.
    root, outside = _root_and_outside(tmp_path)
    (root / "sub").mkdir()
    (root / "sub" / "x.dcm").write_bytes(b"same header, inside")
    (outside / "x.dcm").write_bytes(b"same header, inside")
    ws = _ws(root)
    (seen,) = Watcher([ws], Events()).scan_folder(ws)
    _swap_for_link(root / "sub", outside)
    reader = FileReader({seen.path: seen.file_id})
    with pytest.raises(NotSettledFile) as refused:
        reader.head(seen.path, 8)
    assert refused.value.replaced
    assert "another file replaced the one that settled" in str(refused.value)
    assert reader.bytes_read == 0


_SCAN_HELD = """
import itertools, pathlib, sys, tracemalloc
from pathlib import Path
from acqharvest.model import WatchSettings
from acqharvest.watch import Watcher

ws = WatchSettings(path=Path(sys.argv[1]), mode="native")
watcher = Watcher([ws], lambda item: None)
scan = watcher.scan_folder(ws)
tracemalloc.start()
# halfway, with the scan suspended: what it holds is what it allocated and kept
count = sum(1 for _ in itertools.islice(scan, 10_000))
snapshot = tracemalloc.take_snapshot()
count += sum(1 for _ in scan)
# Except the table of interned strings: pathlib interns every name part, and the table
# resizes when freed names pile up in it, one allocation of megabytes at a moment that
# depends on everything imported before. No Path is anywhere near that size.
held = sum(
    trace.size
    for trace in snapshot.traces
    if trace.size < 256 * 1024 or trace.traceback[0].filename != pathlib.__file__
)
print(count, held)
"""


def test_scan_over_many_files_holds_none_of_them(tmp_path: Path) -> None:
    """Measured in a process of its own: tracemalloc counts every thread's allocations, and
    a test process may hold threads of earlier tests (loopback servers) that allocate."""
    for folder in range(200):
        sub = tmp_path / f"f{folder:03d}"
        sub.mkdir()
        for number in range(100):
            os.close(os.open(sub / f"{number:03d}.dat", os.O_CREAT | os.O_WRONLY, 0o644))
    measured = subprocess.run(
        [sys.executable, "-c", _SCAN_HELD, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    # the last line: the watcher may log its own lines before it
    count, held = map(int, measured.stdout.splitlines()[-1].split())
    assert count == 20_000
    # a FileSeen with its Path is several hundred bytes: holding the 10,000 seen so far
    # would be megabytes
    assert held < 10_000 * 50, f"{held} bytes held halfway"


def _own_site(tmp_path: Path) -> tuple[Path, list[tuple[str, Path]]]:
    """A folder holding a state dir, an endpoint folder and a log file, each with content,
    beside one acquisition; and the daemon's own paths, as the runtime passes them."""
    site = tmp_path / "site"
    for name in ("state/outbox", "out", "scan"):
        (site / name).mkdir(parents=True)
    (site / "state" / "secret.key").write_bytes(b"k" * 32)
    (site / "state" / "outbox" / "p.json").write_text("{}")
    (site / "out" / "delivered.json").write_text("{}")
    (site / "agent.log").write_text("{}\n")
    (site / "scan" / "a.dcm").write_bytes(b"x")
    own = [("state_dir", site / "state"), ("log file", site / "agent.log")]
    return site, [*own, ("endpoint.path", site / "out")]


def test_the_daemons_own_folders_and_log_are_never_scanned_by_any_path(tmp_path: Path) -> None:
    # the config saw a watch folder apart from them; its link was pointed at them later
    site, own = _own_site(tmp_path)
    root = tmp_path / "instrument"
    root.symlink_to(site)
    events = Events()
    watcher = Watcher([_ws(root)], events, own=own)

    with capture_logs() as logs:
        assert [s.path for s in watcher.scan()] == [root / "scan" / "a.dcm"]
        assert [s.path for s in watcher.scan()] == [root / "scan" / "a.dcm"]

    assert _refusals(events, root) == {
        "state": f"acqharvest's own state_dir ({site / 'state'}): never harvested",
        "out": f"acqharvest's own endpoint.path ({site / 'out'}): never harvested",
        "agent.log": f"acqharvest's own log file ({site / 'agent.log'}): never harvested",
    }
    # once each, over two scans
    assert sum(log["event"] == "watch_refused" for log in logs) == 3


def test_a_watch_folder_inside_the_state_dir_is_not_scanned(tmp_path: Path) -> None:
    site, own = _own_site(tmp_path)
    events = Events()
    root = site / "state" / "outbox"

    assert list(Watcher([_ws(root)], events, own=own).scan()) == []
    assert _refusals(events, root) == {
        ".": f"acqharvest's own state_dir ({site / 'state'}): never harvested"
    }


@MODES
def test_events_in_the_daemons_own_folders_are_ignored(
    tmp_path: Path, events: Events, watching: Callable[..., Watcher], mode: WatchMode
) -> None:
    site, own = _own_site(tmp_path)
    root = tmp_path / "instrument"
    root.symlink_to(site)
    watching(_ws(root, mode), own=own)
    # what the daemon does all the time: write its registry, spool, deliver and log
    (site / "state" / "state.sqlite3").write_bytes(b"db")
    (site / "state" / "outbox" / "q.json").write_text("{}")
    (site / "out" / "second.json").write_text("{}")
    with (site / "agent.log").open("a") as log:
        log.write("{}\n")
    (site / "scan" / "b.dcm").write_bytes(b"y")

    assert _wait_until(lambda: bool(events.seen(root / "scan" / "b.dcm")))
    # the events of one poll may come in any order: those of a later one come after them
    (site / "scan" / "c.dcm").write_bytes(b"z")
    assert _wait_until(lambda: bool(events.seen(root / "scan" / "c.dcm")))
    reported = {e.path.relative_to(root).parts[0] for e in events.items}
    assert reported == {"scan"}


@MODES
def test_events_in_a_watch_folder_inside_the_state_dir_are_ignored(
    tmp_path: Path, events: Events, watching: Callable[..., Watcher], mode: WatchMode
) -> None:
    # a watch-folder link pointed into the state dir after start: its observer restarts there
    site, own = _own_site(tmp_path)
    inside, other = site / "state" / "outbox", tmp_path / "other"
    other.mkdir()
    watching(_ws(inside, mode), _ws(other, mode), own=own)
    (inside / "q.json").write_text("{}")
    (other / "b.dcm").write_bytes(b"y")

    assert _wait_until(lambda: bool(events.seen(other / "b.dcm")))
    threading.Event().wait(3 * POLL)  # the other folder's observer had as long as this one
    assert {e.path for e in events.items} == {other / "b.dcm"}
