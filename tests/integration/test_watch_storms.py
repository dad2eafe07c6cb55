"""Watching that does not silently stop, proved against the real daemon.

Events are only hints, so each way of losing them must end in a rescan that finds every
file, and each file must still be sent once: a storm larger than the daemon's own event
queue, an overflow of the kernel's inotify queue, and an observer killed by deleting the
folder it watched. The periodic rescan is an hour away in each test, so only the recovery
under test can find the files the lost events named.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from acqharvest import runtime
from acqharvest.runtime import EVENT_QUEUE_ENV
from tests.integration.conftest import SMALL_TIFFS, Harness, harvested

pytestmark = pytest.mark.integration

#: no periodic rescan during a test: only the recovery under test may find lost files
NO_RESCAN = 3600
#: the daemon's event queue for the storm: files here, times the events each one raises,
#: exceed it many times over
SMALL_QUEUE = 16
STORM_FILES = 300
#: extra attribute events per file, while the storm is on
TOUCHES = 3
#: the kernel's queue for the overflow test (``fs.inotify.max_queued_events``)
KERNEL_QUEUE = 16
MAX_QUEUED_EVENTS = Path("/proc/sys/fs/inotify/max_queued_events")
DELIVERY_TIMEOUT = 120.0


def _storm(folder: Path, data: bytes, count: int, touches: int) -> set[str]:
    """``count`` new files as fast as they can be written, then touched ``touches`` times
    each: about ``3 + touches`` events a file (created, modified, closed, attrib).
    Returns their paths relative to ``folder``."""
    targets = [folder / f"storm{index:04d}.tif" for index in range(count)]
    for target in targets:
        target.write_bytes(data)
    for _ in range(touches):
        for target in targets:
            os.utime(target)
    return {target.name for target in targets}


def _assert_each_sent_once(harness: Harness, names: set[str]) -> None:
    """Every file in exactly one package, and every package POSTed exactly once."""
    assert harness.endpoint.wait_for(len(names), timeout=DELIVERY_TIMEOUT), (
        f"{len(harness.endpoint.unique)} of {len(names)} delivered\n{harness.output()[-3000:]}"
    )
    found = harvested(harness.packages().values())
    assert set(found) == names
    assert all(len(versions) == 1 for versions in found.values())
    posts = [request.headers["idempotency-key"] for request in harness.endpoint.received]
    assert len(posts) == len(set(posts)) == len(names), "a package was sent twice"


def _assert_alive_and_stops(harness: Harness) -> None:
    assert harness.process is not None
    assert harness.process.poll() is None, harness.output()[-3000:]
    assert harness.count_events("harvest_step_failed") == 0
    assert harness.stop() == 0


def _started_and_scanned(harness: Harness, env: dict[str, str] | None = None) -> None:
    """The daemon running, its observer started and its start-up scan done."""
    harness.write_config(harness.tmp / "token", rescan_seconds=NO_RESCAN)
    harness.start(env)
    assert harness.wait_log("watch_scan_finished", timeout=30), harness.output()


def test_event_storm_beyond_the_event_queue_is_rescanned_and_each_file_sent_once(
    harness: Harness, corpus: Path
) -> None:
    _started_and_scanned(harness, {EVENT_QUEUE_ENV: str(SMALL_QUEUE)})
    names = _storm(harness.watch, (corpus / SMALL_TIFFS[0]).read_bytes(), STORM_FILES, TOUCHES)
    harness.mark()

    _assert_each_sent_once(harness, names)
    # the queue overflowed, so events were dropped: a rescan, not those events, found files
    assert harness.count_events("event_queue_full") >= 1, harness.output()[-3000:]
    assert harness.count_events("watch_scan_finished") >= 2
    full = next(e for e in harness.events() if e.get("event") == "event_queue_full")
    assert full["action"] == "rescan"
    _assert_alive_and_stops(harness)


@contextlib.contextmanager
def _kernel_queue(limit: int) -> Iterator[None]:
    """``fs.inotify.max_queued_events`` set to ``limit``, put back on leaving.

    The kernel copies the limit into an inotify instance when it is created, so it only
    needs to hold until the daemon created its own; keep the block that short, since
    the setting is machine-wide.
    """
    before = MAX_QUEUED_EVENTS.read_text()
    try:
        MAX_QUEUED_EVENTS.write_text(f"{limit}\n")
    except OSError as error:
        pytest.skip(f"cannot lower {MAX_QUEUED_EVENTS} (needs root, writable /proc): {error}")
    try:
        yield
    finally:
        MAX_QUEUED_EVENTS.write_text(before)


@pytest.mark.skipif(not MAX_QUEUED_EVENTS.exists(), reason="inotify is Linux only")
def test_kernel_event_queue_overflow_is_rescanned_and_watching_goes_on(
    harness: Harness, corpus: Path
) -> None:
    data = (corpus / SMALL_TIFFS[0]).read_bytes()
    with _kernel_queue(KERNEL_QUEUE):
        _started_and_scanned(harness)
    names = _storm(harness.watch, data, STORM_FILES, TOUCHES)
    harness.mark()

    _assert_each_sent_once(harness, names)
    lost = [e for e in harness.events() if e.get("event") == "watch_events_lost"]
    assert lost, harness.output()[-3000:]
    assert lost[0]["reason"] == "kernel event queue overflowed"
    # the kernel's queue, not ours, overflowed: ours holds 100,000 events
    assert harness.count_events("event_queue_full") == 0
    assert harness.count_events("watch_scan_finished") >= 2

    # events still flow after the overflow: a new file is found with no rescan
    scans = harness.count_events("watch_scan_finished")
    (harness.watch / "after.tif").write_bytes(data)
    harness.mark()
    _assert_each_sent_once(harness, names | {"after.tif"})
    assert harness.count_events("watch_scan_finished") == scans
    _assert_alive_and_stops(harness)


def test_observer_killed_by_deleting_its_folder_is_restarted_and_files_sent_once(
    harness: Harness, corpus: Path
) -> None:
    data = (corpus / SMALL_TIFFS[1]).read_bytes()
    _started_and_scanned(harness)
    (harness.watch / "before.tif").write_bytes(data)
    harness.mark()
    _assert_each_sent_once(harness, {"before.tif"})

    # a share unmounted, a folder deleted by a cleanup script: the observer's emitter ends
    shutil.rmtree(harness.watch)
    assert harness.wait_log("watch_observer_unhealthy", timeout=30), harness.output()[-3000:]
    assert harness.wait_log("watch_folder_unavailable", timeout=30), harness.output()[-3000:]
    harness.watch.mkdir()
    # written while nothing watches: only the rescan after the restart can find it
    (harness.watch / "during.tif").write_bytes(data)
    harness.mark()
    assert harness.wait_log("watch_folder_restarted", timeout=30), harness.output()[-3000:]
    _assert_each_sent_once(harness, {"before.tif", "during.tif"})

    # the new observer hears of a file by its events alone
    scans = harness.count_events("watch_scan_finished")
    (harness.watch / "after.tif").write_bytes(data)
    harness.mark()
    _assert_each_sent_once(harness, {"before.tif", "during.tif", "after.tif"})
    assert harness.count_events("watch_scan_finished") == scans

    unhealthy = [e for e in harness.events() if e.get("event") == "watch_observer_unhealthy"]
    assert [e["problem"] for e in unhealthy] == ["emitter thread died"]
    assert harness.count_events("watch_folder_restarted") == 1
    _assert_alive_and_stops(harness)


def test_event_queue_size_override_is_read_and_a_bad_one_is_ignored_loudly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(EVENT_QUEUE_ENV, "64")
    assert runtime._event_queue_size() == 64
    for bad in ("0", "-5", "lots"):
        monkeypatch.setenv(EVENT_QUEUE_ENV, bad)
        with capture_logs() as logs:
            assert runtime._event_queue_size() == runtime._EVENT_QUEUE_SIZE
        assert [log["value"] for log in logs] == [bad]
