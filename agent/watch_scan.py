"""Reconciliation scans: every watched file under a folder, listed lazily through open folder
descriptors, so a folder swapped for a symbolic link mid-scan cannot lead the scan outside.

Holds no observer; ``Watcher`` in ``acqharvest.watch`` runs the scans and the observers.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
import sys
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from acqharvest.model import FileRefused, FileSeen, WatchSettings
from acqharvest.watch_rules import (
    OwnPaths,
    Refusals,
    classified,
    is_folder,
    lstat_or_none,
    matches,
    too_long,
)

log = structlog.get_logger("acqharvest.watch")

#: a folder listed a moment ago that is no folder now (ENOTDIR: opened with O_DIRECTORY
#: and O_NOFOLLOW, a symbolic link fails so on Linux; ELOOP or EMLINK elsewhere)
_SWAPPED = (errno.ENOTDIR, errno.ELOOP, errno.EMLINK)


if sys.platform == "win32":
    _FILE_ATTRIBUTE_REPARSE_POINT = 0x400

    class _Folder:
        """A folder of a scan, by its path: Windows lists a folder by name only.

        Just before it is listed a folder must still be a folder and no reparse point (a
        symbolic link or junction put in its place since its parent was listed). A swap
        between that check and the listing, or of a parent folder meanwhile, goes unseen:
        Windows offers no listing relative to an open folder.
        """

        def __init__(self, path: str) -> None:
            st = os.lstat(path)
            if st.st_file_attributes & _FILE_ATTRIBUTE_REPARSE_POINT:
                raise OSError(errno.ELOOP, "a link or junction: never followed", path)
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", path)
            self._path = path
            self._st = st

        @classmethod
        def open_root(cls, real_root: str) -> _Folder:
            return cls(real_root)

        def child(self, name: str) -> _Folder:
            return _Folder(os.path.join(self._path, name))

        def entries(self) -> contextlib.AbstractContextManager[Iterator[os.DirEntry[str]]]:
            return os.scandir(self._path)

        def lstat(self, entry: os.DirEntry[str]) -> os.stat_result:
            # DirEntry.stat leaves the device and the file index zero on Windows.
            return os.lstat(entry.path)

        def stat(self) -> os.stat_result:
            """The folder's own stat, as checked when it was entered."""
            return self._st

        def close(self) -> None:
            """Nothing is held open."""

else:
    _FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

    class _Folder:
        """A folder of a scan, held open: what is below it is reached through it.

        Its subfolders are opened relative to its descriptor with ``O_NOFOLLOW`` and its
        files stat'ed relative to it. A subfolder swapped for a symbolic link after this
        folder was listed is not entered (``O_NOFOLLOW`` with ``O_DIRECTORY`` fails), and a
        parent swapped for one cannot lead the scan elsewhere: no path is resolved again.
        A scan holds one per level of the folder it is in.
        """

        def __init__(self, fd: int) -> None:
            self._fd = fd
            try:
                self._st = os.fstat(fd)
            except OSError:
                os.close(fd)
                raise

        @classmethod
        def open_root(cls, real_root: str) -> _Folder:
            return cls(os.open(real_root, _FOLDER_FLAGS))

        def child(self, name: str) -> _Folder:
            return _Folder(os.open(name, _FOLDER_FLAGS, dir_fd=self._fd))

        def entries(self) -> contextlib.AbstractContextManager[Iterator[os.DirEntry[str]]]:
            return os.scandir(self._fd)

        def lstat(self, entry: os.DirEntry[str]) -> os.stat_result:
            return entry.stat(follow_symlinks=False)  # fstatat, relative to this folder

        def stat(self) -> os.stat_result:
            """The folder's own stat, taken when it was opened."""
            return self._st

        def close(self) -> None:
            os.close(self._fd)


@dataclass
class _Level:
    """A folder on the scan's current path, with the subfolders it has yet to visit."""

    folder: _Folder
    #: the folder's path under the root as configured (as files are reported)
    path: str
    #: its path relative to the root: "" or ending in "/"
    prefix: str
    subfolders: list[str]


