"""What the platform allows a watcher: the inotify watch budget, and network file systems.

Both decide how a folder can be watched (see ``acqharvest.watch``): when the kernel refuses
one more inotify watch, an ``auto`` folder falls back to reconciliation scans; on a network
share native events miss what other hosts write, which ``acqharvest doctor`` reports.
Read-only: the budget is probed with a watch of our own, closed at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import sys
from pathlib import Path

import psutil

_IN_ONLYDIR = 0x01000000
_IN_DONT_FOLLOW = 0x02000000
_IN_ATTRIB = 0x00000004


def watch_limit() -> int | None:
    """The inotify watch limit for this user (``fs.inotify.max_user_watches``), if known."""
    for source in ("/proc/sys/user/max_inotify_watches", "/proc/sys/fs/inotify/max_user_watches"):
        with contextlib.suppress(OSError, ValueError):
            return int(Path(source).read_text())
    return None


#: file system types (Linux ``/proc/self/mountinfo`` names) whose native change events miss
#: what other hosts write: the share's server, not this kernel, sees those writes.
_NETWORK_FILESYSTEMS = frozenset(
    {
        "9p",
        "afs",
        "beegfs",
        "ceph",
        "cifs",
        "davfs",
        "glusterfs",
        "gpfs",
        "lustre",
        "ncpfs",
        "nfs",
        "nfs4",
        "smb3",
        "smbfs",
        "sshfs",
        # macOS names (psutil.disk_partitions): Apple Filing Protocol, WebDAV
        "afpfs",
        "webdav",
    }
)
_DRIVE_REMOTE = 4


def network_filesystem(folder: Path) -> str | None:
    """The network file system ``folder`` lives on (``"cifs"``, ``"nfs4"``, ``"network
    drive"``), or None when it is local or the platform cannot tell.

    Native events on such a folder report only what this host writes there; files an
    instrument PC writes to the share appear through reconciliation scans or polling.
    """
    real = os.path.realpath(folder)
    if sys.platform == "win32":
        if real.startswith("\\\\"):  # a UNC path \\server\share
            return "network share"
        drive = os.path.splitdrive(real)[0] + "\\"
        kernel32 = ctypes.WinDLL("kernel32")
        drive_type = kernel32.GetDriveTypeW(ctypes.c_wchar_p(drive))
        return "network drive" if drive_type == _DRIVE_REMOTE else None
    else:  # an else, not code after the return: mypy checks each platform's part
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            # not Linux: macOS and the BSDs list their mounts through getfsstat
            fstype = containing_mount(real, _partitions())
        else:
            fstype = mount_fstype(real, mountinfo)
        # FUSE file systems are named fuse.<name> (fuse.sshfs); kernel ones as they are
        if fstype is None or fstype.removeprefix("fuse.") not in _NETWORK_FILESYSTEMS:
            return None
        return fstype


def _partitions() -> list[tuple[str, str]]:
    """(mount point, file system type) of every mount, as psutil reads them."""
    try:
        return [(part.mountpoint, part.fstype) for part in psutil.disk_partitions(all=True)]
    except (OSError, RuntimeError):
        return []  # unknown: the folder is taken as local, as before this was asked


def mount_fstype(real_path: str, mountinfo: str) -> str | None:
    """The file system type of the mount holding ``real_path``, from ``mountinfo`` (the
    text of ``/proc/self/mountinfo``)."""
    mounts = []
    for line in mountinfo.splitlines():
        fields, _, rest = line.partition(" - ")
        parts, tail = fields.split(), rest.split()
        if len(parts) < 5 or not tail:
            continue
        # octal escapes for space, tab, newline and backslash in the mount point
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[4])
        mounts.append((point, tail[0]))
    return containing_mount(real_path, mounts)


def containing_mount(real_path: str, mounts: list[tuple[str, str]]) -> str | None:
    """The file system type of the longest mount point holding ``real_path``, of
    ``mounts`` as (mount point, type); a later mount on the same point hides an earlier."""
    best: tuple[int, str] | None = None
    for point, fstype in mounts:
        inside = real_path == point or real_path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), fstype)
    return None if best is None else best[1]


def watch_budget_exhausted(folder: str) -> bool:
    """True when the kernel refuses this user one more inotify watch (ENOSPC).

    Watchdog skips subfolders it cannot watch silently; asking for one watch of our own
    (then closing it) is the one way to know. Linux only; elsewhere always False.
    """
    if not sys.platform.startswith("linux"):
        return False
    else:  # an else, not code after the return: mypy then checks it as Linux-only
        libc = ctypes.CDLL(None, use_errno=True)
        descriptor = libc.inotify_init1(os.O_CLOEXEC)
        if descriptor < 0:
            return False  # out of inotify instances: that says nothing about watches
        try:
            mask = _IN_ATTRIB | _IN_ONLYDIR | _IN_DONT_FOLLOW
            if libc.inotify_add_watch(descriptor, os.fsencode(folder), mask) >= 0:
                return False
            return ctypes.get_errno() == errno.ENOSPC
        finally:
            os.close(descriptor)
