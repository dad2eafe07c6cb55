"""Worker log lines over loopback datagrams into the daemon's own log file: real sockets."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from acqharvest import logs
from acqharvest.worker_logs import DATAGRAM_BYTES, DatagramLines, WorkerLogs

pytestmark = pytest.mark.usefixtures("restored_logging")


def _logged(log_file: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log_file.read_text().splitlines()]


def test_a_workers_lines_reach_the_daemons_log_file_at_their_level(tmp_path: Path) -> None:
    log_file = tmp_path / "acqharvest.log"
    logs.configure("info", "json", log_file, stream=io.StringIO())
    receiver = WorkerLogs()
    worker = DatagramLines(receiver.port)
    claim_failed = {
        "adapter": "vendorx",
        "path": "alice/a.tif",
        "event": "adapter_claim_failed",
        "level": "warning",
        "timestamp": "2026-12-06T09:00:00Z",
    }
    # written as logging writes: a line may come in pieces, several lines at once
    text = json.dumps(claim_failed) + "\n" + json.dumps({"event": "boom", "level": "error"})
    worker.write(text[:25])
    worker.write(text[25:] + "\nnot json, a library printing\n")
    worker.close()
    receiver.close()  # logs what arrived before it closes

    first, second, third = _logged(log_file)
    assert {k: first[k] for k in ("event", "level", "adapter", "path", "source")} == {
        "event": "adapter_claim_failed",
        "level": "warning",
        "adapter": "vendorx",
        "path": "alice/a.tif",
        "source": "worker",
    }
    assert first["timestamp"] != claim_failed["timestamp"]  # stamped on arrival
    assert (second["event"], second["level"]) == ("boom", "error")
    assert (third["event"], third["text"]) == ("worker_output", "not json, a library printing")


def test_a_line_longer_than_a_datagram_is_cut_and_kept_as_text(tmp_path: Path) -> None:
    log_file = tmp_path / "acqharvest.log"
    logs.configure("info", "json", log_file, stream=io.StringIO())
    receiver = WorkerLogs()
    long_line = json.dumps({"event": "huge", "level": "warning", "blob": "x" * 100_000})
    with DatagramLines(receiver.port) as worker:
        worker.write(long_line + "\n")
    receiver.close()
    (logged,) = _logged(log_file)
    assert logged["event"] == "worker_output"
    assert logged["text"] == long_line[:DATAGRAM_BYTES]


def test_a_worker_whose_daemon_is_gone_writes_on_without_an_error() -> None:
    receiver = WorkerLogs()
    worker = DatagramLines(receiver.port)
    receiver.close()
    line = '{"event": "late", "level": "warning"}\n'
    with worker:
        assert worker.write(line) == len(line)