class Scanner:
    """Scans watch folders, never harvesting the daemon's own paths and reporting refusals
    once (both shared with the ``Watcher``'s observers)."""

    def __init__(self, own: OwnPaths, refusals: Refusals) -> None:
        self._own = own
        self._refusals = refusals

    def scan_folder(self, ws: WatchSettings) -> Iterator[FileSeen]:
        """Every watched file under one folder, lazily; never follows a symbolic link.

        Holds only the folders still to visit, never the files: memory grows with the
        breadth of the tree, not with the number of files. Refusals go to ``emit``.
        The folders on the path to the one being listed stay open and each is entered
        through its parent (``_Folder``): a folder swapped for a link to elsewhere while
        the scan was busy (hours, on a huge tree) cannot lead it out of the root.
        """
        root = ws.path
        if not is_folder(root):
            log.warning("watch_folder_unavailable", folder=str(root), reason="missing")
            return
        started = time.monotonic()
        real_root = os.path.realpath(root)
        self._own.refresh()
        if reason := self._own.within(real_root):
            self._refusals.report(FileRefused(root, root, reason))
            return
        try:
            top = _Folder.open_root(real_root)
        except OSError as exc:
            log.warning("watch_scan_failed", folder=str(root), path=str(root), error=str(exc))
            return
        levels = [_Level(top, str(root), "", [])]
        files = 0
        try:
            files += yield from self._listed(ws, real_root, levels[-1])
            while levels:
                level = levels[-1]
                if not level.subfolders:
                    levels.pop().folder.close()
                    continue
                name = level.subfolders.pop()
                path = os.path.join(level.path, name)
                if (reason := too_long(path)) is not None:
                    # reachable through its parent, but nothing below it could be read
                    self._refusals.report(FileRefused(Path(path), root, reason))
                    continue
                try:
                    folder = level.folder.child(name)
                except OSError as exc:
                    self._unlistable(ws, path, exc)
                    continue
                if (reason := self._own.refusal(folder.stat())) is not None:
                    folder.close()
                    self._refusals.report(FileRefused(Path(path), root, reason))
                    continue
                levels.append(_Level(folder, path, f"{level.prefix}{name}/", []))
                files += yield from self._listed(ws, real_root, levels[-1])
        finally:
            for level in levels:
                level.folder.close()
        log.debug(
            "watch_scan_finished",
            folder=str(root),
            files=files,
            seconds=round(time.monotonic() - started, 3),
        )

    def _listed(
        self, ws: WatchSettings, real_root: str, level: _Level
    ) -> Generator[FileSeen, None, int]:
        """The watched files of one folder; its subfolders to visit go to the level."""
        count = 0
        try:
            with level.folder.entries() as entries:
                for entry in entries:
                    rel = level.prefix + entry.name
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        continue
                    if is_dir:
                        if ws.recursive and matches(rel, ("*",), ws.exclude):
                            level.subfolders.append(entry.name)
                    elif matches(rel, ws.include, ws.exclude):
                        path = Path(os.path.join(level.path, entry.name))
                        st = lstat_or_none(path, functools.partial(level.folder.lstat, entry))
                        if st is None:
                            continue
                        reason = self._own.refusal(st)
                        found = (
                            classified(path, ws.path, "scan", st, real_root)
                            if reason is None
                            else FileRefused(path, ws.path, reason)
                        )
                        if isinstance(found, FileSeen):
                            self._refusals.cleared(found.path)
                            count += 1
                            yield found
                        else:
                            self._refusals.report(found)
        except OSError as exc:
            self._unlistable(ws, level.path, exc)
        return count

    def _unlistable(self, ws: WatchSettings, path: str, exc: OSError) -> None:
        if exc.errno in _SWAPPED and path != str(ws.path):
            # Listed as a folder, now a link or a file: not entered. Its own event and
            # the next scan report what it is now.
            log.warning("watch_folder_swapped", folder=str(ws.path), path=path, error=str(exc))
        elif path == str(ws.path) or isinstance(exc, FileNotFoundError):
            log.warning("watch_scan_failed", folder=str(ws.path), path=path, error=str(exc))
        else:
            reason = f"cannot list this folder: {exc.strerror or exc}"
            self._refusals.report(FileRefused(Path(path), ws.path, reason))
