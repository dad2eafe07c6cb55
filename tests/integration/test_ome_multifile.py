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


def layout_files(corpus: Path, layout: str) -> tuple[Path, str, list[str]]:
    """The corpus folder of a layout, its metadata file's name and its other files' names."""
    source = corpus / "ome-tiff" / layout
    metadata_file = LAYOUTS[layout]
    return (
        source,
        metadata_file,
        sorted(p.name for p in source.iterdir() if p.name != metadata_file),
    )


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_multifile_set_is_one_package_once_its_metadata_file_arrives(
    harness: Harness, corpus: Path, layout: str
) -> None:
    source, metadata_file, members = layout_files(corpus, layout)
    target = harness.watch / "carol" / "zstack"
    target.mkdir(parents=True)
    harness.start()
    # members out of order, each fully settled before the next: none may leave on its own
    for name in reversed(members):
        write_slowly((source / name).read_bytes(), target / name, chunks=2, pause=0.2)
    assert harness.wait_log("file_settled", count=len(members), timeout=15), harness.output()
    assert not harness.endpoint.wait_for(1, timeout=harness.settle * 3), "sent before metadata"
    write_slowly((source / metadata_file).read_bytes(), target / metadata_file, chunks=2, pause=0.2)
    harness.mark()
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


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_metadata_file_arriving_after_its_members_timed_out_completes_the_set(
    harness: Harness, corpus: Path, layout: str
) -> None:
    # The members wait for their metadata file until the group timeout, then leave as an
    # incomplete package (nothing is lost). When the metadata file arrives after all, its
    # package lists every file, replaces the first, and is complete: the members packaged
    # earlier count as present.
    harness.write_config(harness.tmp / "token", watch_options={"group_timeout_seconds": 4})
    source, metadata_file, members = layout_files(corpus, layout)
    target = harness.watch / "erin" / "zstack"
    target.mkdir(parents=True)
    harness.start()
    for name in members:
        (target / name).write_bytes((source / name).read_bytes())
    assert harness.endpoint.wait_for(1, timeout=60), harness.output()
    (first,) = (request.json for request in harness.endpoint.received)
    assert first["acquisition"]["complete"] is False
    assert sorted(f["path"] for f in first["files"]) == [f"erin/zstack/{n}" for n in members]

    write_slowly((source / metadata_file).read_bytes(), target / metadata_file, chunks=2, pause=0.2)
    harness.mark()
    assert harness.endpoint.wait_for(2, timeout=60), harness.output()
    assert not harness.endpoint.wait_for(3, timeout=harness.settle * 3)
    assert harness.stop() == 0

    _, second = (request.json for request in harness.endpoint.received)
    validate_package(second)
    assert second["replaces"] == first["package_id"]
    assert second["acquisition"]["complete"] is True
    assert {f["path"]: f["sha256"] for f in second["files"]} == {
        f"erin/zstack/{name}": hashlib.sha256((source / name).read_bytes()).hexdigest()
        for name in [*members, metadata_file]
    }
    assert second["original_metadata"]["ome_files"]["missing"] == []
    assert second["metadata"]["instances"] == len(members) + 1
