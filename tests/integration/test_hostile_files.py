"""Things in a watched folder that must never be read, beside files that must keep flowing.

The daemon runs as root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (setpriv), so
permission bits bind it as they would bind the service account on an instrument PC.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from acqharvest import workers
from acqharvest.config import parse_settings
from acqharvest.model import Acquisition, Extraction, FileSettled, ProbedFile
from acqharvest.runtime import Daemon
from acqharvest.watch import file_identity
from tests.integration.conftest import ACQHARVEST, Harness, tree_snapshot

pytestmark = pytest.mark.integration

OME = "ome-tiff/single-file/multi-channel.ome.tif"
SECRET = "do-not-send-this-text"
WITHOUT_DAC = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
]


def _start_without_dac(harness: Harness) -> None:
    if os.geteuid() != 0:
        pytest.skip("permission bits already bind a non-root test run; chmod covers it")
    with harness.console.open("ab") as console:
        harness.process = subprocess.Popen(
            [*WITHOUT_DAC, ACQHARVEST, "run", "--config", str(harness.config)],
            stdout=console,
            stderr=subprocess.STDOUT,
        )
    assert harness.wait_log("daemon_started", timeout=30), harness.output()


def test_hostile_objects_are_refused_once_and_good_files_flow(
    harness: Harness, corpus: Path
) -> None:
    watch, outside = harness.watch, harness.tmp / "outside"
    outside.mkdir()
    (outside / "secret.dcm").write_text(SECRET)
    shutil.copyfile(corpus / OME, watch / "good-before.ome.tif")
    bad = {
        "escape.dcm": "outside the watch folder",
        "zero.dcm": "outside the watch folder",
        "loop-a": "loop",
        "loop-b": "loop",
        "pipe.dcm": "FIFO",
        "null.dcm": "device file",
        "locked.ome.tif": "Permission denied",
        "closed": "cannot list this folder",
    }
    os.symlink(outside / "secret.dcm", watch / "escape.dcm")
    os.symlink("/dev/zero", watch / "zero.dcm")
    os.symlink("loop-b", watch / "loop-a")
    os.symlink("loop-a", watch / "loop-b")
    os.mkfifo(watch / "pipe.dcm")
    os.mknod(watch / "null.dcm", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    shutil.copyfile(corpus / OME, watch / "locked.ome.tif")
    (watch / "locked.ome.tif").chmod(0)
    (watch / "closed").mkdir()
    shutil.copyfile(corpus / OME, watch / "closed" / "hidden.ome.tif")
    (watch / "closed").chmod(0)
    names = [p.name for p in watch.iterdir()]
    (watch / "closed").chmod(0o755)
    before = tree_snapshot(watch)
    (watch / "closed").chmod(0)

    _start_without_dac(harness)
    assert harness.endpoint.wait_for(1, timeout=30), harness.output()
    # a good file arriving while the bad ones sit there is harvested too
    shutil.copyfile(corpus / OME, watch / "good-after.ome.tif")
    assert harness.endpoint.wait_for(2, timeout=30), harness.output()
    assert harness.wait_log("watch_refused", count=len(bad) - 1, timeout=15), harness.output()
    # two more rescans pass over the bad objects
    scans = harness.count_events("watch_scan_finished")
    assert harness.wait_log("watch_scan_finished", count=scans + 2, timeout=30), harness.output()
    assert harness.process is not None
    assert harness.process.poll() is None, "the daemon died"
    assert harness.stop() == 0

    packaged = sorted(f["path"] for body in harness.packages().values() for f in body["files"])
    assert packaged == ["good-after.ome.tif", "good-before.ome.tif"]
    assert len(harness.endpoint.received) == 2
    assert all(SECRET not in request.body.decode() for request in harness.endpoint.received)

    refused = [e for e in harness.events() if e.get("event") == "watch_refused"]
    assert sorted(Path(e["path"]).name for e in refused) == sorted(
        name for name in bad if name != "locked.ome.tif"
    )
    status = harness.command("status")
    assert status.returncode == 0, status.stderr
    failed = [line for line in status.stdout.splitlines() if " failed " in line]
    for name, words in bad.items():
        lines = [line for line in failed if f"{watch / name}:" in line]
        assert len(lines) == 1, (name, failed)
        assert words in lines[0], (name, lines[0])

    (watch / "closed").chmod(0o755)
    (watch / "locked.ome.tif").chmod(0o644)
    # nothing in the folder was touched (mtimes and content hashes included)
    assert sorted(p.name for p in watch.iterdir()) == sorted([*names, "good-after.ome.tif"])
    assert {k: v for k, v in tree_snapshot(watch).items() if k != "good-after.ome.tif"} == before


def test_a_member_whose_folder_became_a_link_out_after_it_was_read_is_never_packaged(
    tmp_path: Path, corpus: Path
) -> None:
    watch, outside = tmp_path / "instrument", tmp_path / "outside"
    (watch / "sub").mkdir(parents=True)
    outside.mkdir()
    member = watch / "sub" / "cells.ome.tif"
    shutil.copyfile(corpus / OME, member)
    shutil.copyfile(corpus / OME, outside / "cells.ome.tif")
    settings = parse_settings(
        f"instrument: {{id: local-1}}\nwatch: [{{path: {watch}}}]\n"
        f"endpoint: {{type: directory, path: {tmp_path / 'out'}}}\n"
        f"state_dir: {tmp_path / 'state'}\nworkers: 0\n",
        source="test.yaml",
        base_dir=tmp_path,
    )
    daemon = Daemon(settings)
    try:
        st = member.stat()
        settled = FileSettled(member, watch, st.st_size, st.st_mtime_ns, file_identity(st))
        probed = workers.probe(settled)
        assert isinstance(probed, ProbedFile), probed
        acquisition = Acquisition(probed.group_key, probed.adapter, watch, (probed,))
        extraction = workers.extract_acquisition(acquisition)
        assert isinstance(extraction, Extraction), extraction
        # read while it was inside; by the time the package is built, the path leads out
        shutil.rmtree(watch / "sub")
        os.symlink(outside, watch / "sub")
        assert daemon._package(extraction) is None
        (failure,) = daemon.state.failures()
        assert failure.path == member
        assert "outside the folder" in failure.reason
    finally:
        daemon.state.close()
