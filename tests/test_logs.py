"""Log set-up: JSON lines in the file, and secrets never reach it."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
import structlog

from acqharvest import logs


@pytest.fixture(autouse=True)
def _restore_logging():
    yield
    root = logging.getLogger("acqharvest")
    for handler in root.handlers:
        handler.close()
    root.handlers = []
    structlog.reset_defaults()


def test_registered_secrets_and_secret_keys_are_masked_in_the_file(tmp_path: Path) -> None:
    log_file = tmp_path / "acqharvest.log"
    console = io.StringIO()
    logs.configure("info", "json", log_file, stream=console)
    logs.register_secret("hunter2-token")
    log = logs.get_logger("acqharvest.test")
    log.info("delivery_failed", detail="server echoed Bearer hunter2-token", token="hunter2-token")
    log.debug("below_the_level", path="/x")

    (line,) = log_file.read_text().splitlines()
    event = json.loads(line)
    assert event["event"] == "delivery_failed"
    assert event["detail"] == f"server echoed Bearer {logs.MASK}"
    assert event["token"] == logs.MASK
    assert "hunter2" not in console.getvalue()
    assert "timestamp" in event
    assert event["level"] == "info"
