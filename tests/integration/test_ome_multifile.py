"""Multi-file OME-TIFF sets written into a watched folder one file at a time, out of order.

A real daemon and a loopback endpoint: each layout must give exactly one package listing
every file, and nothing may be sent before the metadata file (written last) has arrived.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.integration.conftest import Harness, validate_package, write_slowly

pytestmark = pytest.mark.integration

LAYOUTS = {
    "multifile-master": "multifile-Z1.ome.tiff",
    "multifile-companion": "multifile.companion.ome",
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_multifile_set_is_one_package_once_its_metadata_file_arrives(
    harness: Harness, corpus: Path, layout: str
) -> None:
    source = corpus / "ome-tiff" / layout
    metadata_file = LAYOUTS[layout]
    members = sorted(p.name for p in source.iterdir() if p.name != metadata_file)
    target = harness.watch / "carol" / "zstack"
    target.mkdir(parents=True)
    harness.start()
    # members out of order, each fully settled before the next: none may leave on its own
    for name in reversed(members):
        write_slowly((source / name).read_bytes(), target / name, chunks=2, pause=0.2)
    assert harness.wait_log("file_settled", count=len(members), timeout=15), harness.output()
    assert not harness.endpoint.wait_for(1, timeout=harness.settle * 3), "sent before metadata"
    write_slowly((source / metadata_file).read_bytes(), target / metadata_file, chunks=2, pause=0.2)
    assert harness.endpoint.wait_for(1, timeout=30), harness.output()
    assert not harness.endpoint.wait_for(2, timeout=harness.settle * 3)
    assert harness.stop() == 0

    (body,) = harness.packages().values()
    validate_package(body)
    listed = {f["path"]: f["sha256"] for f in body["files"]}
    assert listed == {
        f"carol/zstack/{name}": hashlib.sha256((source / name).read_bytes()).hexdigest()
        for name in [*members, metadata_file]
    }
    assert body["acquisition"]["complete"] is True
    assert body["acquisition"]["format"] == "OME-TIFF"
    assert body["metadata"]["instances"] == len(members) + 1
    assert body["metadata"]["image"]["size_z"] == 5
    assert body["metadata"]["image"]["frames"] == 5
    assert body["original_metadata"]["ome_files"]["missing"] == []
