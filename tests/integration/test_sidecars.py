"""Sidecars with a real daemon: a microscopist's acquisition.csv above an acquisition folder
annotates the TIFFs saved below it, is listed in their packages and never packaged itself;
a malformed sidecar shows in ``status`` and the log while its packages still go out."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import SMALL_TIFFS, Harness, validate_package

pytestmark = pytest.mark.integration

BROKEN_YAML = b"study: Brain atlas\nsample: [slice 1, slice 2]\n"
BROKEN_ERROR = "line 2 column 9: the value of 'sample' is a list, not text"


def _by_primary(packages: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {body["files"][0]["path"]: body for body in packages.values()}


def test_a_sidecar_annotates_the_acquisitions_below_it_and_a_broken_one_is_reported(
    harness: Harness, corpus: Path
) -> None:
    watch = harness.watch
    (watch / "alice" / "neuro").mkdir(parents=True)
    (watch / "bob" / "slices").mkdir(parents=True)
    csv = b"key,value\nStudy,Calcium imaging\nOrganism,Mus musculus\nSample ID,mouse-17\n"
    harness.start()
    (watch / "alice" / "acquisition.csv").write_bytes(csv)
    (watch / "bob" / "slices" / "acquisition.yaml").write_bytes(BROKEN_YAML)
    shutil.copyfile(corpus / SMALL_TIFFS[0], watch / "alice" / "neuro" / "cells.tif")
    shutil.copyfile(corpus / SMALL_TIFFS[1], watch / "bob" / "slices" / "a.tif")
    shutil.copyfile(corpus / SMALL_TIFFS[2], watch / "bob" / "slices" / "b.tif")
    harness.mark()
    assert harness.endpoint.wait_for(3, timeout=60), harness.output()

    packages = _by_primary(harness.packages())
    for body in packages.values():
        validate_package(body)
    alice = packages["alice/neuro/cells.tif"]
    assert alice["acquisition"]["operator"] == "alice"  # the folder template still applies
    assert alice["acquisition"]["annotations"] == {
        "study": "Calcium imaging",
        "organism": "Mus musculus",
        "sample_id": "mouse-17",
    }
    sidecar_entry = alice["files"][1]
    assert sidecar_entry["path"] == "alice/acquisition.csv"
    assert sidecar_entry["role"] == "sidecar"
    assert sidecar_entry["sha256"] == hashlib.sha256(csv).hexdigest()
    assert alice["provenance"]["sidecars"] == [{"path": "alice/acquisition.csv", "applied": True}]

    for name in ("a.tif", "b.tif"):
        bob = packages[f"bob/slices/{name}"]
        assert "annotations" not in bob["acquisition"]
        assert [entry["path"] for entry in bob["files"]] == [f"bob/slices/{name}"]
        assert bob["provenance"]["sidecars"] == [
            {"path": "bob/slices/acquisition.yaml", "applied": False, "error": BROKEN_ERROR}
        ]
        warning = f"sidecar bob/slices/acquisition.yaml not applied: {BROKEN_ERROR}"
        assert warning in bob["provenance"]["warnings"]

    status = harness.status()
    assert "bob/slices/acquisition.yaml: sidecar not applied" in status, status
    assert BROKEN_ERROR in status, status
    # two packages met the same broken sidecar: one log line
    assert harness.count_events("sidecar_not_applied") == 1, harness.output()

    # Mended: the edit alone packages nothing; the next acquisition carries its values.
    (watch / "bob" / "slices" / "acquisition.yaml").write_bytes(b"study: Brain atlas\n")
    shutil.copyfile(corpus / SMALL_TIFFS[3], watch / "bob" / "slices" / "c.tif")
    harness.mark()
    assert harness.endpoint.wait_for(4, timeout=60), harness.output()
    scans = harness.count_events("watch_scan_finished")
    assert harness.wait_log("watch_scan_finished", timeout=60, count=scans + 1)
    assert harness.stop() == 0

    packages = _by_primary(harness.packages())
    assert sorted(packages) == [
        "alice/neuro/cells.tif",
        "bob/slices/a.tif",
        "bob/slices/b.tif",
        "bob/slices/c.tif",
    ], "a sidecar was packaged, or an edited sidecar re-sent a package"
    mended = packages["bob/slices/c.tif"]
    validate_package(mended)
    assert mended["acquisition"]["annotations"] == {"study": "Brain atlas"}
    assert mended["provenance"]["sidecars"] == [
        {"path": "bob/slices/acquisition.yaml", "applied": True}
    ]
    assert "bob/slices/acquisition.yaml" not in harness.status()
