"""Files of any size are harvested: hashing is bounded by progress, not by total time.

A real daemon process with worker processes, sparse files (no disk space, read at the
speed of sha256) and a loopback endpoint. A worker is stopped with SIGSTOP mid-checksum
to stand for a share that stops answering: from the daemon's side it is a read that
never returns, as on a hung NFS or SMB mount.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.endpoint import LoopbackEndpoint
from tests.helpers import wait_until
from tests.integration.conftest import Harness, _process_tree

pytestmark = pytest.mark.integration

HEAD = b"BIGFILE acquisition written by a slide scanner\n"


def sparse_file(path: Path, size: int) -> Path:
    """``path`` with a non-blank head (not taken for reserved space), then a hole to ``size``."""
    with path.open("wb") as handle:
        handle.write(HEAD)
        handle.truncate(size)
    allocated = path.stat().st_blocks * 512
    assert allocated < 2**20, (
        f"{path.parent} does not support sparse files ({allocated} bytes allocated for a hole "
        f"of {size}); run these tests with a temporary folder on ext4, xfs, btrfs or tmpfs"
    )
    return path


def sha256_timed(path: Path) -> tuple[str, float]:
    """The sha256 of ``path`` as a test computes it, and the seconds it took."""
    started = time.monotonic()
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return digest, time.monotonic() - started


def configure(harness: Harness, budget: float, rescan: float = 2) -> None:
    harness.write_config(harness.tmp / "token", workers=2, rescan_seconds=rescan)
    with harness.config.open("a") as config:
        config.write(f"extract_timeout_seconds: {budget}\n")


def terminations(harness: Harness) -> list[dict[str, object]]:
    return [e for e in harness.events() if e.get("event") == "worker_terminated"]


def unreadable(harness: Harness, path: Path) -> list[dict[str, object]]:
    return [
        e
        for e in harness.events()
        if e.get("event") == "file_unreadable" and e.get("path") == str(path)
    ]


def stop_reader(harness: Harness, path: Path, stopped: set[int]) -> bool:
    """SIGSTOP a worker process that has ``path`` open now, if any (never the daemon,
    which only glances at a file's head), and add it to ``stopped``.

    A worker stopped before is skipped: once the daemon has killed it, it may still hold
    the file open for a moment while it exits, and stopping it again proves nothing.
    """
    assert harness.process is not None
    for pid in _process_tree(harness.process.pid)[1:]:
        if pid in stopped:
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                        os.kill(pid, signal.SIGSTOP)
                        stopped.add(pid)
                        return True
    return False


def assert_harvested_once(harness: Harness, path: Path, size: int, digest: str) -> None:
    bodies = list(harness.packages().values())
    assert [entry for body in bodies for entry in body["files"]] == [
        {
            "path": path.relative_to(harness.watch).as_posix(),
            "size": size,
            "sha256": digest,
            "modified": bodies[0]["files"][0]["modified"],
            "media_type": "application/octet-stream",  # no adapter claims these files
        }
    ], bodies


@pytest.mark.long  # 4 GiB hashed, and the long tier's 100 GiB file proves it at scale
def test_a_file_hashed_for_longer_than_the_budget_is_harvested(harness: Harness) -> None:
    budget = 1.0
    path = sparse_file(harness.watch / "slide.bin", 4 * 2**30)
    digest, seconds = sha256_timed(path)
    assert seconds > 2 * budget, (
        f"hashing {path.stat().st_size} bytes took {seconds:.2f} s here: too fast to prove "
        f"anything against a budget of {budget} s; use a bigger file"
    )
    configure(harness, budget)
    harness.start()

    assert harness.endpoint.wait_for(1, timeout=120), harness.output()
    assert_harvested_once(harness, path, path.stat().st_size, digest)
    assert terminations(harness) == [], "a worker hashing at full speed was terminated"
    assert harness.stop() == 0


@pytest.mark.long  # two stalls of a 2 GiB checksum and a restart: about 45 s
def test_a_checksum_that_stalls_is_read_again_later_and_after_a_restart(
    harness: Harness,
) -> None:
    budget = 2.0  # a loaded CI machine must not stall a worker that long by itself
    path = sparse_file(harness.watch / "stack.bin", 2 * 2**30)
    configure(harness, budget)
    harness.start()
    stopped: set[int] = set()
    for stalls in (1, 2):
        # caught mid-checksum (about 2 s at 1 GB/s): a read that never returns from now on
        assert wait_until(
            lambda: stop_reader(harness, path, stopped), timeout=120, interval=0.01
        ), f"{path} was not read (again)"
        assert harness.wait_log("file_unreadable", timeout=60, count=stalls), harness.output()
    assert harness.stop() == 0
    assert harness.packages() == {}, "harvested despite the stalls"
    first, second = unreadable(harness, path)[:2]
    for failure, wait in ((first, budget), (second, 2 * budget)):
        assert failure["retried"] is True, failure
        assert f"no byte of it could be read for {budget:g} s" in str(failure["reason"])
        assert f"read again in {wait:g} s at the earliest" in str(failure["reason"])
    assert any("reading no byte" in str(e["reason"]) for e in terminations(harness))
    assert "stack.bin" in harness.status()  # not final, yet listed for the admin

    # the failure is not final in the registry either: the next start reads the file
    harness.start()
    assert harness.endpoint.wait_for(1, timeout=120), harness.output()
    digest, _ = sha256_timed(path)
    assert_harvested_once(harness, path, path.stat().st_size, digest)
    assert harness.stop() == 0


def stat_of(path: Path) -> tuple[int, int, int, int, int]:
    st = path.lstat()
    return st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


@pytest.mark.long
@pytest.mark.timeout(3600)
def test_a_100_gib_file_is_harvested_with_the_default_budget(
    tmp_path: Path, endpoint: LoopbackEndpoint
) -> None:
    """Minutes of hashing (about 110 s at 1 GB/s), far beyond the default 60 s budget.

    The folder guard of the ``harness`` fixture would hash the file twice more, once as
    the daemon starts and once after it stops: here the folder and the file are compared
    by stat instead (mode, size, mtime, ctime, inode), which any write, rename, chmod or
    lock-taking open for writing would move; the open handles are surveyed as everywhere.
    """
    harness = Harness(tmp_path, endpoint, workers=2)  # extract_timeout_seconds: 60
    path = sparse_file(harness.watch / "lightsheet.bin", 100 * 2**30)
    before = [stat_of(harness.watch), stat_of(path)]
    expected: list[str] = []
    # the test's own checksum, beside the daemon's: the machine has two cores
    computing = threading.Thread(target=lambda: expected.append(sha256_timed(path)[0]))
    harness.start()
    try:
        computing.start()
        with harness.handles_surveyed(interval=1.0) as survey:
            assert harness.endpoint.wait_for(1, timeout=3000), harness.output()
        assert survey.read_handles > 0, "the survey never saw the file being read"
        computing.join()
        assert_harvested_once(harness, path, 100 * 2**30, expected[0])
        assert terminations(harness) == []
        assert harness.stop() == 0
    finally:
        if harness.process is not None:
            harness.kill()
    assert [stat_of(harness.watch), stat_of(path)] == before
    assert sorted(os.listdir(harness.watch)) == [path.name]
