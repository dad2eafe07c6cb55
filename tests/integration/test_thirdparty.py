"""A vendor's adapter distribution, pip-installed into a fresh venv, is found and used.

``tests/thirdparty/`` is a separate distribution (its own ``pyproject.toml`` and an
``acqharvest.adapters`` entry point) that acqharvest knows nothing about. The test builds
and installs it into a new venv layered over this one (so acqharvest and its
dependencies are the ones under test), then shows that in that venv ``acqharvest
adapters`` lists it, a real daemon packages its file with it, and the vendor's own
conformance test passes through the ``acqharvest.testing`` pytest plugin.

``tests/thirdparty_broken/`` is a second vendor distribution, installed into the same venv,
whose five entry points fail to load: one module calls ``sys.exit()`` at import, one raises
a BaseException subclass, one never finishes importing, and two adapter classes lack
``info`` or ``extract``. Every test here runs with it installed: each broken entry point is
a "load error" row and an ``adapter_load_failed`` log line, and the good adapter and the
built-ins work as before (the hung import costs each process ``LOAD_SECONDS``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import CORPUS, REPO
from tests.integration.conftest import tree_snapshot, validate_package

pytestmark = pytest.mark.integration

DISTRIBUTION = REPO / "tests" / "thirdparty"
BROKEN = REPO / "tests" / "thirdparty_broken"
BROKEN_DISTRIBUTION = "acqharvest-broken-adapters"
#: how long each process waits for the entry point whose import never returns
LOAD_SECONDS = 5  # a loaded machine takes over 2 s to import pydicom
#: entry point -> the start of the error it must be reported with.
BROKEN_ERRORS = {
    "broken_abort": "SdkAbort: licence server unreachable",
    "broken_exit": "SystemExit: acqharvest_broken: the vendor SDK is not installed",
    "broken_hang": f"TimeoutError: import or construction still running after {LOAD_SECONDS} s "
    "(ACQHARVEST_ADAPTER_LOAD_SECONDS); left behind",
    "broken_no_extract": "TypeError: adapter lacks callable claim/extract methods",
    "broken_no_info": "TypeError: info is NoneType, not AdapterInfo",
}


def _run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACQHARVEST_")}
    env["ACQHARVEST_CORPUS"] = str(CORPUS)  # where the built-ins' samples resolve
    env["ACQHARVEST_ADAPTER_LOAD_SECONDS"] = str(LOAD_SECONDS)
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )


@pytest.fixture(scope="module")
def vendor_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(python of a venv with the example and broken adapters installed, example's source)."""
    root = tmp_path_factory.mktemp("thirdparty")
    source, broken = root / "src", root / "broken"
    # built from copies: a build writes build/ and *.egg-info next to the sources
    shutil.copytree(DISTRIBUTION, source)
    shutil.copytree(BROKEN, broken)
    venv = root / "venv"
    created = _run(sys.executable, "-m", "venv", "--without-pip", venv)
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    # layer the venv over this one: acqharvest, pytest and pip come from here
    host = sysconfig.get_paths()["purelib"]
    Path(purelib.stdout.strip(), "acqharvest-host.pth").write_text(
        f"import site; site.addsitedir({host!r})\n"
    )
    installed = _run(
        python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
        source, broken,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return python, source


def test_acqharvest_adapters_lists_the_vendor_adapter(vendor_venv: tuple[Path, Path]) -> None:
    python, _ = vendor_venv
    listed = _run(python, "-m", "acqharvest", "adapters")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows["example_log"][1:4] == ["0.1.0", "experimental", "acqharvest-example-adapter"]
    assert rows["example_log"][-1] == "loaded"
    assert {"dicom", "tiff"} <= rows.keys()
    for name in ("example_log", "dicom", "tiff"):
        assert f"load error: {name} " not in listed.stderr


def _table(stdout: str) -> dict[str, dict[str, str]]:
    """Rows of the ``acqharvest adapters`` table by name, cut at the header's columns."""
    header, *lines = stdout.splitlines()
    names = header.split()
    starts = [header.index(name) for name in names]
    columns = list(zip(names, starts, [*starts[1:], None], strict=True))
    rows = [
        {name.lower(): line[start:end].strip() for name, start, end in columns} for line in lines
    ]
    return {row["name"]: row for row in rows}


def test_broken_vendor_adapters_are_reported_and_logged(vendor_venv: tuple[Path, Path]) -> None:
    python, _ = vendor_venv
    listed = _run(python, "-m", "acqharvest", "adapters")
    assert listed.returncode == 0, listed.stderr
    rows = _table(listed.stdout)
    for name, error in BROKEN_ERRORS.items():
        assert rows[name]["distribution"] == BROKEN_DISTRIBUTION
        assert rows[name]["status"] == f"error: {error}", rows[name]
        assert f"load error: {name} ({BROKEN_DISTRIBUTION}): {error}" in listed.stderr
    assert {name: rows[name]["status"] for name in ("example_log", "dicom", "tiff")} == {
        "example_log": "loaded",
        "dicom": "loaded",
        "tiff": "loaded",
    }
    logged = {
        event["adapter"]: event
        for event in (json.loads(line) for line in listed.stderr.splitlines() if line[:1] == "{")
        if event["event"] == "adapter_load_failed"
    }
    assert set(logged) == set(BROKEN_ERRORS)
    for name, error in BROKEN_ERRORS.items():
        assert logged[name]["level"] == "error"
        assert logged[name]["distribution"] == BROKEN_DISTRIBUTION
        assert logged[name]["error"] == error


def test_the_daemon_packages_a_file_with_the_vendor_adapter(
    vendor_venv: tuple[Path, Path], tmp_path: Path
) -> None:
    python, source = vendor_venv
    watch, out, state = tmp_path / "instrument", tmp_path / "out", tmp_path / "state"
    watch.mkdir()
    shutil.copy(source / "src" / "acqharvest_example" / "samples" / "run-001.acqlog", watch)
    shutil.copy(CORPUS / "dicom" / "dx" / "dx_image.dcm", watch)  # the built-ins still work
    config = tmp_path / "acqharvest.yaml"
    config.write_text(
        f"instrument: {{id: local-1}}\n"
        f"watch: [{{path: {watch}, settle_seconds: 0}}]\n"
        f"endpoint: {{type: directory, path: {out}}}\n"
        f"state_dir: {state}\n"
        "workers: 1\n"
    )
    before = tree_snapshot(watch)
    ran = _run(python, "-m", "acqharvest", "run", "--once", "--config", config)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert '"event": "adapter_load_failed"' in ran.stderr  # reported, and the run went on
    assert "broken_hang" in ran.stderr  # its worker waited LOAD_SECONDS for it, no longer
    assert '"event": "worker_terminated"' not in ran.stderr  # the thread left behind is no hang
    packages = {
        body["harvester"]["adapter"]: body
        for body in (json.loads(p.read_text()) for p in out.glob("*.json"))
    }
    assert set(packages) == {"example_log", "dicom"}
    package = packages["example_log"]
    validate_package(package)
    assert package["acquisition"]["format"] == "ACQLOG"
    assert package["metadata"]["instrument_reported"]["serial_number"] == "ES3-0042"
    assert [c["name"] for c in package["metadata"]["channels"]] == ["DAPI", "GFP", "mCherry"]
    assert package["files"][0]["path"] == "run-001.acqlog"
    assert tree_snapshot(watch) == before, "the daemon wrote into the instrument folder"


def test_the_vendor_conformance_test_passes_through_the_plugin(
    vendor_venv: tuple[Path, Path],
) -> None:
    python, source = vendor_venv
    ran = _run(python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "tests", cwd=source)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    summary = ran.stdout.strip().splitlines()[-1]
    # nothing skipped: the cross-claim checks found the built-ins' corpus samples too
    assert " passed" in summary, ran.stdout
    assert "skipped" not in summary, ran.stdout
