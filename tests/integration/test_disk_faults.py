"""A state dir full, read-only, deleted or holding corrupt files: reported, then recovered.

Faults are real: the daemon runs in its own mount namespace (``unshare -m``, or
``unshare -Urm`` for a non-root developer) with a 2 MiB tmpfs as its state dir, so a full
disk is a real ENOSPC and a read-only remount a real EROFS. The mount lives and dies with
the daemon process: nothing leaks if a test dies. The test sees the daemon's state dir
through ``/proc/<pid>/root`` and acts inside the namespace with ``nsenter``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.endpoint import LoopbackEndpoint
from tests.helpers import wait_until
from tests.integration.conftest import ACQHARVEST, Harness, drop_files, tree_snapshot

pytestmark = pytest.mark.integration

ROOT = os.geteuid() == 0


def _unshare() -> list[str]:
    return ["unshare", "-m", "--propagation", "private"] if ROOT else ["unshare", "-Urm"]


def _require_mount_namespaces() -> None:
    probe = subprocess.run(
        [*_unshare(), "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.fail(
            "these tests mount a tmpfs in a private mount namespace and cannot here: "
            f"{probe.stderr.strip() or probe.returncode}. Run them as root (CI does) or "
            "enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)."
        )


class FaultHarness(Harness):
    """The daemon in its own mount namespace, its state dir a size-limited tmpfs."""

    def __init__(self, tmp: Path, endpoint: LoopbackEndpoint) -> None:
        super().__init__(tmp, endpoint, guard_watch=True, workers=2)
        self.state.mkdir()
        # mounts the tmpfs over the state dir, then becomes the daemon (same pid)
        script = 'mount -t tmpfs -o size=2m tmpfs "$0" && exec "$@"'
        self.launcher = [*_unshare(), "sh", "-c", script, str(self.state)]
        # The log must stay writable while the state dir is not.
        self.config.write_text(
            self.config.read_text().replace(
                "log: {level: debug, format: json}",
                f"log: {{level: debug, format: json, file: {self.log_file}}}",
            )
        )

    @property
    def log_file(self) -> Path:
        return self.tmp / "daemon.log"

    @property
    def inside(self) -> Path:
        """The daemon's state dir, as the daemon sees it."""
        assert self.process is not None
        return Path(f"/proc/{self.process.pid}/root{self.state}")

    def nsenter(self, *command: str) -> subprocess.CompletedProcess[str]:
        assert self.process is not None
        enter = ["nsenter", "-t", str(self.process.pid), "-m"]
        if not ROOT:
            enter[3:3] = ["-U", "--preserve-credentials"]
        return subprocess.run(
            [*enter, "--", *command], capture_output=True, text=True, timeout=60, check=False
        )

    def status(self) -> str:
        result = self.nsenter(ACQHARVEST, "status", "--config", str(self.config))
        return result.stdout + result.stderr

    def fill(self) -> Path:
        """Fill the tmpfs to the last byte; returns the filler to delete."""
        filler = self.inside / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        failures: list[int | None] = []
        try:
            for chunk in (65536, 4096, 512, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError as error:
                    failures.append(error.errno)
        finally:
            os.close(fd)
        assert failures == [errno.ENOSPC] * 4
        return filler

    def read_only(self) -> None:
        """Put a read-only view of the tmpfs over the state dir: new writes get EROFS.

        A remount of the tmpfs itself is refused while the daemon holds files open for
        writing (the registry); the kernel's own errors=remount-ro is not reachable here.
        """
        keep = self.tmp / "rw-view"
        keep.mkdir(exist_ok=True)
        script = 'mount --bind "$0" "$1" && mount -o bind,ro "$1" "$0"'
        done = self.nsenter("sh", "-c", script, str(self.state), str(keep))
        assert done.returncode == 0, done.stderr

    def writable_again(self) -> None:
        done = self.nsenter("umount", "-l", str(self.state))
        assert done.returncode == 0, done.stderr

    def unwritable_events(self, code: str) -> list[dict[str, object]]:
        return [
            e
            for e in self.events()
            if e.get("event") == "state_dir_unwritable" and e.get("errno") == code
        ]


@pytest.fixture
def faults(tmp_path: Path, endpoint: LoopbackEndpoint) -> Iterator[FaultHarness]:
    _require_mount_namespaces()
    os.environ.pop("ACQHARVEST_CONFIG", None)
    harness = FaultHarness(tmp_path, endpoint)
    yield harness
    if harness.process is not None:
        harness.kill()  # the namespace, and its mount, go with it


def drop(harness: Harness, name: str) -> None:
    """Write a measurement file, declared to the harness's watched-folder guard."""
    folder = harness.watch / "alice" / "neuro"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(f"measurement {name}\n".encode() * 50)
    harness.mark()


def delivered_paths(harness: Harness) -> list[str]:
    return sorted(body["files"][0]["path"] for body in harness.packages().values())


def outbox_drained(state: Path) -> bool:
    """Nothing pending: the last receipt, and its temp file, are written."""
    return not any((state / "outbox" / "pending").iterdir())


def assert_outbox_whole(state: Path) -> None:
    """No temp file left behind, and every pending package is a complete document."""
    assert list((state / "outbox" / "tmp").iterdir()) == []
    for pending in (state / "outbox" / "pending").iterdir():
        body = json.loads(pending.read_bytes())
        assert body["package_id"] == pending.stem


def test_disk_full_is_reported_and_harvest_resumes_when_space_returns(
    faults: FaultHarness,
) -> None:
    faults.start()
    drop(faults, "before.dat")
    assert faults.endpoint.wait_for(1, timeout=30), faults.output()

    filler = faults.fill()
    drop(faults, "during.dat")
    assert wait_until(lambda: faults.unwritable_events("ENOSPC"), timeout=30), faults.output()
    (event,) = faults.unwritable_events("ENOSPC")[:1]
    assert str(faults.state / "outbox") in str(event["path"])
    assert "No space left on device" in str(event["error"])
    assert "bytes free" in faults.status()
    assert_outbox_whole(faults.inside)
    assert faults.process is not None
    assert faults.process.poll() is None

    filler.unlink()
    assert faults.endpoint.wait_for(2, timeout=60), faults.output()
    assert delivered_paths(faults) == ["alice/neuro/before.dat", "alice/neuro/during.dat"]
    assert faults.wait_log("state_dir_writable_again", timeout=30)
    assert wait_until(lambda: outbox_drained(faults.inside), timeout=30), faults.output()
    assert_outbox_whole(faults.inside)
    assert faults.stop() == 0


def test_read_only_state_dir_is_reported_and_harvest_resumes_when_writable(
    faults: FaultHarness,
) -> None:
    faults.start()
    drop(faults, "before.dat")
    assert faults.endpoint.wait_for(1, timeout=30), faults.output()

    faults.read_only()
    drop(faults, "during.dat")
    assert wait_until(lambda: faults.unwritable_events("EROFS"), timeout=30), faults.output()
    assert "not writable" in faults.status()
    assert faults.process is not None
    assert faults.process.poll() is None

    faults.writable_again()
    assert faults.endpoint.wait_for(2, timeout=60), faults.output()
    assert delivered_paths(faults) == ["alice/neuro/before.dat", "alice/neuro/during.dat"]
    assert wait_until(lambda: outbox_drained(faults.inside), timeout=30), faults.output()
    assert_outbox_whole(faults.inside)
    assert faults.stop() == 0


def test_a_deleted_state_dir_is_recreated_and_nothing_is_lost(harness: Harness) -> None:
    harness.start()
    drop(harness, "before.dat")
    assert harness.endpoint.wait_for(1, timeout=30), harness.output()
    secret = (harness.state / "secret.key").read_bytes()

    # at once, as the daemon sees it (it logs there all the time: rmtree would race it)
    gone = harness.tmp / "deleted-state"
    harness.state.rename(gone)
    shutil.rmtree(gone)
    drop(harness, "after.dat")
    assert harness.endpoint.wait_for(2, timeout=60), harness.output()
    assert delivered_paths(harness) == ["alice/neuro/after.dat", "alice/neuro/before.dat"]
    assert (harness.state / "secret.key").read_bytes() == secret
    assert (harness.state / "outbox" / "pending").is_dir()
    # the log file in the state dir came back with it, from the first line on
    assert harness.wait_log("state_dir_lost"), harness.output()
    assert harness.wait_log("package_delivered")
    # and so did the instance lock: a second daemon is still refused
    second = harness.run_once()
    assert second.returncode == 1
    assert "another acqharvest process" in second.stderr
    assert harness.stop() == 0
    # the re-harvest re-sent before.dat under the same key: still exactly once
    assert len(harness.endpoint.unique) == 2


def test_packages_rebuilt_after_the_state_was_lost_carry_the_same_bytes(
    harness: Harness, corpus: Path
) -> None:
    """An endpoint that answers a repeated Idempotency-Key with its stored receipt (or 422
    for other bytes, as the IETF draft says) needs one body per key, whenever it is built."""
    drop_files(harness, corpus, 3)
    # a DICOM file: its UIDs are replaced with the installation's key
    shutil.copyfile(
        corpus / "dicom/mr-siemens/MR-SIEMENS-DICOM-WithOverlays.dcm", harness.watch / "IM1"
    )
    assert harness.run_once().returncode == 0, harness.output()
    keys = set(harness.endpoint.unique)
    assert len(keys) == 4, harness.output()

    # the state dir lost, the de-identification key kept (restored from a backup, say)
    secret = (harness.state / "secret.key").read_bytes()
    shutil.rmtree(harness.state)
    harness.state.mkdir()
    (harness.state / "secret.key").write_bytes(secret)
    assert harness.run_once().returncode == 0, harness.output()

    assert set(harness.endpoint.unique) == keys
    for key in keys:
        sent = harness.endpoint.requests_for(key)
        assert len(sent) == 2, f"{key} was not built and sent again"
        first, again = sent
        assert again.body == first.body, (first.json, again.json)


def test_one_daemon_per_state_dir_and_status_beside_it_writes_nothing(
    harness: Harness,
) -> None:
    harness.start()
    assert harness.process is not None
    pid = harness.process.pid
    drop(harness, "first.dat")
    assert harness.endpoint.wait_for(1, timeout=30), harness.output()
    for second in (harness.run_once(), harness.command("run")):
        assert second.returncode == 1, second.stderr
        assert f"another acqharvest process (pid {pid})" in second.stderr
        assert str(harness.state / "daemon.lock") in second.stderr
    status = harness.command("status")
    assert status.returncode == 0, status.stderr
    assert "delivered 1" in status.stdout
    assert harness.stop() == 0
    assert len(harness.endpoint.received) == 1, "the refused runs sent nothing"

    # status reads without writing: folders the outbox lacks stay missing
    shutil.rmtree(harness.state / "outbox" / "corrupt")
    shutil.rmtree(harness.state / "outbox" / "tmp")
    before = tree_snapshot(harness.state / "outbox")
    assert harness.command("status").returncode == 0
    assert tree_snapshot(harness.state / "outbox") == before
    assert not (harness.state / "outbox" / "corrupt").exists()
    assert not (harness.state / "outbox" / "tmp").exists()

    # the lock went with the daemon: the next one starts
    drop(harness, "second.dat")
    result = harness.run_once()
    assert result.returncode == 0, result.stderr
    assert delivered_paths(harness) == ["alice/neuro/first.dat", "alice/neuro/second.dat"]


def test_corrupt_state_and_outbox_files_are_moved_aside_at_start(harness: Harness) -> None:
    pending = harness.state / "outbox" / "pending"
    pending.mkdir(parents=True)
    (harness.state / "state.sqlite3").write_bytes(b"\x00garbage, not SQLite" * 500)
    (pending / "abc123.json").write_bytes(b'{"package_id": "abc1')  # cut off mid-write

    harness.start()
    drop(harness, "new.dat")
    assert harness.endpoint.wait_for(1, timeout=30), harness.output()
    assert delivered_paths(harness) == ["alice/neuro/new.dat"]
    assert harness.wait_log("state_database_corrupt")
    assert harness.wait_log("outbox_corrupt_file")
    (aside,) = harness.state.glob("state.sqlite3.corrupt-*")
    assert aside.read_bytes().startswith(b"\x00garbage")
    assert (harness.state / "outbox" / "corrupt" / "abc123.json").exists()
    assert "corrupt 1" in harness.status()
    assert harness.stop() == 0
