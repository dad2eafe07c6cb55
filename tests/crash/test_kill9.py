"""At-least-once and exactly-once-by-key delivery survive SIGKILL at any point.

Acquisitions, some written under a temporary name then renamed, are harvested and delivered
by a real daemon, in one process or with worker processes, that is killed with SIGKILL over
and over: right after it spooled a package (nothing sent yet), in the middle of a POST, and
after the endpoint stored a package but before the daemon heard so; now and then also while
it records a package the endpoint refused (then queued again with ``acqharvest retry``) and
at random moments. Each kill counts only when the state it left shows it hit its point.
Once the last daemon has stopped, the watched folder must be exactly as the test's own
writes left it (``CrashRun.finish``), whatever the killed daemons were doing.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.crash.conftest import EXTRA_POINTS, NAMED_POINTS, CrashRun
from tests.endpoint import LoopbackEndpoint
from tests.helpers import wait_until
from tests.integration.conftest import Harness, validate_package

pytestmark = pytest.mark.integration


def assert_delivered_exactly_once_by_key(run: CrashRun) -> None:
    received = list(run.endpoint.received)
    bodies: dict[str, set[bytes]] = {}
    named: set[str] = set()
    for request in received:
        # never an outbox temp file or a torn write: every body is a whole, valid package
        assert request.json is not None, f"not JSON: {request.body[:200]!r}"
        validate_package(request.json)
        key = request.headers["idempotency-key"]
        assert request.json["package_id"] == key
        bodies.setdefault(key, set()).add(request.body)
        named.update(entry["path"] for entry in request.json["files"])
    # nor an instrument's temp file: every body ever sent names final names only
    assert named <= run.expected, f"not acquisitions: {sorted(named - run.expected)}"
    unequal = {key: len(variants) for key, variants in bodies.items() if len(variants) > 1}
    assert not unequal, f"one key, different bodies: {unequal}"
    # every key ever sent was eventually stored, and one key stands for one acquisition
    assert set(run.endpoint.unique) == set(bodies)
    paths = [
        entry["path"] for request in run.endpoint.unique.values() for entry in request.json["files"]
    ]
    assert sorted(paths) == sorted(run.expected), "each acquisition once, none missing"
    # a package stored while its daemon died unknowing was sent again, and stored once
    for key in run.accepted_unheard:
        assert len(run.endpoint.requests_for(key)) >= 2, key


def assert_nothing_stuck(run: CrashRun) -> None:
    assert run.harness.pending() == []
    outbox = run.harness.state / "outbox"
    assert list((outbox / "tmp").iterdir()) == [], "a write in progress was left behind"
    status = run.harness.command("status")
    assert status.returncode == 0, status.stderr
    outbox_line = next(line for line in status.stdout.splitlines() if line.startswith("outbox:"))
    assert "pending 0" in outbox_line, status.stdout
    assert "rejected 0" in outbox_line, status.stdout
    assert "corrupt 0" in outbox_line, status.stdout
    # the outbox holds exactly one receipt per acquisition
    receipts = list((outbox / "delivered").glob("*.json"))
    assert {path.stem for path in receipts} == set(run.endpoint.unique)
    for receipt in receipts:
        assert json.loads(receipt.read_text())["package_id"] == receipt.stem


def run_kill_campaign(run: CrashRun, kills_per_point: int, files_per_wave: int) -> None:
    started = time.monotonic()
    run.kill_repeatedly(kills_per_point, files_per_wave)
    assert all(run.kills[point] >= kills_per_point for point in NAMED_POINTS), run.kills
    assert all(run.kills[point] >= 1 for point in EXTRA_POINTS), run.kills
    # the campaign did make the endpoint see duplicates to de-duplicate
    assert run.accepted_unheard
    run.finish(timeout=120)
    assert_delivered_exactly_once_by_key(run)
    assert_nothing_stuck(run)
    print(
        f"kills {dict(run.kills)}, missed {dict(run.misses)}, {len(run.expected)} acquisitions,"
        f" {len(run.endpoint.received)} POSTs, {time.monotonic() - started:.0f} s"
    )


@pytest.mark.parametrize(
    "crash_run",
    # a minute or more each: the long tier (the fast tier keeps kill -9 without a worker left)
    [pytest.param(0, marks=pytest.mark.long), pytest.param(2, marks=pytest.mark.long)],
    ids=["in_process", "workers2"],
    indirect=True,
)
def test_kill9_at_chosen_points_loses_and_duplicates_nothing(crash_run: CrashRun) -> None:
    # 7 kills at each named point: 21, plus an extra point after every third round
    run_kill_campaign(crash_run, kills_per_point=7, files_per_wave=2)


@pytest.mark.long
@pytest.mark.timeout(1500)
def test_kill9_long_campaign(crash_run: CrashRun) -> None:
    run_kill_campaign(crash_run, kills_per_point=30, files_per_wave=4)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


def _more_than(endpoint: LoopbackEndpoint, count: int) -> Callable[[], bool]:
    return lambda: len(endpoint.unique) > count


def _all_gone(pids: list[str]) -> Callable[[], bool]:
    return lambda: not any(_alive(int(pid)) for pid in pids)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
def test_kill9_leaves_no_worker_process_behind(
    tmp_path: Path, endpoint: LoopbackEndpoint, corpus: Path
) -> None:
    harness = Harness(tmp_path, endpoint, guard_watch=True)
    harness.write_config(tmp_path / "token", workers=2)
    for kill in range(3):
        harness.start()
        shutil.copyfile(corpus / "dicom/ct/CT_JPEG70.dcm", harness.watch / f"ct{kill}.dcm")
        harness.mark()
        assert wait_until(_more_than(endpoint, kill), timeout=60)
        assert harness.process is not None
        daemon = harness.process.pid
        children = Path(f"/proc/{daemon}/task/{daemon}/children").read_text().split()
        assert len(children) >= 2, "the daemon should run its worker processes"
        harness.kill()
        assert wait_until(_all_gone(children), timeout=30)
