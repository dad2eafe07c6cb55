"""Small test helpers shared across test modules: polling for real timing, a manual clock,
a daemon driven by hand."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from acqharvest import workers
from acqharvest.config import parse_settings
from acqharvest.model import FileSettled, ProbedFile
from acqharvest.runtime import Daemon
from acqharvest.watch import file_identity


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05
) -> bool:
    """Poll ``predicate`` until it is truthy; False if ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class FakeClock:
    """A clock that moves only when told: pass the instance where a ``clock()`` is expected."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def in_process_daemon(
    tmp_path: Path, watch: Path, *, instrument: str = "", more: str = ""
) -> Daemon:
    """A daemon built but not started, for driving its stages by hand: no workers, a
    directory endpoint and its state under ``tmp_path``. Close ``daemon.state`` after.

    ``instrument`` adds keys to the instrument mapping (``, key: value``), ``more`` lines
    to the config."""
    settings = parse_settings(
        f"instrument: {{id: local-1{instrument}}}\nwatch: [{{path: {watch}}}]\n"
        f"endpoint: {{type: directory, path: {tmp_path / 'out'}}}\n"
        f"state_dir: {tmp_path / 'state'}\nworkers: 0\n{more}",
        source="test.yaml",
        base_dir=tmp_path,
    )
    return Daemon(settings)


def probed(path: Path, root: Path) -> ProbedFile:
    """``path`` as it is now, settled and probed by the real probe stage."""
    st = path.stat()
    result = workers.probe(FileSettled(path, root, st.st_size, st.st_mtime_ns, file_identity(st)))
    assert isinstance(result, ProbedFile), result
    return result
