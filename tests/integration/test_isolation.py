"""A worker process that dies on one file costs that file only, never its neighbours.

The crashing adapter is a real entry point (``tests/integration/crashy.py``), found by the
registry in each worker process.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from acqharvest.config import parse_settings
from acqharvest.runtime import Daemon
from acqharvest.state import State
from tests.helpers import wait_until
from tests.integration.conftest import FolderGuard
from tests.integration.crashy import crashy_on_path  # noqa: F401 - a fixture

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("crashy_on_path")]


def test_a_file_that_kills_its_worker_fails_alone(tmp_path: Path) -> None:
    watch, out, state = tmp_path / "watch", tmp_path / "out", tmp_path / "state"
    watch.mkdir()
    for name, body in [("a", b"fine"), ("b", b"BOOM"), ("c", b"fine"), ("d", b"fine")]:
        (watch / f"{name}.crashy").write_bytes(b"CRASHY " + body)
    settings = parse_settings(
        f"instrument: {{id: local-1}}\nwatch: [{{path: {watch}, settle_seconds: 0}}]\n"
        f"endpoint: {{type: directory, path: {out}}}\nstate_dir: {state}\nworkers: 2\n"
        "priority: normal\n",  # run in the test process: leave its priority alone
        source="test.yaml",
        base_dir=tmp_path,
    )
    guard = FolderGuard(watch)
    guard.mark()
    report = Daemon(settings, once=True).run(threading.Event())
    guard.check()

    delivered = sorted(json.loads(p.read_text())["files"][0]["path"] for p in out.glob("*.json"))
    assert delivered == ["a.crashy", "c.crashy", "d.crashy"]
    (reason,) = report.failures
    assert "b.crashy" in reason
    assert "worker process died" in reason
    registry = State.open(state / "state.sqlite3", readonly=True)
    try:
        (failure,) = registry.failures()
        assert failure.path == watch / "b.crashy"
    finally:
        registry.close()


def test_stop_does_not_wait_for_a_hung_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch, out, hanging = tmp_path / "watch", tmp_path / "out", tmp_path / "hanging"
    watch.mkdir()
    (watch / "stuck.crashy").write_bytes(b"CRASHY HANG")
    monkeypatch.setenv("CRASHY_HANGING", str(hanging))
    settings = parse_settings(
        f"instrument: {{id: local-1}}\nwatch: [{{path: {watch}, settle_seconds: 0}}]\n"
        f"endpoint: {{type: directory, path: {out}}}\nstate_dir: {tmp_path / 'state'}\n"
        "workers: 2\npriority: normal\n",  # in the test process: leave its priority alone
        source="test.yaml",
        base_dir=tmp_path,
    )
    guard = FolderGuard(watch)
    guard.mark()
    stop = threading.Event()
    # built on its own thread: the registry's SQLite connection belongs to the harvest thread
    daemon = threading.Thread(target=lambda: Daemon(settings).run(stop))
    daemon.start()
    assert wait_until(hanging.exists, timeout=30), "the adapter never started"
    started = time.monotonic()
    stop.set()
    daemon.join(timeout=30)
    assert not daemon.is_alive(), "the daemon waited for a hung adapter"
    assert time.monotonic() - started < 20
    guard.check()
