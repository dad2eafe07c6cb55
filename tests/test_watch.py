"""Watch stage: real folders, real watchdog observers (native and polling), real scans."""

from __future__ import annotations

import os
import shutil
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from watchdog.observers.api import BaseObserver
from watchdog.utils import BaseThread

from acqharvest.model import FileGone, FileSeen, WatchMode, WatchSettings
from acqharvest.watch import Watcher, file_identity, matches
from tests.helpers import wait_until

TIMEOUT = 20.0
POLL = 0.2


def _wait_until(predicate: Callable[[], object]) -> bool:
    return wait_until(predicate, timeout=TIMEOUT, interval=0.02)


class Events:
    """Thread-safe collector for what the watcher emits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[FileSeen | FileGone] = []

    def __call__(self, item: FileSeen | FileGone) -> None:
        with self._lock:
            self._items.append(item)

    @property
    def items(self) -> list[FileSeen | FileGone]:
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
    assert watcher.alive() == []
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
    assert events.seen(dest)[-1].file_id == events.seen(src)[-1].file_id


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
    received: list[FileSeen | FileGone] = []

    def emit(item: FileSeen | FileGone) -> None:
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
        assert watcher.alive() == []
        assert any(log["event"] == "watch_event_failed" for log in logs)
    finally:
        watcher.stop()


def test_auto_falls_back_to_polling(
    tmp_path: Path, events: Events, watching: Callable[..., Watcher]
) -> None:
    def exhausted() -> BaseObserver:
        raise OSError(28, "inotify watch limit reached")

    with capture_logs() as logs:
        watcher = watching(_ws(tmp_path, "auto"), native=exhausted)
    fallback = [log for log in logs if log["event"] == "watch_falling_back_to_polling"]
    assert [(log["log_level"], log["folder"]) for log in fallback] == [("warning", str(tmp_path))]
    assert watcher.alive() == []
    (tmp_path / "a.dcm").write_bytes(b"x")
    assert _wait_until(lambda: bool(events.seen(tmp_path / "a.dcm")))


def test_native_mode_does_not_fall_back(tmp_path: Path, watching: Callable[..., Watcher]) -> None:
    def exhausted() -> BaseObserver:
        raise OSError(28, "inotify watch limit reached")

    watcher = watching(_ws(tmp_path, "native"), native=exhausted)
    assert watcher.alive() == [str(tmp_path)]


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
    assert watcher.alive() == [str(missing)]
    assert watcher.restart_dead() == []

    missing.mkdir()
    assert watcher.restart_dead() == [missing]
    assert watcher.alive() == []
    (missing / "a.dcm").write_bytes(b"x")
    assert _wait_until(lambda: bool(events.seen(missing / "a.dcm")))


@MODES
def test_deleted_watch_folder_is_reported_dead(
    tmp_path: Path, watching: Callable[..., Watcher], mode: WatchMode
) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    watcher = watching(_ws(folder, mode))
    shutil.rmtree(folder)
    assert _wait_until(lambda: watcher.alive() == [str(folder)])
    folder.mkdir()
    assert watcher.restart_dead() == [folder]
    assert watcher.alive() == []


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
    ws = _ws(tmp_path, recursive=False)
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
    assert watcher.alive() == []


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


def test_file_identity(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"1")
    b.write_bytes(b"2")
    before = file_identity(a.stat())
    assert before != file_identity(b.stat())
    a.rename(tmp_path / "c")
    assert file_identity((tmp_path / "c").stat()) == before
