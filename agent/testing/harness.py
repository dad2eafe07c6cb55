"""What the conformance checks observe an adapter with: deadlines, folder snapshots, handles.

These are plain functions so a vendor can use them in their own tests too.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

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


#: (size, mtime_ns, sha256) of one file.
FileState = tuple[int, int, str]


def folder_snapshot(folders: Iterable[Path]) -> dict[str, FileState]:
    """Names, sizes, mtimes and content hashes of every file directly in ``folders``."""
    snapshot: dict[str, FileState] = {}
    for folder in sorted(set(folders)):
        for path in sorted(folder.iterdir()):
            if path.is_file():
                stat = path.stat()
                digest = hashlib.sha256()
                with path.open("rb") as handle:
                    while chunk := handle.read(1 << 20):
                        digest.update(chunk)
                snapshot[str(path)] = (stat.st_size, stat.st_mtime_ns, digest.hexdigest())
    return snapshot


def snapshot_changes(before: dict[str, FileState], after: dict[str, FileState]) -> list[str]:
    """Human-readable differences between two snapshots (empty when equal)."""
    changes = [f"created {name}" for name in sorted(after.keys() - before.keys())]
    changes += [f"removed {name}" for name in sorted(before.keys() - after.keys())]
    for name in sorted(before.keys() & after.keys()):
        (size0, mtime0, hash0), (size1, mtime1, hash1) = before[name], after[name]
        if hash0 != hash1 or size0 != size1:
            changes.append(f"content of {name} changed")
        elif mtime0 != mtime1:
            changes.append(f"mtime of {name} changed")
    return changes


def open_files_supported() -> bool:
    """True when :func:`open_files` can see this process's handles here."""
    if sys.platform.startswith("linux") and Path("/proc/self/fd").is_dir():
        return True
    try:
        import psutil  # type: ignore[import-untyped,import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


def open_files() -> Counter[str]:
    """Paths of the regular files this process holds open right now, with how many handles.

    Counted, not a set: a handle an earlier call leaked must not hide the next one.
    Reads ``/proc/self/fd`` on Linux and uses psutil elsewhere (when installed).
    """
    if sys.platform.startswith("linux") and Path("/proc/self/fd").is_dir():
        paths: Counter[str] = Counter()
        for entry in os.scandir("/proc/self/fd"):
            try:
                target = os.readlink(entry.path)
            except OSError:
                continue  # closed between listing and reading: not open any more
            if target.startswith("/"):
                paths[target] += 1
        return paths
    import psutil  # type: ignore[import-untyped,import-not-found,unused-ignore]

    return Counter(str(item.path) for item in psutil.Process().open_files())


def handles_left_on(paths: Iterable[Path], before: Counter[str]) -> list[str]:
    """Which of ``paths`` have more handles open now than in the ``before`` count."""
    now = open_files() - before
    wanted = {str(path.resolve()) for path in paths} | {str(path) for path in paths}
    return sorted(set(now) & wanted)
