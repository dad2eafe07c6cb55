"""A real daemon process, real folders, real timing, and a loopback endpoint."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.endpoint import LoopbackEndpoint

REPO = Path(__file__).resolve().parents[2]
PACKAGE_SCHEMA = json.loads((REPO / "config" / "package.schema.json").read_text())
ACQHARVEST = str(Path(sys.executable).parent / "acqharvest")
TOKEN = "s3cr3t-token-for-tests-only"


def tree_snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Names, sizes, mtimes and content hashes of every file below ``root``."""
    snapshot: dict[str, tuple[int, int, str]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            snapshot[path.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns, digest)
    return snapshot


def write_slowly(source: bytes, target: Path, *, chunks: int = 4, pause: float = 0.3) -> None:
    """Append ``source`` to ``target`` in chunks, pausing less than the settle window."""
    step = max(1, len(source) // chunks)
    with target.open("wb") as handle:
        for offset in range(0, len(source), step):
            handle.write(source[offset : offset + step])
            handle.flush()
            time.sleep(pause)


def validate_package(body: Any) -> None:
    jsonschema.validate(body, PACKAGE_SCHEMA)


class Harness:
    """Config, watch folder, state dir and a daemon subprocess for one test."""

    def __init__(self, tmp: Path, endpoint: LoopbackEndpoint) -> None:
        self.tmp = tmp
        self.endpoint = endpoint
        self.watch = tmp / "instrument"
        self.state = tmp / "state"
        self.watch.mkdir()
        token_file = tmp / "token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        self.config = tmp / "acqharvest.yaml"
        self.settle = 1.0
        self.write_config(token_file)
        self.process: subprocess.Popen[bytes] | None = None

    def write_config(self, token_file: Path, **extra: Any) -> None:
        self.config.write_text(
            f"""
instrument:
  id: "https://hdl.handle.net/21.T11998/test-instrument"
  name: Test confocal
  manufacturer: Example Optics
  type: confocal microscope
watch:
  - path: {self.watch}
    settle_seconds: {self.settle}
    group_quiet_seconds: {extra.get("group_quiet_seconds", 1.5)}
    path_template: "{{operator}}/{{project}}/**"
endpoint:
  type: http
  url: "{self.endpoint.url}"
  token_file: {token_file}
  timeout_seconds: 5
  max_backoff_seconds: 1
state_dir: {self.state}
workers: {extra.get("workers", 0)}
rescan_seconds: {extra.get("rescan_seconds", 2)}
log: {{level: debug, format: json}}
""",
            encoding="utf-8",
        )

    def start(self) -> None:
        assert self.process is None
        with self.console.open("ab") as console:
            self.process = subprocess.Popen(
                [ACQHARVEST, "run", "--config", str(self.config)],
                stdout=console,
                stderr=subprocess.STDOUT,
            )
        started = self.wait_log("daemon_started", timeout=30)
        assert started, f"daemon did not start:\n{self.output()}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self.process = None
        return code

    def run_once(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ACQHARVEST, "run", "--once", "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    @property
    def console(self) -> Path:
        return self.tmp / "console.txt"

    @property
    def log_file(self) -> Path:
        return self.state / "acqharvest.log"

    def events(self) -> list[dict[str, Any]]:
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text().splitlines() if line]

    def wait_log(self, event: str, timeout: float = 10.0, count: int = 1) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(e.get("event") == event for e in self.events()) >= count:
                return True
            if self.process is not None and self.process.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def output(self) -> str:
        """The console and the JSON log, for assertion messages."""
        parts = [p.read_text(errors="replace") for p in (self.console, self.log_file) if p.exists()]
        return "\n".join(parts) or "(no output)"

    def packages(self) -> dict[str, Any]:
        """Package bodies the endpoint received, by Idempotency-Key."""
        return {key: request.json for key, request in self.endpoint.unique.items()}


@pytest.fixture
def harness(tmp_path: Path, endpoint: LoopbackEndpoint) -> Iterator[Harness]:
    """A daemon harness; asserts at the end that the instrument folder was never written."""
    os.environ.pop("ACQHARVEST_CONFIG", None)
    h = Harness(tmp_path, endpoint)
    yield h
    if h.process is not None:
        h.process.kill()
        h.process.wait()
    log_text = h.output()
    assert TOKEN not in log_text, "the bearer token leaked into the log"
