"""Shared fixtures: the real-instrument corpus beside the checkout."""

from __future__ import annotations

import io
import json
import logging
import os
import resource
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.endpoint import LoopbackEndpoint

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"


def _utf8_safe(value: Any) -> Any:
    """``value`` with any lone surrogate in its texts written as ``\\udcXX``."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {key: _utf8_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_utf8_safe(item) for item in value)
    return value


@pytest.hookimpl(wrapper=True)
def pytest_report_to_serializable(report: Any) -> Any:
    """Reports made UTF-8 safe before pytest-xdist sends them between processes.

    Tests harvest file names that are not UTF-8 (surrogate-escaped in Python), and their
    captured log lines carry them; the worker's channel encodes reports as strict UTF-8.
    """
    serialized = yield
    return _utf8_safe(serialized)


def _process_limits() -> dict[str, object]:
    return {
        "RLIMIT_AS": resource.getrlimit(resource.RLIMIT_AS),
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "cwd": os.getcwd(),
    }


@pytest.fixture(autouse=True)
def no_process_limit_outlives_its_test() -> Iterator[None]:
    """A test that changes the worker process's limits must restore them before it ends.

    Whatever a test leaves on an xdist worker is inherited by every later test there and every
    program they start: a leaked RLIMIT_AS made Chromium, which reserves its address space at
    start, die with SIGTRAP in an unrelated test; a daemon started in-process at the default
    ``priority: low`` would leave the worker niced (such tests set ``priority: normal``).
    """
    before = _process_limits()
    yield
    after = _process_limits()
    assert after == before, f"the test left the worker's limits at {after} (were {before})"


@pytest.fixture(scope="session")
def corpus() -> Path:
    """``../shared/corpus``: real files written by third parties. Never copied into the repo."""
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.fail(f"corpus not found at {CORPUS}; it must sit beside the checkout")
    return CORPUS


@pytest.fixture
def endpoint() -> Iterator[LoopbackEndpoint]:
    """A started loopback HTTP endpoint (see tests/endpoint.py), stopped after the test."""
    server = LoopbackEndpoint().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """The process's logging set-up as it was before the test, whatever the test configured."""
    stdlib_root = logging.getLogger()
    handlers, level = list(stdlib_root.handlers), stdlib_root.level
    yield
    stdlib_root.handlers, stdlib_root.level = handlers, level
    root = logging.getLogger("acqharvest")
    for handler in root.handlers:
        handler.close()
    root.handlers = []
    structlog.reset_defaults()


@pytest.fixture
def log_events(restored_logging: None) -> Callable[[], list[dict[str, Any]]]:
    """Logging configured as a service's (JSON lines, debug level) into memory; call the
    fixture's value for the events logged so far."""
    from acqharvest import logs

    console = io.StringIO()
    logs.configure("debug", "json", stream=console)
    return lambda: [json.loads(line) for line in console.getvalue().splitlines()]
