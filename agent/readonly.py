"""The only place instrument files are opened: read-only, short-lived, never locking.

On Windows, CPython's ``open()`` does not share delete access, so while we hold a handle
the acquisition software could not rename or delete its own file. There we open through
``CreateFileW`` with ``FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE``. Files are
read in bounded chunks and never memory-mapped.

Only the regular file that settled is read. Between the settle stage's last look and a
worker's open, the path may be swapped for a symbolic link (to a file outside the watch
folder, to a device) or for a FIFO. So an open never follows a link at the last path
component (``O_NOFOLLOW``; on Windows ``FILE_FLAG_OPEN_REPARSE_POINT`` opens the link
itself), never waits for a FIFO's writer (``O_NONBLOCK``), and the handle is checked with
``fstat`` before a byte is read: it must be a regular file and, when the reader was given
the identity the file settled with (``file_id``, ``device:inode:ctime_ns`` as in
``acqharvest.watch``), have that device and inode. Anything else raises ``NotSettledFile``
naming the path and what is there now; the reader also keeps it in ``refused``, so a caller
learns of it even when an adapter swallowed the error.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import sys
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from acqharvest import logs

CHUNK = 1 << 20


class NotSettledFile(OSError):
    """The path no longer leads to the regular file that settled there: refused, not read."""

    def __init__(self, path: Path, what: str, *, replaced: bool = False) -> None:
        super().__init__(f"{path}: refused, not read: {what}")
        self.path = path
        #: another regular file has the name now: it may be harvested once it settles
        self.replaced = replaced


def _refusal(path: Path, st: os.stat_result, file_id: str | None) -> NotSettledFile | None:
    """Why the opened handle is not the file to read, or None when it is."""
    if not stat.S_ISREG(st.st_mode):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(st.st_mode) else "not a regular file"
        return NotSettledFile(path, f"it is {kind} now")
    if file_id is not None and file_id.split(":")[:2] != [str(st.st_dev), str(st.st_ino)]:
        return NotSettledFile(
            path,
            "another file replaced the one that settled (its device or inode differ)",
            replaced=True,
        )
    return None


if sys.platform == "win32":
    import ctypes
    import msvcrt
    from ctypes import wintypes

    _GENERIC_READ = 0x80000000
    _SHARE_ALL = 0x1 | 0x2 | 0x4  # FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE
    _OPEN_EXISTING = 3
    _FILE_ATTRIBUTE_NORMAL = 0x80
    # Open a symbolic link or junction itself, not its target: fstat then sees no regular
    # file with the settled identity and the read is refused.
    _FILE_FLAG_OPEN_REPARSE_POINT = 0x00200000
    _INVALID_HANDLE = wintypes.HANDLE(-1).value

    _kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    _kernel32.CreateFileW.restype = wintypes.HANDLE
    _kernel32.CreateFileW.argtypes = [
        wintypes.LPCWSTR,
        wintypes.DWORD,
        wintypes.DWORD,
        wintypes.LPVOID,
        wintypes.DWORD,
        wintypes.DWORD,
        wintypes.HANDLE,
    ]

    def _open_fd(path: Path) -> int:
        handle = _kernel32.CreateFileW(
            str(path),
            _GENERIC_READ,
            _SHARE_ALL,
            None,
            _OPEN_EXISTING,
            _FILE_ATTRIBUTE_NORMAL | _FILE_FLAG_OPEN_REPARSE_POINT,
            None,
        )
        if handle == _INVALID_HANDLE:
            error = ctypes.get_last_error()
            raise OSError(error, ctypes.FormatError(error), str(path))
        return msvcrt.open_osfhandle(handle, os.O_RDONLY | os.O_BINARY)

else:
    _FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY

    def _open_fd(path: Path) -> int:
        try:
            return os.open(path, _FLAGS)
        except OSError as error:
            # ELOOP on Linux and macOS, EMLINK on FreeBSD: the last component is a link.
            if error.errno in (errno.ELOOP, errno.EMLINK) and os.path.islink(path):
                raise NotSettledFile(path, "it is a symbolic link, never followed") from error
            raise


class FileReader:
    """The agent's :class:`acqharvest.adapter_api.Reader`: read-only, counts bytes read.

    ``identities`` maps paths to the ``file_id`` they settled with; such a path is read
    only while it still names that file (its device and inode).
    """

    def __init__(self, identities: Mapping[Path, str] | None = None) -> None:
        self.bytes_read = 0
        #: the same count per file (the headers-only rule is per file)
        self.read_by_path: dict[Path, int] = {}
        self._identities = identities or {}
        #: the first open this reader refused, if any
        self.refused: NotSettledFile | None = None

    @contextmanager
    def open(self, path: Path) -> Iterator[BinaryIO]:
        # a library's log lines name the file open now (a set member, not its primary)
        with self._counting(path) as counted, logs.reading(path):
            yield counted  # type: ignore[misc]

    @contextmanager
    def _counting(self, path: Path) -> Iterator[_CountingFile]:
        handle = os.fdopen(self._checked_fd(path), "rb", buffering=64 * 1024)
        try:
            yield _CountingFile(handle, self, path)
        finally:
            handle.close()

    def _checked_fd(self, path: Path) -> int:
        """A read-only descriptor of ``path`` once it proved to be the file to read."""
        try:
            fd = _open_fd(path)
        except NotSettledFile as link:
            self.refused = self.refused or link
            raise
        try:
            refused = _refusal(path, os.fstat(fd), self._identities.get(path))
            if refused is not None:
                self.refused = self.refused or refused
                raise refused
            if sys.platform != "win32":
                os.set_blocking(fd, True)  # O_NONBLOCK was only for the open
        except BaseException:
            os.close(fd)
            raise
        return fd

    def read(self, path: Path, offset: int, length: int) -> bytes:
        with self.open(path) as handle:
            handle.seek(offset)
            return handle.read(length)

    def head(self, path: Path, length: int) -> bytes:
        return self.read(path, 0, length)

    def head_and_digests(
        self,
        path: Path,
        head_length: int,
        extra: Collection[str] = (),
        on_chunk: Callable[[int], None] | None = None,
    ) -> tuple[bytes, str, dict[str, str]]:
        """The first ``head_length`` bytes, the sha256 of the whole file and its ``extra``
        digests (``hashlib`` names -> hex), all in one pass.

        One open per file: on a network share every open is a round trip. ``extra`` is
        what an adapter's ``info.digests`` asks for of this file; every other file pays
        for sha256 alone. ``on_chunk`` is called with the size of every chunk read: a worker tells
        the runtime it is still progressing (see ``workers.Progress``), however long the
        whole file takes.
        """
        digest = hashlib.sha256()
        # checksums to compare, not security: FIPS builds allow md5 for that
        others = {name: hashlib.new(name, usedforsecurity=False) for name in extra}
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        head = b""
        with self._counting(path) as handle:
            while count := handle.readinto(view):
                if len(head) < head_length:
                    head += bytes(view[: min(count, head_length - len(head))])
                digest.update(view[:count])
                for other in others.values():
                    other.update(view[:count])
                if on_chunk is not None:
                    on_chunk(count)
        return head, digest.hexdigest(), {name: d.hexdigest() for name, d in others.items()}


class _CountingFile:
    """A thin file wrapper that adds every read to the reader's byte count.

    pydicom and tifffile need ``read``, ``seek``, ``tell`` and a few more; everything
    not overridden is delegated to the real file object.
    """

    def __init__(self, handle: BinaryIO, reader: FileReader, path: Path) -> None:
        self._handle = handle
        self._reader = reader
        self._path = path
        # Bound once: header parsers call these per element, __getattr__ would run each time.
        self.seek = handle.seek
        self.tell = handle.tell

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._count(len(data))
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        count = int(self._handle.readinto(buffer) or 0)  # type: ignore[attr-defined]
        self._count(count)
        return count

    def _count(self, count: int) -> None:
        self._reader.bytes_read += count
        by_path = self._reader.read_by_path
        by_path[self._path] = by_path.get(self._path, 0) + count

    def __getattr__(self, name: str) -> object:
        return getattr(self._handle, name)

    def __enter__(self) -> _CountingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()
