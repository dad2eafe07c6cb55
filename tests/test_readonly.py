"""The read-only reader: what it reads, how it counts, and that it never writes."""

from __future__ import annotations

import hashlib
from pathlib import Path

from acqharvest.readonly import CHUNK, FileReader


def test_head_and_sha256_in_one_pass(tmp_path: Path) -> None:
    data = bytes(range(256)) * (CHUNK // 256 * 2 + 7)  # more than two chunks
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    reader = FileReader()
    head, digest = reader.head_and_sha256(path, 4096)
    assert head == data[:4096]
    assert digest == hashlib.sha256(data).hexdigest()
    assert reader.bytes_read == len(data)


def test_short_and_empty_files(tmp_path: Path) -> None:
    short, empty = tmp_path / "short", tmp_path / "empty"
    short.write_bytes(b"abc")
    empty.write_bytes(b"")
    reader = FileReader()
    assert reader.head_and_sha256(short, 4096) == (b"abc", hashlib.sha256(b"abc").hexdigest())
    assert reader.head_and_sha256(empty, 4096) == (b"", hashlib.sha256(b"").hexdigest())


def test_reads_count_and_leave_the_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789" * 100)
    before = path.stat()
    reader = FileReader()
    assert reader.read(path, 10, 5) == b"01234"
    with reader.open(path) as handle:
        handle.seek(995)
        assert handle.read() == b"56789"
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert reader.bytes_read == 10
