"""What the conformance checks observe an adapter with: deadlines, writes and handles.

An adapter must leave the acquisition software's files alone, so ``test_read_only`` looks
three ways, each seeing what the others miss: a snapshot of the tree around the case
(:func:`case_reach`, :func:`tree_snapshot`) sees any change left there, native code's
included; the audit hook (:func:`writes_recorded`) sees every write made through Python
during the call, anywhere, even one undone before it returns; the handle table
(:func:`open_handles`) sees handles left open, and on Linux which of them can write.

These are plain functions so a vendor can use them in their own tests too.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Hung(Exception):
    """The call did not return within its deadline."""


@dataclass(slots=True)
class _Outcome(Generic[T]):
    value: T | None = None
    error: BaseException | None = None
    done: bool = False


def call_with_deadline(call: Callable[[], T], seconds: float, what: str) -> T:
    """Run ``call`` on a daemon thread; return its result, re-raise its exception.

    Raises :class:`Hung` (naming ``what``) when it has not finished after ``seconds``.
    The stuck thread cannot be stopped from Python; being a daemon thread, it does not
    keep the test session alive, and the failure says which input hangs.
    """
    outcome: _Outcome[T] = _Outcome()

    def run() -> None:
        try:
            outcome.value = call()
        except BaseException as error:  # noqa: BLE001 - handed to the caller as is
            outcome.error = error
        outcome.done = True

    worker = threading.Thread(target=run, name=f"conformance: {what}", daemon=True)
    worker.start()
    worker.join(seconds)
    if not outcome.done:
        raise Hung(f"{what} did not return within {seconds:g} s")
    if outcome.error is not None:
        raise outcome.error
    return outcome.value  # type: ignore[return-value]


# ---------------------------------------------------------------- the file system around a case


@dataclass(frozen=True, slots=True)
class PathState:
    """What a snapshot knows of one path: its kind, size and mtime, and maybe its content."""

    kind: str  # "file", "dir" or "other"
    size: int
    mtime_ns: int
    #: sha256 of the content, for the files the snapshot was asked to hash.
    sha256: str | None = None


def case_reach(files: Sequence[Path], samples_root: Path) -> Path:
    """The tree an adapter reading ``files`` is checked not to write in.

    The parent of the folder holding the files (the folder an adapter's ``../`` companions
    live in, so the one it could reach by design), or that folder itself when its parent
    lies outside ``samples_root``: the kit never walks above what the case gave it.
    """
    folder = Path(os.path.commonpath([os.path.abspath(path.parent) for path in files]))
    root = Path(os.path.abspath(samples_root))
    parent = folder.parent
    return parent if parent == root or root in parent.parents else folder


def tree_snapshot(root: Path, hashed: Iterable[Path] = ()) -> dict[str, PathState]:
    """Every folder and file under ``root`` (itself included); ``hashed`` files by content too.

    Only ``hashed`` are read: the rest is stat'ed, so a whole sample tree stays cheap. A write
    moves a file's size or mtime, and creating or removing a file moves its folder's mtime;
    the hashes catch a same-size rewrite of the inputs within one tick of the file system's
    clock, which mtimes alone can miss. Symbolic links are recorded, never followed.
    """
    snapshot: dict[str, PathState] = {}
    for folder, dirs, names in os.walk(root):
        for path in (folder, *(os.path.join(folder, name) for name in (*dirs, *names))):
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue  # removed while walking: the next snapshot reports it
            snapshot[path] = PathState(_kind(info.st_mode), info.st_size, info.st_mtime_ns)
    for file in hashed:
        path = os.path.abspath(file)
        info = os.stat(path)
        snapshot[path] = PathState("file", info.st_size, info.st_mtime_ns, _sha256(path))
    return snapshot


def _kind(mode: int) -> str:
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def snapshot_changes(before: dict[str, PathState], after: dict[str, PathState]) -> list[str]:
    """Human-readable differences between two snapshots (empty when equal)."""
    changes = [f"created {name}" for name in sorted(after.keys() - before.keys())]
    changes += [f"removed {name}" for name in sorted(before.keys() - after.keys())]
    for name in sorted(before.keys() & after.keys()):
        old, new = before[name], after[name]
        if old.kind != new.kind:
            changes.append(f"{name} changed from a {old.kind} to a {new.kind}")
        elif old.kind == "dir" and (old.size, old.mtime_ns) != (new.size, new.mtime_ns):
            changes.append(f"entries of folder {name} changed (a file created and removed?)")
        elif (old.size, old.sha256) != (new.size, new.sha256):
            changes.append(f"content of {name} changed")
        elif old.mtime_ns != new.mtime_ns:
            changes.append(f"mtime of {name} changed")
    return changes


# ---------------------------------------------------------------- writes, as Python makes them

#: ``open`` flags that let a handle change or create a file.
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
#: audit events (PEP 578) that change the file system without opening a file for writing.
_MUTATIONS = frozenset(
    {
        "os.chmod",
        "os.chown",
        "os.link",
        "os.mkdir",
        "os.remove",
        "os.rename",
        "os.rmdir",
        "os.symlink",
        "os.truncate",
        "os.utime",
        "shutil.rmtree",
    }
)
_TWO_PATHS = frozenset({"os.link", "os.rename", "os.symlink"})
#: the lists of the :func:`writes_recorded` blocks running now.
_recorders: list[list[str]] = []
_hook_lock = threading.Lock()
_hooked = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _recorders:  # the hook stays for the process's life: keep the idle case cheap
        return
    if event == "open":
        path, mode, flags = args
        if not (isinstance(flags, int) and flags & _WRITE_FLAGS):
            return
        targets: tuple[Any, ...] = (path,)
        found = f"opened {path} for writing (mode {mode or oct(flags)})"
    elif event in _MUTATIONS:
        targets = args[:2] if event in _TWO_PATHS else args[:1]
        found = f"{event}({', '.join(map(str, targets))})"
    else:
        return
    # the import system writes bytecode caches for modules first imported during the call
    if any("__pycache__" in str(target) for target in targets):
        return
    for recorder in _recorders:
        recorder.append(found)


@contextmanager
def writes_recorded() -> Iterator[list[str]]:
    """Collect, while the block runs, every file write this process makes through Python.

    Anywhere, temporary folders included, and from any thread: opening a file with write,
    append, create or truncate flags, and removing, renaming, linking, truncating or
    re-permissioning paths (the ``open`` and ``os.*`` audit events of PEP 578). Native code
    that calls the C library directly is not seen here; :func:`tree_snapshot` and
    :func:`open_handles` see what it leaves behind. Writes of ``__pycache__`` bytecode by
    the import system are not counted.
    """
    global _hooked
    with _hook_lock:
        if not _hooked:
            sys.addaudithook(_audit)  # audit hooks cannot be removed: installed once
            _hooked = True
    found: list[str] = []
    _recorders.append(found)
    try:
        yield found
    finally:
        _recorders.remove(found)


# ---------------------------------------------------------------- handles


@dataclass(frozen=True, slots=True)
class Handle:
    """One open handle of this process: the path it points to, and whether it may write."""

    path: str
    #: None where the platform does not say (psutil outside Linux).
    writable: bool | None


_PROC_FD = Path("/proc/self/fd")


def handles_observable() -> bool:
    """True when :func:`open_handles` can see this process's handles here."""
    if sys.platform.startswith("linux") and _PROC_FD.is_dir():
        return True
    try:
        import psutil  # type: ignore[import-untyped,import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


