"""A hung or memory-hungry adapter costs its own file, never the pipeline.

A real daemon process with worker processes, the misbehaving adapter of
``tests/integration/crashy.py`` installed for real, and a loopback endpoint.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.integration.conftest import Harness
from tests.integration.crashy import crashy_on_path  # noqa: F401 - a fixture

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("crashy_on_path")]

TIME_BUDGET = 3
MEMORY_BUDGET_MB = 512


def failures_by_file(harness: Harness) -> dict[str, str]:
    return {
        Path(event["path"]).name: event["reason"]
        for event in harness.events()
        if event.get("event") == "extraction_failed" and "path" in event
    }


def test_a_hung_or_memory_hungry_adapter_fails_its_file_and_the_rest_flows(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRASHY_HOG_BYTES", str(2 * 2**30))
    harness.write_config(harness.tmp / "token", workers=2)
    with harness.config.open("a") as config:
        config.write(
            f"extract_timeout_seconds: {TIME_BUDGET}\nextract_memory_mb: {MEMORY_BUDGET_MB}\n"
        )
    folder = harness.watch / "alice" / "neuro"
    folder.mkdir(parents=True)
    for name, body in [("hung", b"HANG"), ("hog", b"HOG"), ("a", b"fine"), ("b", b"fine")]:
        (folder / f"{name}.crashy").write_bytes(b"CRASHY " + body)
    harness.start()

    assert harness.endpoint.wait_for(2, timeout=60), harness.output()
    assert wait_until(lambda: "hung.crashy" in failures_by_file(harness), timeout=60), (
        harness.output()
    )
    failures = failures_by_file(harness)
    assert f"time budget of {TIME_BUDGET} s" in failures["hung.crashy"]
    assert str(folder / "hung.crashy") in failures["hung.crashy"]
    assert "ran out of memory" in failures["hog.crashy"]
    assert f"memory budget {MEMORY_BUDGET_MB} MiB" in failures["hog.crashy"]

    # the pool was restarted: new files keep flowing
    (folder / "c.crashy").write_bytes(b"CRASHY fine")
    harness.mark()
    assert harness.endpoint.wait_for(3, timeout=60), harness.output()
    delivered = sorted(body["files"][0]["path"] for body in harness.packages().values())
    assert delivered == ["alice/neuro/a.crashy", "alice/neuro/b.crashy", "alice/neuro/c.crashy"]
    assert harness.process is not None
    assert harness.process.poll() is None

    status = harness.status()
    assert "hung.crashy" in status
    assert "time budget" in status
    assert "hog.crashy" in status
    assert harness.stop() == 0
    # one final failure each: a restart does not try the hung file again
    (folder / "d.crashy").write_bytes(b"CRASHY fine")
    harness.start()
    assert harness.wait_log("daemon_started", count=2)
    assert harness.endpoint.wait_for(4, timeout=60), harness.output()
    assert harness.stop() == 0
    hung = [
        event
        for event in harness.events()
        if event.get("event") == "extraction_failed" and "hung.crashy" in str(event.get("path"))
    ]
    assert len(hung) == 1, hung
