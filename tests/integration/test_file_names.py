"""File names as instrument PCs write them: bytes that are not UTF-8, paths past PATH_MAX.

A real daemon, real folders named in Latin-1 and CP1252 on Linux, a loopback endpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from acqharvest.pathtext import unescape
from tests.integration.conftest import SMALL_TIFFS, Harness, validate_package
from tests.integration.crashy import crashy_on_path  # noqa: F401 - a fixture
from tests.simulator import dicom_series, write_past_path_max

pytestmark = pytest.mark.integration

MR = "dicom/mr-siemens/MR-SIEMENS-DICOM-WithOverlays.dcm"


def at(root: Path, raw: bytes) -> Path:
    """``root`` / the name with these bytes (as the file system gives it to Python)."""
    return root / os.fsdecode(raw)


def name_bytes(entry: dict[str, Any]) -> bytes:
    """The exact bytes of a package's ``files`` entry path, per its ``path_encoding``."""
    if entry.get("path_encoding") == "percent":
        return os.fsencode(unescape(entry["path"]))
    assert "%" not in entry["path"] or "path_encoding" not in entry
    return str(entry["path"]).encode("utf-8")


def test_names_that_are_not_utf8_are_harvested_delivered_and_status_stays_clean(
    harness: Harness, corpus: Path
) -> None:
    written: dict[bytes, bytes] = {}

    def write(raw: bytes, data: bytes) -> None:
        target = at(harness.watch, raw)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written[raw] = data

    tiffs = [(corpus / source).read_bytes() for source in SMALL_TIFFS[:4]]
    write(b"caf\xe9.tif", tiffs[0])  # Latin-1 e-acute, there at start
    write(b"Jos\xe9/5\xb5m/scan 100%.tif", tiffs[1])  # operator and project folders too
    write(b"caf%E9.tif", tiffs[2])  # valid UTF-8 that looks like the other one escaped
    harness.start()
    write(b"b\x9fcher.tif", tiffs[3])  # CP1252 Y-diaeresis, found by its event
    for number, data in enumerate(dicom_series(corpus / MR, 3), start=1):
        write(b"bob/S\xe9rie/IM%d" % number, data)  # a series: its group key holds the name
    harness.mark()
    assert harness.endpoint.wait_for(5, timeout=60), harness.output()
    assert not harness.endpoint.wait_for(6, timeout=3), "an acquisition was sent twice"
    assert harness.stop() == 0

    delivered: dict[bytes, tuple[int, str]] = {}
    for body in harness.packages().values():
        validate_package(body)
        for entry in body["files"]:
            delivered[name_bytes(entry)] = (entry["size"], entry["sha256"])
    assert delivered == {
        raw: (len(data), hashlib.sha256(data).hexdigest()) for raw, data in written.items()
    }
    by_first = {body["files"][0]["path"]: body for body in harness.packages().values()}
    assert by_first["Jos%E9/5%B5m/scan 100%25.tif"]["acquisition"]["operator"] == "Jos%E9"
    assert by_first["Jos%E9/5%B5m/scan 100%25.tif"]["acquisition"]["project"] == "5%B5m"
    assert [f["path"] for f in by_first["bob/S%E9rie/IM1"]["files"]] == [
        "bob/S%E9rie/IM1",
        "bob/S%E9rie/IM2",
        "bob/S%E9rie/IM3",
    ]
    assert by_first["bob/S%E9rie/IM1"]["metadata"]["instances"] == 3

    status = harness.status()
    assert "harvested: files 7, acquisitions 5, failures 0" in status, status
    assert "last problems" not in status, status
    log = harness.log_file.read_bytes().decode("utf-8")  # strict: the log is UTF-8
    assert "\\udc" not in log, "a lone surrogate reached the log"
    packaged = [e for e in harness.events() if e["event"] == "acquisition_packaged"]
    assert {e["path"] for e in packaged if e.get("escaped") == ["path"]} == {
        "caf%E9.tif",
        "Jos%E9/5%B5m/scan 100%25.tif",
        "b%9Fcher.tif",
        "bob/S%E9rie/IM1",
    }
    assert {e["path"] for e in packaged if "escaped" not in e} == {"caf%E9.tif"}

    # the registry recognises every one of them: a second run sends nothing again
    sent = len(harness.endpoint.received)
    again = harness.run_once()
    assert again.returncode == 0, again.stderr
    assert len(harness.endpoint.received) == sent, "a registered name was harvested again"


@pytest.mark.usefixtures("crashy_on_path")
def test_a_name_its_adapter_cannot_take_fails_alone_with_a_message(harness: Harness) -> None:
    at(harness.watch, b"caf\xe9.crashy").write_bytes(b"CRASHY UTF8ONLY")
    at(harness.watch, b"cafe.crashy").write_bytes(b"CRASHY UTF8ONLY")
    at(harness.watch, b"fin\xe9.crashy").write_bytes(b"CRASHY fine")

    result = harness.run_once()
    assert result.returncode == 1, result.stderr
    assert "2 packaged, 1 failed" in result.stderr
    delivered = {
        name_bytes(entry) for body in harness.packages().values() for entry in body["files"]
    }
    assert delivered == {b"cafe.crashy", b"fin\xe9.crashy"}
    status = harness.status()
    assert "failures 1" in status, status
    (line,) = [line for line in status.splitlines() if " failed " in line]
    assert f"{harness.watch}/caf%E9.crashy: adapter crashy crashed: UnicodeEncodeError" in line
    (crash,) = [e for e in harness.events() if e["event"] == "extraction_failed"]
    assert crash["path"] == f"{harness.watch}/caf%E9.crashy"
    assert "path" in crash["escaped"]


def test_a_path_longer_than_path_max_is_listed_in_status_and_run_once_says_so(
    harness: Harness, corpus: Path
) -> None:
    data = (corpus / SMALL_TIFFS[0]).read_bytes()
    shutil.copyfile(corpus / SMALL_TIFFS[1], harness.watch / "short.tif")
    long_file, long_folder = write_past_path_max(harness.watch, data, ".tif")

    result = harness.run_once()
    assert result.returncode == 1, result.stderr
    assert "1 packaged, 2 failed" in result.stderr
    refused = [json.loads(line) for line in result.stderr.splitlines() if "watch_refused" in line]
    assert {event["path"] for event in refused} == {str(long_file), str(long_folder)}
    assert all("longer than the system allows (PATH_MAX" in e["reason"] for e in refused)
    ((body),) = harness.packages().values()
    assert [entry["path"] for entry in body["files"]] == ["short.tif"]

    status = harness.status()
    assert "failures 2" in status, status
    failed = [line for line in status.splitlines() if " failed " in line]
    assert len(failed) == 2, status
    for path in (long_file, long_folder):
        assert any(f"{path}: its path is {len(os.fsencode(path))} bytes" in f for f in failed)
