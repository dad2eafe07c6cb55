"""An acquisition simulator: writes real corpus files into a watched folder the way
instrument software does, for integration tests and benchmarks.

Every pattern is one function taking the bytes to write (read from the corpus, or made from
it) and its timing as parameters, and returns what a correct harvest must report for it
(``Written``: final path, size, sha256). The functions block until the pattern is done; run
them in a thread to overlap them with a daemon. Nothing here touches the daemon.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

#: Linux limits: bytes in one file name, and in a whole path including the final NUL.
NAME_MAX = 255
PATH_MAX = 4096


@dataclass(frozen=True, slots=True)
class Written:
    """A file as it is once the writer is done: what its package must say."""

    path: Path
    size: int
    sha256: str

    @classmethod
    def of(cls, path: Path, data: bytes) -> Written:
        return cls(path, len(data), hashlib.sha256(data).hexdigest())


def _chunks(data: bytes, chunk_size: int) -> Iterator[tuple[int, bytes]]:
    for offset in range(0, len(data), max(1, chunk_size)):
        yield offset, data[offset : offset + chunk_size]


def append_slowly(
    data: bytes,
    target: Path,
    *,
    chunk_size: int = 64 * 1024,
    pause: float = 0.3,
    reopen: bool = False,
) -> Written:
    """Append in chunks with a pause after each; ``reopen`` opens and closes per chunk
    (a close-write event after every chunk), else one handle is held throughout."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if reopen:
        target.write_bytes(b"")
        for _, chunk in _chunks(data, chunk_size):
            with target.open("ab") as handle:
                handle.write(chunk)
            time.sleep(pause)
    else:
        with target.open("wb") as handle:
            for _, chunk in _chunks(data, chunk_size):
                handle.write(chunk)
                handle.flush()
                time.sleep(pause)
    return Written.of(target, data)


def hold_open(data: bytes, target: Path, *, pauses: Sequence[float], flush: bool = True) -> Written:
    """One handle held open the whole time; the data goes out in ``len(pauses) + 1`` equal
    parts with those pauses between them (a long exposure, a slow scan)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    parts = len(pauses) + 1
    step = -(-len(data) // parts)
    with target.open("wb") as handle:
        for index in range(parts):
            handle.write(data[index * step : (index + 1) * step])
            if flush:
                handle.flush()
            if index < len(pauses):
                time.sleep(pauses[index])
    return Written.of(target, data)


def write_then_rename(
    data: bytes,
    target: Path,
    *,
    temp_name: str | None = None,
    chunk_size: int = 64 * 1024,
    pause: float = 0.3,
) -> Written:
    """Write under a temporary name in the same folder, then rename onto the final name."""
    temp = target.with_name(temp_name or f"{target.name}.tmp")
    append_slowly(data, temp, chunk_size=chunk_size, pause=pause)
    os.replace(temp, target)
    return Written.of(target, data)


def preallocate_then_fill(
    data: bytes,
    target: Path,
    *,
    chunk_size: int = 64 * 1024,
    pause: float = 0.3,
    before_first_write: float = 0.0,
    head_last: bool = False,
) -> Written:
    """Reserve the final size (all zero bytes), wait, then fill in chunks with pauses.

    The size is final from the start; only the mtime and the content move. ``head_last``
    fills back to front, as writers do that put the header in once the data is known.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as handle:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(handle.fileno(), 0, len(data))
        else:  # pragma: no cover - macOS, Windows
            handle.truncate(len(data))
    time.sleep(before_first_write)
    pieces = list(_chunks(data, chunk_size))
    if head_last:
        pieces.reverse()
    with target.open("r+b") as handle:
        for offset, chunk in pieces:
            handle.seek(offset)
            handle.write(chunk)
            handle.flush()
            time.sleep(pause)
    return Written.of(target, data)


def rewrite(
    data: bytes, target: Path, *, chunk_size: int = 64 * 1024, pause: float = 0.3
) -> Written:
    """Write an existing file again in place (truncate, then append slowly): a re-export."""
    return append_slowly(data, target, chunk_size=chunk_size, pause=pause)


