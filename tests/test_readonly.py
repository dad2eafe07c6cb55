"""The read-only reader: what it reads, how it counts, and that it never writes."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from acqharvest.readonly import CHUNK, FileReader, NotSettledFile
from acqharvest.watch import file_identity


def test_head_and_digests_in_one_pass(tmp_path: Path) -> None:
    data = bytes(range(256)) * (CHUNK // 256 * 2 + 7)  # more than two chunks
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    reader = FileReader()
    head, digest, extra = reader.head_and_digests(path, 4096)
    assert head == data[:4096]
    assert digest == hashlib.sha256(data).hexdigest()
    assert extra == {}  # nothing asked, nothing else computed
    assert reader.bytes_read == len(data)


def test_extra_digests_come_from_the_same_single_pass(tmp_path: Path) -> None:
    data = bytes(range(256)) * (CHUNK // 256 * 2 + 7)
    path = tmp_path / "data.ibd"
    path.write_bytes(data)
    reader = FileReader()
    head, digest, extra = reader.head_and_digests(path, 16, ("sha1", "md5"))
    assert (head, digest) == (data[:16], hashlib.sha256(data).hexdigest())
    assert extra == {
        "sha1": hashlib.sha1(data, usedforsecurity=False).hexdigest(),
        "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
    }
    assert reader.bytes_read == len(data)  # every byte read once, for all three


def test_head_and_digests_reports_each_chunk(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * (3 * CHUNK + 1))
    chunks: list[tuple[int, int]] = []
    reader = FileReader()
    reader.head_and_digests(
        path, 4096, ("sha1",), lambda count: chunks.append((count, reader.bytes_read))
    )
    assert chunks == [(CHUNK, CHUNK), (CHUNK, 2 * CHUNK), (CHUNK, 3 * CHUNK), (1, 3 * CHUNK + 1)]


def test_short_and_empty_files(tmp_path: Path) -> None:
    short, empty = tmp_path / "short", tmp_path / "empty"
    short.write_bytes(b"abc")
    empty.write_bytes(b"")
    reader = FileReader()
    abc = hashlib.sha256(b"abc").hexdigest()
    assert reader.head_and_digests(short, 4096) == (b"abc", abc, {})
    assert reader.head_and_digests(empty, 4096, ("md5",)) == (
        b"",
        hashlib.sha256(b"").hexdigest(),
        {"md5": hashlib.md5(b"", usedforsecurity=False).hexdigest()},
    )


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


# ---------------------------------------------------------------------- only the settled file


def _identity(path: Path) -> str:
    return file_identity(os.lstat(path))


def _open_in_thread(reader: FileReader, path: Path) -> BaseException | bytes:
    """Read ``path`` on a thread that may block forever (a FIFO); what it raised or read."""
    outcome: list[BaseException | bytes] = []

    def read() -> None:
        try:
            outcome.append(reader.head(path, 16))
        except OSError as error:
            outcome.append(error)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), f"opening {path} blocked"
    return outcome[0]


def test_a_file_swapped_for_a_link_outside_is_refused_not_followed(tmp_path: Path) -> None:
    watched, outside = tmp_path / "watched", tmp_path / "outside"
    watched.mkdir()
    outside.mkdir()
    (outside / "secret.dcm").write_bytes(b"SECRET" * 10)
    path = watched / "image.dcm"
    path.write_bytes(b"DICM" * 15)  # the same size as the secret
    settled_as = _identity(path)
    path.unlink()
    os.symlink(outside / "secret.dcm", path)
    reader = FileReader({path: settled_as})
    with pytest.raises(NotSettledFile) as refused:
        reader.head_and_digests(path, 4096)
    assert str(path) in str(refused.value)
    assert "symbolic link" in str(refused.value)
    assert not refused.value.replaced
    assert reader.refused is refused.value
    assert reader.bytes_read == 0
    # also without a known identity: a link is never followed
    with pytest.raises(NotSettledFile):
        FileReader().read(path, 0, 4)


def test_a_file_swapped_for_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "image.tif"
    path.write_bytes(b"II*\0" + b"\0" * 60)
    settled_as = _identity(path)
    path.unlink()
    os.mkfifo(path)  # nobody will ever write to it: a blocking open would hang
    outcome = _open_in_thread(FileReader({path: settled_as}), path)
    assert isinstance(outcome, NotSettledFile), outcome
    assert str(outcome) == f"{path}: refused, not read: it is a named pipe (FIFO) now"
    # the settle stage's blank-head look has no identity; it must not block either
    assert isinstance(_open_in_thread(FileReader(), path), NotSettledFile)


def test_a_file_replaced_by_another_is_refused_as_replaced(tmp_path: Path) -> None:
    path, other = tmp_path / "scan.tif", tmp_path / "scan.tif.tmp"
    path.write_bytes(b"first version")
    settled_as = _identity(path)
    other.write_bytes(b"other version")  # same size, written under a temporary name
    os.replace(other, path)
    reader = FileReader({path: settled_as})
    with pytest.raises(NotSettledFile) as refused:
        reader.read(path, 0, 100)
    assert refused.value.replaced
    assert "another file replaced" in str(refused.value)
    # the file that is there now reads fine once it is the one expected
    assert FileReader({path: _identity(path)}).read(path, 0, 100) == b"other version"


def test_the_settled_file_reads_and_a_device_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ok.bin"
    path.write_bytes(b"0123456789")
    reader = FileReader({path: _identity(path)})
    assert reader.read(path, 2, 3) == b"234"
    assert reader.refused is None
    with pytest.raises(NotSettledFile, match="not a regular file"):
        FileReader().read(Path("/dev/null"), 0, 1)


def test_bytes_read_are_counted_per_file_too(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(b"x" * 100)
    second.write_bytes(b"y" * 10)
    reader = FileReader()
    reader.read(first, 0, 30)
    reader.read(second, 5, 30)
    with reader.open(first) as handle:
        handle.read()
    assert reader.read_by_path == {first: 130, second: 5}
    assert reader.bytes_read == 135
