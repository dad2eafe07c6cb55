"""Directory and paired acquisitions against a real daemon: an OME-Zarr store written chunk
by chunk, an imzML before its .ibd, a NIfTI .img before its .hdr.

Each must give exactly one package listing every file, and nothing else: no chunk, no
.ibd, no .img is ever sent on its own, however long it waits for the rest. And the
single-file formats of the same issue (CZI, ND2, LIF, NIfTI), each one package read by
its adapter's reader.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from tests import simulator
from tests.integration.conftest import Harness, harvested, validate_package
from tests.simulator import Written

pytestmark = pytest.mark.integration

STORE = "ome-zarr/xyz_8bit__mitotic_plate_calibrated.ome.zarr"
ROOT_METADATA = (".zattrs", ".zgroup")


def _one_package(harness: Harness, written: list[Written]) -> dict[str, Any]:
    """The only package sent, which lists exactly the files written, as written."""
    packages = harness.packages()
    assert len(packages) == 1, [
        [f["path"] for f in body["files"]][:3] for body in packages.values()
    ]
    body: dict[str, Any] = next(iter(packages.values()))
    validate_package(body)
    found = harvested(packages.values())
    assert {path: [(size, digest)] for path, ((size, digest, _),) in found.items()} == {
        w.path.relative_to(harness.watch).as_posix(): [(w.size, w.sha256)] for w in written
    }
    assert body["acquisition"]["complete"] is True
    return body


def _store_files(corpus: Path, target: Path, *, metadata_last: bool) -> list[tuple[bytes, Path]]:
    source = corpus / STORE
    files = sorted(p for p in source.rglob("*") if p.is_file())
    root = [p for p in files if p.parent == source and p.name in ROOT_METADATA]
    rest = [p for p in files if p not in root]
    ordered = [*rest, *root] if metadata_last else [*root, *rest]
    return [(p.read_bytes(), target / p.relative_to(source)) for p in ordered]


@pytest.mark.parametrize("metadata_last", [False, True], ids=["metadata-first", "chunks-first"])
def test_a_zarr_store_written_chunk_by_chunk_is_one_package(
    harness: Harness, corpus: Path, metadata_last: bool
) -> None:
    target = harness.watch / "dana" / "screen" / "run1.ome.zarr"
    harness.start()
    files = _store_files(corpus, target, metadata_last=metadata_last)
    if metadata_last:
        # every chunk settles long before the metadata: none may leave on its own
        written = simulator.arrive_apart(files[:-2], interval=0.02)
        assert harness.wait_log("file_settled", count=len(written), timeout=30), harness.output()
        assert not harness.endpoint.wait_for(1, timeout=harness.settle * 3), "sent early"
        written += simulator.arrive_apart(files[-2:], interval=0.02)
    else:
        # written as a writer streams a store: each chunk in two writes, a pause between
        write = functools.partial(simulator.append_slowly, chunk_size=2048, pause=0.02)
        written = simulator.arrive_apart(files, interval=0.02, write=write)
    harness.mark()
    assert harness.endpoint.wait_for(1, timeout=60), harness.output()
    assert not harness.endpoint.wait_for(2, timeout=harness.settle * 3)
    assert harness.stop() == 0

    body = _one_package(harness, written)
    assert body["acquisition"]["format"] == "OME-Zarr"
    assert body["metadata"]["instances"] == len(files) == 87
    assert body["metadata"]["image"]["size_x"] == 263
    assert body["metadata"]["pixel_size_um"]["z"] == 3.0


def test_a_chunk_added_to_a_packaged_store_gives_one_package_that_replaces_it(
    harness: Harness, corpus: Path
) -> None:
    target = harness.watch / "dana" / "screen" / "run2.ome.zarr"
    harness.start()
    written = simulator.arrive_apart(_store_files(corpus, target, metadata_last=False), interval=0)
    assert harness.endpoint.wait_for(1, timeout=60), harness.output()
    # a whole Blosc chunk (its header states its size): a cut-short one would fail alone
    chunk = (corpus / STORE / "0/0/0/0/0/0/0").read_bytes()
    late = simulator.arrive_apart([(chunk, target / "0/0/0/0/5/9/9")], interval=0)
    harness.mark()
    assert harness.endpoint.wait_for(2, timeout=60), harness.output()
    assert not harness.endpoint.wait_for(3, timeout=harness.settle * 3)
    assert harness.stop() == 0
    first, second = (request.json for request in harness.endpoint.received)
    assert second["replaces"] == first["package_id"]
    assert len(second["files"]) == len(written) + len(late) == 88


def test_an_imzml_before_its_ibd_and_a_nifti_img_before_its_hdr_are_one_package_each(
    harness: Harness, corpus: Path, tmp_path: Path
) -> None:
    import nibabel
    import numpy as np

    voxels = np.arange(1, 8 * 6 * 4 + 1, dtype=np.int16).reshape((8, 6, 4))
    pair = nibabel.Nifti1Pair(voxels, np.eye(4))
    nibabel.save(pair, tmp_path / "t1.hdr")
    harness.start()
    msi = harness.watch / "erin" / "msi"
    imzml = simulator.arrive_apart(
        [((corpus / "imzml/Example_Continuous.imzML").read_bytes(), msi / "spot.imzML")],
        interval=0,
    )
    mri = harness.watch / "erin" / "mri"
    img = simulator.arrive_apart([((tmp_path / "t1.img").read_bytes(), mri / "t1.img")], interval=0)
    assert harness.wait_log("file_settled", count=2, timeout=15), harness.output()
    assert not harness.endpoint.wait_for(1, timeout=harness.settle * 3), "half a pair sent"
    ibd = simulator.append_slowly(
        (corpus / "imzml/Example_Continuous.ibd").read_bytes(),
        msi / "spot.ibd",
        chunk_size=100_000,
        pause=0.2,
    )
    hdr = simulator.arrive_apart([((tmp_path / "t1.hdr").read_bytes(), mri / "t1.hdr")], interval=0)
    harness.mark()
    assert harness.endpoint.wait_for(2, timeout=30), harness.output()
    assert not harness.endpoint.wait_for(3, timeout=harness.settle * 3)
    assert harness.stop() == 0

    by_format = {body["acquisition"]["format"]: body for body in harness.packages().values()}
    assert set(by_format) == {"imzML", "NIfTI-1"}
    for body, files in ((by_format["imzML"], [*imzml, ibd]), (by_format["NIfTI-1"], [*img, *hdr])):
        validate_package(body)
        assert body["acquisition"]["complete"] is True
        assert sorted(f["path"] for f in body["files"]) == sorted(
            w.path.relative_to(harness.watch).as_posix() for w in files
        )
    assert by_format["imzML"]["metadata"]["msi"]["spectra"] == 9
    # the SHA-1 the imzML names, against the worker's digest of the .ibd as it hashed it
    assert by_format["imzML"]["metadata"]["msi"]["ibd_checksum_verified"] == "sha1"
    assert by_format["NIfTI-1"]["metadata"]["image"]["size_x"] == 8


#: one corpus file of each single-file format, with the reader its adapter uses
SINGLE_FILES = {
    "czi/testCziZStack4.czi": ("czi", "Zeiss CZI"),
    "nd2/cluster.nd2": ("nd2", "Nikon ND2"),
    "lif/xz-example.lif": ("lif", "Leica LIF"),
    "nifti/functional.nii": ("nifti", "NIfTI-1"),
    "nifti/example_nifti2.nii.gz": ("nifti", "NIfTI-2"),
}


def test_each_new_format_arrives_as_one_package_read_by_its_adapter(
    harness: Harness, corpus: Path
) -> None:
    harness.start()
    simulator.arrive_apart(
        [((corpus / name).read_bytes(), harness.watch / "erin" / name) for name in SINGLE_FILES],
        interval=0.05,
    )
    harness.mark()
    assert harness.endpoint.wait_for(len(SINGLE_FILES), timeout=90), harness.output()
    assert harness.stop() == 0

    by_path = {body["files"][0]["path"]: body for body in harness.packages().values()}
    assert sorted(by_path) == sorted(f"erin/{name}" for name in SINGLE_FILES)
    for name, (adapter, format_name) in SINGLE_FILES.items():
        body = by_path[f"erin/{name}"]
        validate_package(body)
        assert len(body["files"]) == 1
        assert body["harvester"]["adapter"] == adapter, name
        assert body["acquisition"]["format"].startswith(format_name), name
        assert body["acquisition"]["complete"] is True
        # read with the format's reader, not packaged with checksums only
        assert body["metadata"]["image"]["size_x"] > 0, name
        assert not any("unavailable" in w for w in body["provenance"]["warnings"]), name
