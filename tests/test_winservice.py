"""The Windows service host driving the real daemon; only pywin32 itself is stood in for.

pywin32 exists on Windows only, so its three modules are replaced by recorders here: the
event log messages, the service status reports. Everything behind them is real: the
config, the daemon, its folders and its stop.
"""

from __future__ import annotations

import importlib
import json
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_until

STOP_PENDING = 3


class _Pywin32:
    """What the service host told the service manager and wrote to the event log."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.statuses: list[int] = []


@pytest.fixture
def pywin32(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_Pywin32, Any]]:
    record = _Pywin32()
    servicemanager = types.ModuleType("servicemanager")
    for name, kind in (
        ("LogInfoMsg", "info"),
        ("LogWarningMsg", "warning"),
        ("LogErrorMsg", "error"),
    ):
        setattr(servicemanager, name, lambda text, kind=kind: record.events.append((kind, text)))
    win32service = types.ModuleType("win32service")
    win32service.SERVICE_STOP_PENDING = STOP_PENDING  # type: ignore[attr-defined]
    win32serviceutil = types.ModuleType("win32serviceutil")

    class ServiceFramework:
        def __init__(self, args: list[str]) -> None:
            self.args = args

        def ReportServiceStatus(self, status: int, waitHint: int = 5000) -> None:
            record.statuses.append(status)

    win32serviceutil.ServiceFramework = ServiceFramework  # type: ignore[attr-defined]
    for module in (servicemanager, win32service, win32serviceutil):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.delitem(sys.modules, "acqharvest.winservice", raising=False)
    host = importlib.import_module("acqharvest.winservice")
    yield record, host
    sys.modules.pop("acqharvest.winservice", None)


def _config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "acqharvest.yaml"
    (tmp_path / "watch").mkdir()
    config.write_text(
        'instrument: {id: "urn:test:winservice"}\nwatch: [{path: watch}]\n'
        "endpoint: {type: directory, path: out}\nstate_dir: state\nworkers: 0\n"
        # the daemon runs in the test process: leave its priority alone
        "priority: normal\n" + extra
    )
    return config


def test_the_service_runs_the_daemon_and_stops_it_cleanly(
    tmp_path: Path, pywin32: tuple[_Pywin32, Any]
) -> None:
    record, host = pywin32
    host.AcqharvestService.config = _config(tmp_path)
    service = host.AcqharvestService(["acqharvest"])
    runner = threading.Thread(target=service.SvcDoRun)
    runner.start()
    log_file = tmp_path / "state" / "acqharvest.log"
    assert wait_until(lambda: log_file.is_file() and "daemon_started" in log_file.read_text(), 120)

    service.SvcShutdown()
    runner.join(120)

    assert not runner.is_alive()
    assert record.statuses == [STOP_PENDING]
    assert record.events[0] == ("info", f"acqharvest: starting with {tmp_path / 'acqharvest.yaml'}")
    assert record.events[-1] == ("info", "acqharvest: stopped")
    # info lines stay in the log file; the event log has only what needs a look
    assert all(kind != "info" or "acqharvest:" in text for kind, text in record.events)
    events = [json.loads(line)["event"] for line in log_file.read_text().splitlines()]
    assert "daemon_stopped" in events


def test_a_config_error_reaches_the_event_log_and_ends_the_process(
    tmp_path: Path, pywin32: tuple[_Pywin32, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    record, host = pywin32
    host.AcqharvestService.config = _config(tmp_path, "workers: many\n")
    exits: list[int] = []
    monkeypatch.setattr(host.os, "_exit", exits.append)

    host.AcqharvestService(["acqharvest"]).SvcDoRun()

    errors = [text for kind, text in record.events if kind == "error"]
    assert any(text.startswith("config error:") and "workers" in text for text in errors)
    assert errors[-1] == "acqharvest: stopped with exit status 2"
    # no stop was reported: the service manager sees a failure and applies its recovery
    assert exits == [2]
    assert record.statuses == []
