"""The only place instrument files are opened: read-only, short-lived, never locking.

On Windows, CPython's ``open()`` does not share delete access, so while we hold a handle
the acquisition software could not rename or delete its own file. There we open through
``CreateFileW`` with ``FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE``. Files are
read in bounded chunks and never memory-mapped.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


if sys.platform == "win32":
    import ctypes
    import msvcrt
    from ctypes import wintypes

    _GENERIC_READ = 0x80000000
    _SHARE_ALL = 0x1 | 0x2 | 0x4  # FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE
    _OPEN_EXISTING = 3
    _FILE_ATTRIBUTE_NORMAL = 0x80
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
            _FILE_ATTRIBUTE_NORMAL,
            None,
        )
        if handle == _INVALID_HANDLE:
            error = ctypes.get_last_error()
            raise OSError(error, ctypes.FormatError(error), str(path))
        return msvcrt.open_osfhandle(handle, os.O_RDONLY | os.O_BINARY)

else:

    def _open_fd(path: Path) -> int:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


class FileReader:
    """The agent's :class:`acqharvest.adapter_api.Reader`: read-only, counts bytes read."""

    def __init__(self) -> None:
        self.bytes_read = 0

    @contextmanager
    def open(self, path: Path) -> Iterator[BinaryIO]:
        with self._counting(path) as counted:
            yield counted  # type: ignore[misc]

    @contextmanager
    def _counting(self, path: Path) -> Iterator[_CountingFile]:
        handle = os.fdopen(_open_fd(path), "rb", buffering=64 * 1024)
        try:
            yield _CountingFile(handle, self)
        finally:
            handle.close()

    def read(self, path: Path, offset: int, length: int) -> bytes:
        with self.open(path) as handle:
            handle.seek(offset)
            return handle.read(length)

    def head(self, path: Path, length: int) -> bytes:
        return self.read(path, 0, length)

    def head_and_sha256(self, path: Path, head_length: int) -> tuple[bytes, str]:
        """The first ``head_length`` bytes and the sha256 of the whole file, in one pass.

        One open per file: on a network share every open is a round trip.
        """
        digest = hashlib.sha256()
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        head = b""
        with self._counting(path) as handle:
            while count := handle.readinto(view):
                if len(head) < head_length:
                    head += bytes(view[: min(count, head_length - len(head))])
                digest.update(view[:count])
        return head, digest.hexdigest()


class _CountingFile:
    """A thin file wrapper that adds every read to the reader's byte count.

    pydicom and tifffile need ``read``, ``seek``, ``tell`` and a few more; everything
    not overridden is delegated to the real file object.
    """

    def __init__(self, handle: BinaryIO, reader: FileReader) -> None:
        self._handle = handle
        self._reader = reader
        # Bound once: header parsers call these per element, __getattr__ would run each time.
        self.seek = handle.seek
        self.tell = handle.tell

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._reader.bytes_read += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        count = self._handle.readinto(buffer)  # type: ignore[attr-defined]
        self._reader.bytes_read += count or 0
        return int(count or 0)

    def __getattr__(self, name: str) -> object:
        return getattr(self._handle, name)

    def __enter__(self) -> _CountingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()
