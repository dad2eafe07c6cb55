"""A site without an adapter's optional reader: files claimed, packaged with checksums only,
the extra named in each package, once by ``status`` and in ``adapters``.

The readers are installed in the test environment (the test extra pulls ``[all]``), so the
site without them is made for real: a ``sitecustomize`` on ``PYTHONPATH`` makes the named
modules unimportable in the daemon and in every worker process it spawns, exactly as a
missing package is (``ModuleNotFoundError``, ``find_spec`` finding nothing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import ACQHARVEST, Harness

pytestmark = pytest.mark.integration

HIDER = '''"""Test helper: the modules named in ACQHARVEST_TEST_HIDE are not installed."""
import os
import sys

_HIDDEN = {name for name in os.environ.get("ACQHARVEST_TEST_HIDE", "").split(",") if name}


class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
'''


def _without(tmp_path: Path, *modules: str) -> dict[str, str]:
    folder = tmp_path / "site-without-readers"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(HIDER, encoding="utf-8")
    return {"PYTHONPATH": str(folder), "ACQHARVEST_TEST_HIDE": ",".join(modules)}


def test_files_of_an_unavailable_adapter_are_packaged_with_checksums_and_the_extra(
    harness: Harness, corpus: Path, tmp_path: Path
) -> None:
    env = _without(tmp_path, "czifile", "nd2")
    for rel in ("czi/testCziZStack4.czi", "czi/testTinyCzi.czi", "nd2/cluster.nd2"):
        shutil.copyfile(corpus / rel, harness.watch / Path(rel).name)
    harness.mark()

    listing = subprocess.run(
        [ACQHARVEST, "adapters"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=True,
    )
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}
    assert rows["czi"].endswith("unavailable: pip install 'acqharvest[czi]'"), listing.stdout
    assert rows["nd2"].endswith("unavailable: pip install 'acqharvest[nd2]'")
    assert rows["lif"].endswith("loaded")  # it needs no reader

    check = harness.command("check", env=env)
    assert check.returncode == 0, check.stdout + check.stderr  # not a failure: nothing is lost
    # a warning: the files are packaged, with checksums only
    assert "WARN  adapter nd2 is unavailable: its reader (nd2) is not installed" in check.stdout
    preview = subprocess.run(
        [ACQHARVEST, "extract", str(harness.watch / "testTinyCzi.czi")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert preview.returncode == 0, preview.stderr
    assert "  adapter: czi  format: Zeiss CZI" in preview.stdout
    assert "  warning: adapter czi is unavailable" in preview.stdout

    result = harness.command("run", "--once", env=env)
    assert result.returncode == 0, result.stderr + harness.output()
    packages = {body["files"][0]["path"]: body for body in harness.packages().values()}
    assert set(packages) == {"testCziZStack4.czi", "testTinyCzi.czi", "cluster.nd2"}
    for name, body in packages.items():
        extra = "nd2" if name.endswith(".nd2") else "czi"
        assert body["harvester"]["adapter"] == extra
        assert body["metadata"] == {}
        assert len(body["files"][0]["sha256"]) == 64
        (warning,) = body["provenance"]["warnings"]
        assert warning.endswith(f"install it with: pip install 'acqharvest[{extra}]'"), warning
    # one of the two workers says it, once per adapter, not once per file
    unavailable = [
        json.loads(line) for line in result.stderr.splitlines() if '"adapter_unavailable"' in line
    ]
    assert sorted(event["adapter"] for event in unavailable) == ["czi", "nd2"]
    # and in the log file, which only the daemon writes: it logs the workers' lines again
    logged = [e for e in harness.events() if e["event"] == "adapter_unavailable"]
    assert sorted((e["adapter"], e["source"]) for e in logged) == [
        ("czi", "worker"),
        ("nd2", "worker"),
    ]

    status = harness.command("status", env=env)
    assert status.returncode == 0, status.stderr
    missing = status.stdout.split("readers missing:\n", 1)[1].splitlines()
    assert missing[:2] == [
        "  czi: 2 acquisition(s) packaged with checksums only, its reader (czifile) is not "
        "installed: pip install 'acqharvest[czi]'",
        "  nd2: 1 acquisition(s) packaged with checksums only, its reader (nd2) is not "
        "installed: pip install 'acqharvest[nd2]'",
    ]
    # once the extra is installed, status has nothing more to say about it
    assert "readers missing" not in harness.command("status").stdout


def test_with_the_readers_the_same_files_are_read(harness: Harness, corpus: Path) -> None:
    shutil.copyfile(corpus / "czi/testTinyCzi.czi", harness.watch / "tiny.czi")
    harness.mark()
    assert harness.run_once().returncode == 0, harness.output()
    (body,) = harness.packages().values()
    assert body["harvester"]["adapter"] == "czi"
    assert body["metadata"]["image"]["size_c"] == 2
    assert body["provenance"]["warnings"] == []
