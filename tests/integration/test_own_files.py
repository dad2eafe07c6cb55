"""The daemon never harvests its own state dir, log or endpoint folder, whatever path leads
there: a config whose paths lead there through links is refused, and a path the config
cannot see (a bind mount, a link made later) is refused by the watcher.

The bind mount is real: the daemon runs in a private mount namespace (as in
``test_disk_faults.py``), so the mount lives and dies with it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import ACQHARVEST, Harness, drop_files
from tests.integration.test_disk_faults import _require_mount_namespaces, _unshare

pytestmark = pytest.mark.integration

#: mounts "$0" over "$1" in the namespace, then becomes the command after them (same pid)
_BIND_THEN_RUN = 'mount --bind "$0" "$1" && shift && exec "$@"'


def _line_of_state_dir(harness: Harness) -> int:
    return harness.config.read_text().splitlines().index(f"state_dir: {harness.state}") + 1


def test_run_and_check_refuse_a_state_dir_reached_through_a_link_into_the_watch_folder(
    harness: Harness,
) -> None:
    # the endless loop of issue 8: 196 packages in 40 s, secret.key and the registry in them
    (harness.tmp / "elsewhere").symlink_to(harness.watch)
    harness.state = harness.tmp / "elsewhere" / "state"
    harness.write_config(harness.tmp / "token")
    where = f"config error: {harness.config}:{_line_of_state_dir(harness)}"
    expected = (
        f"{where}: state_dir: {harness.state} (really {harness.watch / 'state'}) is inside "
        f"watch[0].path ({harness.watch}); the state folder must be outside every watched folder"
    )

    ran = harness.command("run", "--once")
    checked = harness.command("check")

    assert (ran.returncode, checked.returncode) == (2, 2), ran.stderr + checked.stderr
    assert expected in ran.stderr.splitlines()
    assert expected in checked.stderr.splitlines()
    assert list(harness.watch.iterdir()) == []
    assert harness.endpoint.unique == {}


def test_check_refuses_a_watch_folder_that_is_a_bind_mount_around_the_state_dir(
    harness: Harness,
) -> None:
    _require_mount_namespaces()
    site = harness.tmp / "site"
    harness.state = site / "state"
    harness.state.mkdir(parents=True)
    harness.write_config(harness.tmp / "token")
    identity = site.stat()
    check = [ACQHARVEST, "check", "--config", str(harness.config)]

    checked = subprocess.run(
        [*_unshare(), "sh", "-c", _BIND_THEN_RUN, str(site), str(harness.watch), *check],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert checked.returncode == 2, checked.stdout + checked.stderr
    where = f"config error: {harness.config}:{_line_of_state_dir(harness)}"
    assert (
        f"{where}: state_dir: {harness.state} is inside "
        f"watch[0].path ({harness.watch}): {site} is the same folder as {harness.watch} "
        f"(device {identity.st_dev}, inode {identity.st_ino}); the state folder must be "
        "outside every watched folder"
    ) in checked.stderr.splitlines()


def test_a_state_dir_reached_by_paths_the_config_cannot_see_is_never_packaged(
    harness: Harness, corpus: Path
) -> None:
    _require_mount_namespaces()
    harness.state.mkdir()
    mount = harness.watch / "mnt"
    mount.mkdir()
    # links made by someone else: never followed, whatever they point at
    (harness.watch / "state-link").symlink_to(harness.state)
    (harness.watch / "log-link").symlink_to(harness.log_file)
    # the state dir bind-mounted into the watched folder, where only the daemon sees it
    harness.launcher = [*_unshare(), "sh", "-c", _BIND_THEN_RUN, str(harness.state), str(mount)]
    drop_files(harness, corpus, 1)
    harness.start()
    harness.mark()

    assert harness.endpoint.wait_for(1, timeout=60), harness.output()
    scans = harness.count_events("watch_scan_finished")
    # rescan_seconds is 2: several scans, each passing the registry, log and outbox again
    assert harness.wait_log("watch_scan_finished", timeout=30, count=scans + 3)
    time.sleep(1)
    assert harness.stop() == 0

    packaged = [f["path"] for body in harness.packages().values() for f in body["files"]]
    assert packaged == ["xem_y32.tif"]
    refused = {e["path"]: e["reason"] for e in harness.events() if e["event"] == "watch_refused"}
    assert refused[str(mount)] == (f"acqharvest's own state_dir ({harness.state}): never harvested")
    assert "never followed" in refused[str(harness.watch / "state-link")]
    assert "never followed" in refused[str(harness.watch / "log-link")]