def delete_before_settling(
    data: bytes, target: Path, *, fraction: float = 0.5, pause: float = 0.2
) -> None:
    """Write part of a file, pause less than a settle window, then delete it (an aborted run)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as handle:
        handle.write(data[: int(len(data) * fraction)])
        handle.flush()
        time.sleep(pause)
    target.unlink()


def arrive_apart(
    files: Sequence[tuple[bytes, Path]],
    *,
    interval: float,
    write: Callable[[bytes, Path], Written] | None = None,
) -> list[Written]:
    """A multi-file set whose files arrive ``interval`` seconds apart (minutes on real
    instruments); each file is written with ``write`` (default: at once)."""
    written: list[Written] = []
    for index, (data, target) in enumerate(files):
        if index:
            time.sleep(interval)
        if write is None:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            written.append(Written.of(target, data))
        else:
            written.append(write(data, target))
    return written


def dicom_series(template: Path, count: int) -> list[bytes]:
    """``count`` distinct instances of one new series, made from a real scanner file."""
    dataset = pydicom.dcmread(template)
    series_uid = generate_uid()
    instances = []
    for number in range(1, count + 1):
        dataset.SeriesInstanceUID = series_uid
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.InstanceNumber = number
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        instances.append(buffer.getvalue())
    return instances


def many_files(
    sources: Sequence[bytes], folder: Path, count: int, *, per_folder: int = 500
) -> list[Written]:
    """``count`` files at once, cycling through ``sources``, ``per_folder`` to a subfolder."""
    written: list[Written] = []
    digests = [(len(data), hashlib.sha256(data).hexdigest()) for data in sources]
    for index in range(count):
        which = index % len(sources)
        target = folder / f"batch{index // per_folder:03d}" / f"acq{index:06d}.tif"
        if index % per_folder == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(sources[which])
        written.append(Written(target, *digests[which]))
    return written


def deep_path(root: Path, depth: int, name: str) -> Path:
    """A file ``depth`` folders below ``root`` (``level01/level02/...``)."""
    parts = [f"level{level:02d}" for level in range(1, depth + 1)]
    return root.joinpath(*parts, name)


def longest_name(stem: str, suffix: str) -> str:
    """A file name of exactly NAME_MAX bytes in UTF-8: ``stem`` repeated, then ``suffix``."""
    room = NAME_MAX - len(suffix.encode())
    name = ""
    while len((name + stem).encode()) <= room:
        name += stem
    for char in stem:
        if len((name + char).encode()) > room:
            break
        name += char
    name += "_" * (room - len(name.encode()))
    return name + suffix


def long_unicode_path(root: Path, suffix: str, *, margin: int = 64) -> Path:
    """A path of folders and a file name with spaces and non-ASCII characters, each name
    at NAME_MAX bytes, the whole path ``margin`` bytes short of PATH_MAX."""
    folder_stem = "Mikroskopie Ärger über 顕微鏡 データ "
    budget = PATH_MAX - 1 - margin - len(os.fsencode(root))
    path = root
    file_name = longest_name("Zelle Ω µm 細胞 ", suffix)
    budget -= NAME_MAX + 1
    while budget > NAME_MAX + 1:
        path = path / longest_name(folder_stem, "")
        budget -= NAME_MAX + 1
    if budget > 1:
        path = path / ("d" * (budget - 1))
    return path / file_name


def write_past_path_max(root: Path, data: bytes, suffix: str) -> tuple[Path, Path]:
    """``data`` written twice where no program can open it by name: a file of NAME_MAX
    bytes whose path passes PATH_MAX, in a folder whose own path does not; and a file in a
    subfolder of that folder, whose own path passes PATH_MAX too. (file, subfolder).

    Made through open folder descriptors, as nothing can be made by so long a path."""
    folder, fd = root, os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        level = 0
        while len(os.fsencode(folder)) < PATH_MAX - 1 - NAME_MAX:
            level += 1
            name = f"{level:02d}".ljust(NAME_MAX, "d")
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            folder, fd = folder / name, inner
        file_name = longest_name("x", suffix)
        subfolder = "s".ljust(NAME_MAX, "s")
        os.mkdir(subfolder, dir_fd=fd)
        for path in (file_name, f"{subfolder}/inside{suffix}"):
            out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
            with os.fdopen(out, "wb") as handle:
                handle.write(data)
    finally:
        os.close(fd)
    return folder / file_name, folder / subfolder
