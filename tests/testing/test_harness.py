"""The observation helpers behind ``test_read_only``, on their own."""

from __future__ import annotations

import os
from pathlib import Path

from acqharvest.testing.harness import case_reach, open_handles, writes_recorded


def test_the_reach_is_the_case_folders_parent_never_above_the_samples_root(
    tmp_path: Path,
) -> None:
    assert case_reach([tmp_path / "a" / "b" / "x.tif"], tmp_path) == tmp_path / "a"
    assert case_reach([tmp_path / "a" / "x.tif"], tmp_path) == tmp_path
    assert case_reach([tmp_path / "x.tif"], tmp_path) == tmp_path
    spread = [tmp_path / "a" / "b" / "x.ome.tif", tmp_path / "a" / "c" / "x.companion.ome"]
    assert case_reach(spread, tmp_path) == tmp_path


def test_reads_and_bytecode_caches_are_not_writes_a_rename_is(tmp_path: Path) -> None:
    sample = tmp_path / "x.tif"
    sample.write_bytes(b"II*\0")
    with writes_recorded() as writes:
        sample.read_bytes()
        os.close(os.open(sample, os.O_RDONLY))
        (tmp_path / "__pycache__").mkdir()
        (tmp_path / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"")
    assert writes == []
    with writes_recorded() as writes:
        sample.rename(tmp_path / "y.tif")
    assert writes == [f"os.rename({sample}, {tmp_path / 'y.tif'})"]


def test_handles_say_which_can_write(tmp_path: Path) -> None:
    sample = tmp_path / "x.tif"
    sample.write_bytes(b"II*\0")
    before = open_handles()
    reading, writing = os.open(sample, os.O_RDONLY), os.open(sample, os.O_RDWR)
    try:
        new = open_handles() - before
    finally:
        os.close(reading)
        os.close(writing)
    assert {(handle.path, handle.writable) for handle in new} == {
        (str(sample), False),
        (str(sample), True),
    }
