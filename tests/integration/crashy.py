"""A misbehaving adapter, installed for real: a module and its ``.dist-info`` on ``sys.path``.

The registry finds it through its entry point, in the test process, in worker processes
and in a daemon subprocess (through ``PYTHONPATH``). It claims files starting with
``CRASHY`` and, by what follows: ``BOOM`` kills its process, ``HANG`` sleeps ten minutes
(touching ``$CRASHY_HANGING`` first, when set), ``HOG`` reserves ``$CRASHY_HOG_BYTES``
of memory, ``UTF8ONLY`` fails on a file name that is not valid UTF-8 (an SDK taking
UTF-8 names only); anything else extracts fine.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ADAPTER = """
import os
import time
from acqharvest.adapter_api import AdapterInfo, AdapterOutput, Claim, FieldSpec, FormatSpec


class CrashyAdapter:
    info = AdapterInfo(
        name="crashy",
        title="Misbehaves on request",
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
            if os.environ.get("CRASHY_HANGING"):
                with open(os.environ["CRASHY_HANGING"], "w"):
                    pass  # tells the test the worker is stuck now
            time.sleep(600)  # a reader stuck on a dead network share
        if b"HOG" in data:
            import numpy

            # reserved, not touched: only an address-space limit stops it
            numpy.empty(int(os.environ["CRASHY_HOG_BYTES"]), dtype=numpy.uint8)
        if b"UTF8ONLY" in data:
            draft.primary.name.encode("utf-8")  # a vendor SDK taking UTF-8 names only
        return AdapterOutput(format="CRASHY", metadata={"note": "fine"})
"""


def install(site: Path) -> Path:
    """Write the adapter distribution into ``site`` (a folder for ``sys.path``)."""
    info = site / "crashy_adapter-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "crashy_adapter.py").write_text(ADAPTER)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: crashy-adapter\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[acqharvest.adapters]\ncrashy = crashy_adapter:CrashyAdapter\n"
    )
    return site


@pytest.fixture
def crashy_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The adapter importable here and in every child process (spawned workers, daemons)."""
    site = install(tmp_path / "site")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    sys.path.insert(0, str(site))
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("crashy_adapter", None)
