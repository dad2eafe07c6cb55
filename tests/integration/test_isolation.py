"""A worker process that dies on one file costs that file only, never its neighbours.

The crashing adapter is a real entry point: a tiny distribution (a module and its
``.dist-info``) on ``sys.path``, found by the registry in each worker process.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from acqharvest.config import parse_settings
from acqharvest.runtime import Daemon
from acqharvest.state import State
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

ADAPTER = """
import os
import time
from acqharvest.adapter_api import AdapterInfo, AdapterOutput, Claim, FieldSpec, FormatSpec


class CrashyAdapter:
    info = AdapterInfo(
        name="crashy",
        title="Crashes on BOOM",
        version="0.1",
        stability="experimental",
        formats=(FormatSpec(name="CRASHY"),),
        fields=(FieldSpec("note", "string"),),
    )

    def claim(self, probe, reader):
        if probe.head.startswith(b"CRASHY"):
            return Claim(group_key=f"crashy:{probe.path}", confidence=1.0)
        return None

    def extract(self, draft, reader):
        with reader.open(draft.primary) as handle:
            data = handle.read()
        if b"BOOM" in data:
            os._exit(3)  # what a segfaulting native reader looks like from outside
        if b"HANG" in data:
            with open(os.environ["CRASHY_HANGING"], "w"):
                pass  # tells the test the worker is stuck now
            time.sleep(600)  # a reader stuck on a dead network share
        return AdapterOutput(format="CRASHY", metadata={"note": "fine"})
"""


@pytest.fixture
def crashy_on_path(tmp_path: Path) -> Iterator[Path]:
    site = tmp_path / "site"
    info = site / "crashy_adapter-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "crashy_adapter.py").write_text(ADAPTER)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: crashy-adapter\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[acqharvest.adapters]\ncrashy = crashy_adapter:CrashyAdapter\n"
    )
    sys.path.insert(0, str(site))
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("crashy_adapter", None)


def test_a_file_that_kills_its_worker_fails_alone(tmp_path: Path, crashy_on_path: Path) -> None:
    watch, out, state = tmp_path / "watch", tmp_path / "out", tmp_path / "state"
    watch.mkdir()
    for name, body in [("a", b"fine"), ("b", b"BOOM"), ("c", b"fine"), ("d", b"fine")]:
        (watch / f"{name}.crashy").write_bytes(b"CRASHY " + body)
    settings = parse_settings(
        f"instrument: {{id: local-1}}\nwatch: [{{path: {watch}, settle_seconds: 0}}]\n"
        f"endpoint: {{type: directory, path: {out}}}\nstate_dir: {state}\nworkers: 2\n",
        source="test.yaml",
        base_dir=tmp_path,
    )
    report = Daemon(settings, once=True).run(threading.Event())

    delivered = sorted(json.loads(p.read_text())["files"][0]["path"] for p in out.glob("*.json"))
    assert delivered == ["a.crashy", "c.crashy", "d.crashy"]
    assert len(report.failures) == 1
    assert "b.crashy" in report.failures[0]
    assert "worker process died" in report.failures[0]
    registry = State.open(state / "state.sqlite3", readonly=True)
    try:
        (failure,) = registry.failures()
        assert failure.path == watch / "b.crashy"
    finally:
        registry.close()


def test_stop_does_not_wait_for_a_hung_adapter(
    tmp_path: Path, crashy_on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch, out, hanging = tmp_path / "watch", tmp_path / "out", tmp_path / "hanging"
    watch.mkdir()
    (watch / "stuck.crashy").write_bytes(b"CRASHY HANG")
    monkeypatch.setenv("CRASHY_HANGING", str(hanging))
    settings = parse_settings(
        f"instrument: {{id: local-1}}\nwatch: [{{path: {watch}, settle_seconds: 0}}]\n"
        f"endpoint: {{type: directory, path: {out}}}\nstate_dir: {tmp_path / 'state'}\n"
        "workers: 2\n",
        source="test.yaml",
        base_dir=tmp_path,
    )
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