def open_handles() -> Counter[Handle]:
    """The file handles this process holds open right now, with how many of each.

    Counted, not a set: a handle an earlier call leaked must not hide the next one. On
    Linux it reads ``/proc/self/fd`` and each descriptor's access mode from
    ``/proc/self/fdinfo``; elsewhere it asks psutil (when installed), which does not tell
    a writing handle from a reading one on every platform.
    """
    if sys.platform.startswith("linux") and _PROC_FD.is_dir():
        handles: Counter[Handle] = Counter()
        # listed in full first: descriptors opened while reading fdinfo must not be listed
        for fd in os.listdir(_PROC_FD):
            try:
                target = os.readlink(_PROC_FD / fd)
                info = Path(f"/proc/self/fdinfo/{fd}").read_text(encoding="ascii")
            except OSError:
                continue  # closed between listing and reading (the listing's own, too)
            if target.startswith("/"):  # a path, not a pipe, socket or anonymous inode
                handles[Handle(target, _fdinfo_writable(info))] += 1
        return handles
    import psutil  # type: ignore[import-untyped,import-not-found,unused-ignore]

    return Counter(
        Handle(str(item.path), _psutil_writable(item)) for item in psutil.Process().open_files()
    )


def _psutil_writable(item: Any) -> bool | None:
    mode = getattr(item, "mode", None)  # psutil gives the mode on Linux only
    return None if mode is None else mode != "r"


def _fdinfo_writable(info: str) -> bool:
    for line in info.splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
    return False


def handles_left(before: Counter[Handle]) -> list[str]:
    """The handles open now that were not in ``before``, described; sorted."""
    return sorted(
        f"{handle.path} (open for writing)" if handle.writable else handle.path
        for handle in open_handles() - before
    )
