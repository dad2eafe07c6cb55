"""Watching that does not silently stop, and file identity that is not fooled, for real."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.integration.conftest import Harness, harvested

pytestmark = pytest.mark.integration

OME = "ome-tiff/single-file/multi-channel.ome.tif"


def _flip(data: bytes, back: int) -> bytes:
    """Same size, same header, different content (a byte of the pixel data at the end)."""
    return data[:-back] + bytes([data[-back] ^ 0xFF]) + data[len(data) - back + 1 :]


def test_same_size_same_mtime_rewrites_are_packaged_again_and_touches_are_not(
    harness: Harness, corpus: Path
) -> None:
    data = (corpus / OME).read_bytes()
    target = harness.watch / "cells.ome.tif"
    target.write_bytes(data)
    st = target.stat()
    harness.start()
    assert harness.endpoint.wait_for(1, timeout=30), harness.output()

    # 1. rewritten in place (same inode), size and mtime put back: only the ctime tells
    with target.open("r+b") as handle:
        handle.write(_flip(data, 1))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert harness.endpoint.wait_for(2, timeout=30), harness.output()

    # 2. replaced by another file (new inode) with the same header, size and mtime
    swap = harness.tmp / "swap.ome.tif"
    swap.write_bytes(_flip(data, 2))
    os.utime(swap, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(swap, target)
    assert harness.endpoint.wait_for(3, timeout=30), harness.output()

    # 3. touched only: looks changed, is read again and found the same, is not sent again
    logged, unchanged = len(harness.events()), harness.count_events("file_unchanged")
    os.utime(target)
    harness.mark()
    assert harness.wait_log("file_unchanged", count=unchanged + 1, timeout=30), harness.output()
    assert harness.stop() == 0
    assert len(harness.endpoint.received) == 3
    since_touch = harness.events()[logged:]
    assert [e["path"] for e in since_touch if e.get("event") == "file_unchanged"] == [str(target)]

    first, second, third = (request.json for request in harness.endpoint.received)
    assert [first["replaces"], second["replaces"], third["replaces"]] == [
        None,
        first["package_id"],
        second["package_id"],
    ]
    versions = harvested([first, second, third])["cells.ome.tif"]
    assert len({sha for _, sha, _ in versions}) == 3
    assert {size for size, _, _ in versions} == {len(data)}

    # 4. a restart over the unchanged folder sends nothing new: two scans looked at the
    # file (the first would have fed it to the settle stage, due before the second) and
    # none took it for new
    logged = len(harness.events())
    scans = harness.count_events("watch_scan_finished")
    harness.start()
    assert harness.wait_log("watch_scan_finished", count=scans + 2, timeout=30), harness.output()
    assert harness.stop() == 0
    assert len(harness.endpoint.received) == 3
    since_restart = harness.events()[logged:]
    assert not [e for e in since_restart if e.get("event") == "file_settled"]


def test_watch_folder_replaced_under_the_daemon_is_watched_again(
    harness: Harness, corpus: Path
) -> None:
    shutil.copyfile(corpus / OME, harness.watch / "before.ome.tif")
    harness.write_config(harness.tmp / "token", rescan_seconds=3600)
    harness.start()
    assert harness.endpoint.wait_for(1, timeout=30), harness.output()

    # the folder is moved away and a new one takes its name (a remount looks the same):
    # the observer still watches the old inode and would never hear of new files
    os.rename(harness.watch, harness.tmp / "old-instrument")
    harness.watch.mkdir()
    shutil.copyfile(corpus / OME, harness.watch / "after.ome.tif")
    harness.mark()
    assert harness.wait_log("watch_observer_unhealthy", timeout=30), harness.output()
    assert harness.endpoint.wait_for(2, timeout=30), harness.output()
    # the rescan after the restart has looked at every file too
    assert harness.wait_log("watch_scan_finished", count=2, timeout=30), harness.output()
    assert harness.stop() == 0

    unhealthy = [e for e in harness.events() if e.get("event") == "watch_observer_unhealthy"]
    assert unhealthy[0]["problem"] == "the folder was replaced or remounted"
    assert sorted(harvested(harness.packages().values())) == ["after.ome.tif", "before.ome.tif"]
    assert len(harness.endpoint.received) == 2
