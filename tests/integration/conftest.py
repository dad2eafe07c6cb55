"""A real daemon process, real folders, real timing, and a loopback endpoint."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.endpoint import LoopbackEndpoint

REPO = Path(__file__).resolve().parents[2]
PACKAGE_SCHEMA = json.loads((REPO / "config" / "package.schema.json").read_text())
ACQHARVEST = str(Path(sys.executable).parent / "acqharvest")
TOKEN = "s3cr3t-token-for-tests-only"
#: small single-file corpus acquisitions (TIFF from several vendors): one package each
SMALL_TIFFS = (
    "tiff-vendor/imagej/xem_y32.tif",
    "tiff-vendor/zeiss-axiovision/optical_Zeiss_AxioVision_BW.tif",
    "tiff-vendor/gatan-dm-tiff/test_loading_image_saved_with_DM.tif",
    "tiff-vendor/olympus-sis/olympus_SIS.tif",
    "tiff-vendor/imagej/P1_T0.tif",
    "tiff-vendor/zeiss-sem/test_tiff_Zeiss_SEM_512pix.tif",
)


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


def drop_files(harness: Harness, corpus: Path, count: int) -> None:
    """Copy the first ``count`` of ``SMALL_TIFFS`` into the watched folder."""
    for source in SMALL_TIFFS[:count]:
        shutil.copyfile(corpus / source, harness.watch / Path(source).name)


def _yaml_options(options: dict[str, Any]) -> str:
    """More keys for the watch entry (JSON values are YAML), indented to fit."""
    return "".join(f"    {key}: {json.dumps(value)}\n" for key, value in options.items())


def harvested(packages: Iterable[Any]) -> dict[str, list[tuple[int, str, str]]]:
    """(size, sha256, package_id) of every ``files`` entry of these packages, by path."""
    found: dict[str, list[tuple[int, str, str]]] = {}
    for body in packages:
        for entry in body["files"]:
            found.setdefault(entry["path"], []).append(
                (entry["size"], entry["sha256"], body["package_id"])
            )
    return found


def _endpoint_yaml(url: str, token_file: Path, options: dict[str, Any]) -> str:
    """The endpoint section: the test defaults, updated by ``options`` (None drops a key)."""
    settings: dict[str, Any] = {
        "type": "http",
        "url": url,
        "token_file": str(token_file),
        "timeout_seconds": 5,
        "max_backoff_seconds": 1,
    }
    settings.update(options)
    return "".join(
        f"  {key}: {json.dumps(value)}\n" for key, value in settings.items() if value is not None
    )


#: built once: ``jsonschema.validate`` checks the schema itself on every call.
_PACKAGE_VALIDATOR = jsonschema.validators.validator_for(PACKAGE_SCHEMA)(PACKAGE_SCHEMA)


def validate_package(body: Any) -> None:
    _PACKAGE_VALIDATOR.validate(body)


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
{_yaml_options(extra.get("watch_options", {}))}endpoint:
{_endpoint_yaml(self.endpoint.url, token_file, extra.get("endpoint", {}))}state_dir: {self.state}
workers: {extra.get("workers", 0)}
rescan_seconds: {extra.get("rescan_seconds", 2)}
log: {{level: debug, format: json}}
""",
            encoding="utf-8",
        )

    def start(self, env: dict[str, str] | None = None) -> None:
        """Start the daemon (with ``env`` added to the environment); wait until it runs."""
        assert self.process is None
        earlier = self.count_events("daemon_started")
        with self.console.open("ab") as console:
            self.process = subprocess.Popen(
                [ACQHARVEST, "run", "--config", str(self.config)],
                stdout=console,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        started = self.wait_log("daemon_started", timeout=30, count=earlier + 1)
        assert started, f"daemon did not start:\n{self.output()}"

    def kill(self) -> None:
        """SIGKILL the daemon (if still running) and reap it."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait(timeout=30)
        self.process = None

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``acqharvest <args> --config <this config>``, output captured."""
        return subprocess.run(
            [ACQHARVEST, *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    @property
    def pending_dir(self) -> Path:
        return self.state / "outbox" / "pending"

    def pending(self) -> list[Path]:
        return sorted(self.pending_dir.glob("*.json")) if self.pending_dir.is_dir() else []

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
        parsed = []
        for line in self.log_file.read_text().splitlines():
            # a daemon killed with SIGKILL may leave its last line torn
            with contextlib.suppress(ValueError):
                parsed.append(json.loads(line))
        return parsed

    def count_events(self, event: str) -> int:
        """How often ``event`` was logged (a text count: cheap on a long log)."""
        if not self.log_file.exists():
            return 0
        return self.log_file.read_text(errors="replace").count(f'"event": "{event}"')

    def wait_log(self, event: str, timeout: float = 10.0, count: int = 1) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count_events(event) >= count:
                return True
            if self.process is not None and self.process.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def status(self) -> str:
        """What ``acqharvest status`` prints for this config (stdout and stderr)."""
        result = subprocess.run(
            [ACQHARVEST, "status", "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return result.stdout + result.stderr

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
