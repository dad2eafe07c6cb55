"""The durable on-disk outbox: packages wait here between packaging and a confirmed delivery.

Owns the spool folder and its crash recovery; knows nothing of HTTP (that is ``deliver``).

Layout under the root folder (the runtime passes ``<state_dir>/outbox``)::

    tmp/<name>.<pid>.<random>.tmp         writes in progress; never read, discarded at open
    pending/<package_id>.json             exact bytes to POST, oldest first by mtime_ns
    held/<package_id>.json                exact bytes to POST once a person releases them
    delivered/<package_id>.json           receipt of a confirmed delivery
    rejected/<package_id>.json            the package, refused by the endpoint (400, 413, 415, 422)
    rejected/<package_id>.reason.json     why: http_status and the response text (capped)
    attempts/<package_id>.json            failed-attempt bookkeeping of a pending package
    corrupt/<name>                        files moved aside at open, for a human to inspect

File format. A package file holds the package body serialised deterministically:
``json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))`` as UTF-8,
and the body's ``package_id`` equals the file name's stem. Receipts, reasons and attempt
records are small JSON objects carrying ``"outbox_format": 1``:

- receipt: ``package_id``, ``http_status`` (int or null), ``detail``, ``confirmed_at``;
- reason: ``package_id``, ``http_status``, ``detail`` (capped), ``rejected_at``, and
  ``attempts`` (the rejected one included; absent in records of older versions);
- attempts: ``package_id``, ``attempts``, ``last_error``, ``failed_at`` (records of older
  versions may also hold ``next_attempt_at``, which is ignored).

Timestamps are RFC 3339 UTC with a ``Z``. Package ids are ``[A-Za-z0-9][A-Za-z0-9_.-]*``
(at most 200 characters, not ending in ``.reason``) so they are safe file names everywhere.

Invariants.

1. A file in ``pending/``, ``held/``, ``delivered/`` or ``rejected/`` is complete: every file is
   written in ``tmp/``, fsynced, then ``os.replace``-d into place (atomic on POSIX and
   Windows), and the target directory is fsynced (POSIX) before the call returns.
2. A package is in exactly one of pending, held, delivered, rejected. Moves between
   pending and rejected, and from held to pending (``release``), are single renames;
   confirm writes the receipt before unlinking the pending file, so a crash can leave
   both for a moment, and open resolves it (delivered wins).
3. A package leaves ``pending/`` only through ``confirm`` (after the endpoint confirmed it)
   or ``reject`` (after the endpoint refused it); delivery is therefore at least once, and
   the endpoint deduplicates by the ``Idempotency-Key`` header (= package_id).
4. ``spool`` returns only after the files and the directory are durable: the caller may
   record an acquisition as packaged only after ``spool`` returned.
5. A held package (spooled with ``Package.held``: its pixels may show burned-in text) is
   never sent: it waits in ``held/``, whole and durable like a pending one, until
   ``release`` (``acqharvest outbox release ID``, from any process) renames it into
   ``pending/`` at the back of the queue. The daemon never releases one itself.
6. Pending order is spool order and survives restarts: each file's mtime_ns is set to a
   strictly increasing stamp when it enters ``pending/`` (also on retry, which sends a
   package to the back of the queue); ties fall back to the name.

Crash windows and the recovery at ``Outbox.open``.

- During a write to ``tmp/`` or before its rename: the leftover in ``tmp/`` is deleted; it
  was never promised (``spool`` had not returned), so the caller harvests it again.
- After the rename, before the directory fsync: the file is in ``pending/`` whole or not
  at all (rename is atomic); the same as above if it is missing.
- After a POST succeeded, before the receipt: the package is still pending and is sent
  again; the endpoint answers 2xx or 409 for the same Idempotency-Key.
- After the receipt, before the pending unlink: both exist; the pending file is removed.
- Reject writes the reason first, then renames the package: a reason without its package
  is deleted (the package is still pending). Retry renames the package back, then deletes
  the reason: the same orphan rule applies.
- An attempts record without a pending package is deleted.
- A write that fails and whose temp file cannot be removed either (the folder went
  read-only in between) leaves it in ``tmp/`` only until the next write, which removes it.
- A crash in ``release`` leaves the package held or pending (one rename); released
  twice, the second finds it pending and says so.
- A pending or held file that is not valid JSON, whose ``package_id`` does not match its
  name or whose name is not ``<package_id>.json`` is moved to ``corrupt/`` with a warning naming
  it, so one bad file never becomes a crash loop.

Only one process may open the outbox with ``recover=True``: the daemon, which holds the
state dir's instance lock (``durable.InstanceLock``) first. Other processes open it with
``recover=False``: they see the same state, may ``retry_rejected`` and ``purge``
(the daemon never moves a rejected package, so the two never race on one), and never
delete another process's in-progress writes; ``status`` also passes ``create=False`` and
writes nothing at all. A pending package is never purged: it is the only copy of an
acquisition's metadata that has not been delivered.

- Purge deletes the rejected package first, then its reason: a crash between leaves an
  orphan reason, which the open deletes as above.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import structlog

from acqharvest.durable import StorageError, error_code, fsync_dir
from acqharvest.model import Package

OutboxState = Literal["pending", "held", "delivered", "rejected"]

FORMAT = 1
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
_REASON_SUFFIX = ".reason.json"
_DETAIL_CAP = 4096

log = structlog.get_logger(__name__)


class OutboxError(StorageError):
    """The outbox could not write or move a file (disk full, permissions, bad id)."""

    def __init__(self, message: str, path: Path | None = None, cause: BaseException | None = None):
        super().__init__(message, path or Path(), None if cause is None else error_code(cause))


@dataclass(frozen=True, slots=True)
class Problem:
    """An undelivered package: pending (maybe after failed attempts) or refused (rejected).

    ``summary`` lists only those that failed; ``entries`` lists all of them.
    """

    package_id: str
    state: OutboxState
    #: failed attempts of a pending package; of a rejected one, the attempts up to the
    #: rejection included (0 when its reason, written by an older version, did not say)
    attempts: int
    last_error: str | None
    #: RFC 3339 UTC time of the last failure or of the rejection.
    at: str | None
    #: when it entered the queue (spooled, or retried), in ns since the epoch
    queued_ns: int | None = None


@dataclass(frozen=True, slots=True)
class OutboxSummary:
    """Counts per state and the most recent problems, newest first."""

    pending: int
    delivered: int
    rejected: int
    corrupt: int
    problems: tuple[Problem, ...]
    #: held packages, waiting for ``acqharvest outbox release`` (each is also a problem).
    held: int = 0


@dataclass(frozen=True, slots=True)
class _Attempts:
    count: int
    last_error: str
    failed_at: str


def serialize(body: Mapping[str, Any]) -> bytes:
    """The exact bytes spooled and posted for a package body."""
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def _now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_id(package_id: str) -> None:
    if not _ID.fullmatch(package_id) or package_id.endswith(".reason"):
        raise OutboxError(f"invalid package_id {package_id!r}: not a safe file name")


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _delete_package(folder: Path, package_id: str) -> bool:
    """Delete ``folder/<package_id>.json``; False when it is not there."""
    package = folder / f"{package_id}.json"
    try:
        package.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise OutboxError(f"cannot delete {package}: {exc}", folder, exc) from exc
    return True


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _locked(method: _Method) -> _Method:
    """Run an Outbox method under its lock."""

    @functools.wraps(method)
    def wrapper(self: Outbox, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(_Method, wrapper)


class Outbox:
    """A spool folder; see the module docstring for the format and its guarantees."""

    def __init__(self, root: Path) -> None:
        # Use Outbox.open: it creates the folders and recovers from crashes.
        self.root = root
        self._tmp = root / "tmp"
        self._pending = root / "pending"
        self._held = root / "held"
        self._delivered = root / "delivered"
        self._rejected = root / "rejected"
        self._attempts_dir = root / "attempts"
        self._corrupt = root / "corrupt"
        self._last_stamp = 0
        #: mtime_ns of pending files by name, so listing stats only names it has not seen.
        self._stamps: dict[str, int] = {}
        self._attempts: dict[str, _Attempts] = {}
        #: Temp files whose removal failed (a read-only remount between create and unlink);
        #: removed before the next write instead of staying until the next start.
        self._undeleted_tmp: set[Path] = set()
        # The harvest thread spools while the delivery thread confirms and lists.
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, root: Path, *, recover: bool = True, create: bool = True) -> Outbox:
        """Create the folders, recover from a crash (when ``recover``) and load attempts.

        With ``create=False`` (and no ``recover``) nothing is written: ``acqharvest status``
        reads the outbox that way, beside a running daemon or without one.
        """
        outbox = cls(root)
        if create:
            outbox.ensure_folders()
        if recover:
            try:
                outbox._recover()
            except OSError as exc:
                raise OutboxError(f"cannot recover the outbox in {root}: {exc}", root, exc) from exc
        outbox._load_attempts()
        for name in outbox._pending_names():
            outbox._last_stamp = max(outbox._last_stamp, outbox._stamp_of(name))
        return outbox

    def ensure_folders(self) -> None:
        """Create the layout's folders that are missing (all of them, the first time)."""
        folders = (
            self._tmp,
            self._pending,
            self._held,
            self._delivered,
            self._rejected,
            self._attempts_dir,
            self._corrupt,
        )
        try:
            for folder in folders:
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(
                f"cannot create outbox folder under {self.root}: {exc}", self.root, exc
            ) from exc

    def _recover(self) -> None:
        discarded = 0
        for leftover in self._tmp.iterdir():
            _unlink_quietly(leftover)
            discarded += 1
        moved = 0
        removed = 0
        # a folder an older version never made: created here before it is read
        self._held.mkdir(exist_ok=True)
        for path in sorted(self._held.iterdir()):
            if (problem := self._validate_pending(path)) is not None:
                self._move_to_corrupt(path, problem)
                moved += 1
        for path in sorted(self._pending.iterdir()):
            problem = self._validate_pending(path)
            if problem is not None:
                self._move_to_corrupt(path, problem)
                moved += 1
            elif (self._delivered / path.name).exists():
                # Crash between the receipt write and the unlink in confirm().
                path.unlink()
                removed += 1
        for reason in self._rejected.glob("*" + _REASON_SUFFIX):
            package_id = reason.name[: -len(_REASON_SUFFIX)]
            if not (self._rejected / f"{package_id}.json").exists():
                reason.unlink()
        for record in self._attempts_dir.iterdir():
            if not (self._pending / record.name).exists():
                record.unlink()
        fsync_dir(self._pending)
        if discarded or moved or removed:
            log.info(
                "outbox_recovered",
                root=str(self.root),
                tmp_discarded=discarded,
                moved_to_corrupt=moved,
                already_delivered=removed,
            )

    def _validate_pending(self, path: Path) -> str | None:
        if not path.is_file() or not path.name.endswith(".json"):
            return "not a <package_id>.json file"
        stem = path.name[: -len(".json")]
        try:
            document = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            return f"not valid JSON ({exc})"
        if not isinstance(document, dict):
            return "not a JSON object"
        if document.get("package_id") != stem:
            return f"package_id {document.get('package_id')!r} does not match the file name"
        return None

    def _move_to_corrupt(self, path: Path, problem: str) -> None:
        target = self._corrupt / path.name
        if target.exists():
            target = self._corrupt / f"{path.name}.{time.time_ns()}"
        os.replace(path, target)
        log.warning(
            "outbox_corrupt_file",
            path=str(path),
            moved_to=str(target),
            problem=problem,
        )

    def _load_attempts(self) -> None:
        for record in self._attempts_dir.glob("*.json"):
            try:
                data = json.loads(record.read_bytes())
                self._attempts[record.name[: -len(".json")]] = _Attempts(
                    count=int(data["attempts"]),
                    last_error=str(data["last_error"]),
                    failed_at=str(data["failed_at"]),
                )
            except (OSError, ValueError, KeyError, TypeError):
                # Bookkeeping only: a damaged record just loses the attempt count.
                continue

    # ------------------------------------------------------------------ writing

    def _next_stamp(self) -> int:
        self._last_stamp = max(time.time_ns(), self._last_stamp + 1)
        return self._last_stamp

    def _discard_tmp(self, path: Path) -> None:
        try:
            _unlink_quietly(path)
        except OSError:
            self._undeleted_tmp.add(path)

    def _retry_undeleted_tmp(self) -> None:
        for path in list(self._undeleted_tmp):
            with contextlib.suppress(OSError):
                _unlink_quietly(path)
                self._undeleted_tmp.discard(path)

    def _write_tmp(self, label: str, data: bytes, stamp: int | None = None) -> Path:
        self._retry_undeleted_tmp()
        path = self._tmp / f"{label}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            with open(path, "xb") as handle:
                handle.write(data)
                handle.flush()
                if stamp is not None:
                    # by path: Windows has no utime on a file descriptor
                    os.utime(path, ns=(stamp, stamp))
                os.fsync(handle.fileno())
        except BaseException:
            self._discard_tmp(path)
            raise
        return path

    def _write_record(self, folder: Path, name: str, record: Mapping[str, Any]) -> None:
        """Atomically place a small JSON record in ``folder`` (without the dir fsync)."""
        data = json.dumps({"outbox_format": FORMAT, **record}, sort_keys=True).encode()
        tmp = self._write_tmp(name, data)
        try:
            os.replace(tmp, folder / name)
        except BaseException:
            self._discard_tmp(tmp)
            raise

    @_locked
    def spool(self, packages: Sequence[Package]) -> list[str]:
        """Durably add packages to ``pending/``; returns the ids newly spooled.

        A package already pending, delivered or rejected is skipped (a rejected one
        comes back only through ``retry_rejected``). Raises ``OutboxError`` naming the
        folder on disk-full or permission errors, leaving no partial file in pending.
        """
        fresh: list[tuple[str, bytes]] = []
        held = {package.package_id for package in packages if package.held}
        seen: set[str] = set()
        for package in packages:
            package_id = package.package_id
            _check_id(package_id)
            if package.body.get("package_id") != package_id:
                raise OutboxError(f"package {package_id}: body package_id does not match")
            if package_id in seen or self.state_of(package_id) is not None:
                continue
            seen.add(package_id)
            fresh.append((package_id, serialize(package.body)))
        if not fresh:
            return []

        written: list[tuple[str, Path, int]] = []
        try:
            for package_id, data in fresh:
                stamp = self._next_stamp()
                written.append((package_id, self._write_tmp(package_id, data, stamp), stamp))
        except OSError as exc:
            for _, path, _ in written:
                self._discard_tmp(path)
            raise OutboxError(
                f"cannot write package to {self._tmp}: {exc}", self._tmp, exc
            ) from exc

        spooled: list[str] = []
        try:
            for package_id, path, stamp in written:
                if package_id in held:
                    os.replace(path, self._held / f"{package_id}.json")
                else:
                    os.replace(path, self._pending / f"{package_id}.json")
                    self._stamps[f"{package_id}.json"] = stamp
                spooled.append(package_id)
            fsync_dir(self._pending)
            if held:
                fsync_dir(self._held)
        except OSError as exc:
            for _, path, _ in written:
                self._discard_tmp(path)
            raise OutboxError(
                f"cannot move packages into {self._pending}: {exc}", self._pending, exc
            ) from exc
        for package_id in spooled:
            log.info("package_spooled", package_id=package_id, held=package_id in held)
        return spooled

    @_locked
    def release(self, package_id: str) -> bool:
        """Put a held package at the end of the delivery queue; False if it is not held."""
        if not self._requeue(package_id, self._held):
            return False
        log.info("package_released", package_id=package_id)
        return True

    def _requeue(self, package_id: str, folder: Path, leftover: Path | None = None) -> bool:
        """Move a package from ``folder`` to the end of the pending queue (``leftover``, a
        record beside it, deleted); False if ``folder`` does not hold it."""
        _check_id(package_id)
        source = folder / f"{package_id}.json"
        if not source.exists():
            return False
        stamp = self._next_stamp()
        try:
            os.utime(source, ns=(stamp, stamp))
            os.replace(source, self._pending / f"{package_id}.json")
            fsync_dir(self._pending)
            if leftover is not None:
                _unlink_quietly(leftover)
            fsync_dir(folder)
        except OSError as exc:
            raise OutboxError(
                f"cannot move {package_id} back into {self._pending}: {exc}", self._pending, exc
            ) from exc
        self._stamps[f"{package_id}.json"] = stamp
        return True

    @_locked
    def confirm(self, package_id: str, http_status: int | None, detail: str) -> None:
        """Record a confirmed delivery: write the receipt, then drop the pending file."""
        _check_id(package_id)
        receipt = {
            "package_id": package_id,
            "http_status": http_status,
            "detail": detail[:_DETAIL_CAP],
            "confirmed_at": _now_rfc3339(),
        }
        self._leave_pending(package_id, self._delivered, f"{package_id}.json", receipt)

    @_locked
    def reject(self, package_id: str, http_status: int | None, detail: str) -> None:
        """Move a pending package to ``rejected/`` with the endpoint's reason beside it."""
        _check_id(package_id)
        if not (self._pending / f"{package_id}.json").exists():
            raise OutboxError(f"cannot reject {package_id}: it is not pending in {self._pending}")
        previous = self._attempts.get(package_id)
        reason = {
            "package_id": package_id,
            "http_status": http_status,
            "detail": detail[:_DETAIL_CAP],
            "rejected_at": _now_rfc3339(),
            "attempts": (previous.count if previous else 0) + 1,
        }
        self._leave_pending(package_id, self._rejected, package_id + _REASON_SUFFIX, reason)

    def _leave_pending(
        self, package_id: str, folder: Path, record_name: str, record: Mapping[str, Any]
    ) -> None:
        """Write the record into ``folder``, then take the package out of ``pending/``.

        Into ``rejected/`` the package moves beside its reason; into ``delivered/`` only
        the receipt stays and the package is deleted.
        """
        pending = self._pending / f"{package_id}.json"
        keep = folder == self._rejected
        try:
            self._write_record(folder, record_name, record)
            if keep:
                os.replace(pending, folder / f"{package_id}.json")
            fsync_dir(folder)
            if not keep:
                _unlink_quietly(pending)
            self._forget_attempts(package_id)
            fsync_dir(self._pending)
        except OSError as exc:
            raise OutboxError(
                f"cannot record {package_id} in {folder}: {exc}", folder, exc
            ) from exc
        self._stamps.pop(pending.name, None)

    @_locked
    def retry_rejected(self, package_id: str) -> bool:
        """Put a rejected package back at the end of the queue; False if it is not rejected."""
        _check_id(package_id)
        reason = self._rejected / (package_id + _REASON_SUFFIX)
        return self._requeue(package_id, self._rejected, leftover=reason)

    @_locked
    def purge(self, package_id: str) -> bool:
        """Delete a rejected (with its reason) or held package for good; False if it is
        neither.

        Never a pending one: it has not been delivered yet. A held one is there because a
        person must decide; deleting it is one of their answers (pixels that cannot go out).
        """
        _check_id(package_id)
        if _delete_package(self._held, package_id):
            fsync_dir(self._held)
            return True
        if not _delete_package(self._rejected, package_id):
            return False
        try:
            _unlink_quietly(self._rejected / (package_id + _REASON_SUFFIX))
            fsync_dir(self._rejected)
        except OSError as exc:
            # the package is gone; its reason is an orphan that the next open removes
            log.warning("outbox_reason_not_removed", package_id=package_id, error=str(exc))
        return True

    @_locked
    def note_failure(self, package_id: str, detail: str) -> None:
        """Count a failed attempt and remember its error (see ``attempts``).

        Best effort: a failure to persist the record is logged, never raised, because
        the package itself is safe in ``pending/``.
        """
        _check_id(package_id)
        previous = self._attempts.get(package_id)
        record = _Attempts(
            count=(previous.count if previous else 0) + 1,
            last_error=detail[:_DETAIL_CAP],
            failed_at=_now_rfc3339(),
        )
        self._attempts[package_id] = record
        try:
            self._write_record(
                self._attempts_dir,
                f"{package_id}.json",
                {
                    "package_id": package_id,
                    "attempts": record.count,
                    "last_error": record.last_error,
                    "failed_at": record.failed_at,
                },
            )
        except OSError as exc:
            log.warning(
                "outbox_attempts_not_saved",
                package_id=package_id,
                folder=str(self._attempts_dir),
                error=str(exc),
            )

    def _forget_attempts(self, package_id: str) -> None:
        self._attempts.pop(package_id, None)
        _unlink_quietly(self._attempts_dir / f"{package_id}.json")

    @_locked
    def prune_delivered(self, older_than_seconds: float) -> int:
        """Delete receipts older than the given age; returns how many were removed.

        A pruned id is no longer known as delivered, so spooling it again sends it again
        (the endpoint deduplicates by Idempotency-Key).
        """
        horizon = time.time() - older_than_seconds
        removed = 0
        for receipt in self._delivered.glob("*.json"):
            try:
                if receipt.stat().st_mtime < horizon:
                    receipt.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    # ------------------------------------------------------------------ reading

    def _pending_names(self) -> list[str]:
        try:
            names = os.listdir(self._pending)
        except FileNotFoundError:
            return []  # opened without creating the folders
        return [name for name in names if name.endswith(".json")]

    def _stamp_of(self, name: str) -> int:
        stamp = self._stamps.get(name)
        if stamp is None:
            stamp = (self._pending / name).stat().st_mtime_ns
            self._stamps[name] = stamp
        return stamp

    @_locked
    def pending(self) -> list[str]:
        """Pending package ids, oldest first (spool order, stable across restarts)."""
        names = self._pending_names()
        present = set(names)
        for stale in [name for name in self._stamps if name not in present]:
            del self._stamps[stale]
        ordered: list[tuple[int, str]] = []
        for name in names:
            try:
                ordered.append((self._stamp_of(name), name))
            except FileNotFoundError:
                continue  # confirmed or rejected by another process meanwhile
        ordered.sort()
        return [name[: -len(".json")] for _, name in ordered]

    @_locked
    def oldest_pending_at(self) -> float | None:
        """When the oldest pending package entered ``pending/`` (Unix time); None if none did."""
        for package_id in self.pending():
            with contextlib.suppress(FileNotFoundError):
                return self._stamp_of(f"{package_id}.json") / 1e9
        return None

    @_locked
    def rejected(self) -> list[str]:
        """Rejected package ids, sorted by id."""
        return sorted(
            path.name[: -len(".json")]
            for path in self._rejected.glob("*.json")
            if not path.name.endswith(_REASON_SUFFIX)
        )

    @_locked
    def held(self) -> list[str]:
        """Held package ids, sorted by id (none in an outbox of an older version)."""
        return sorted(path.name[: -len(".json")] for path in self._held.glob("*.json"))

    @_locked
    def body(self, package_id: str) -> bytes:
        """The spooled bytes of a pending (or else held, or rejected) package."""
        _check_id(package_id)
        for folder in (self._pending, self._held, self._rejected):
            try:
                return (folder / f"{package_id}.json").read_bytes()
            except FileNotFoundError:
                continue
        raise OutboxError(
            f"package {package_id} is neither pending, held nor rejected in {self.root}"
        )

    @_locked
    def state_of(self, package_id: str) -> OutboxState | None:
        """Which state folder holds the package, or None when the outbox does not know it."""
        _check_id(package_id)
        name = f"{package_id}.json"
        if (self._pending / name).exists():
            return "pending"
        if (self._held / name).exists():
            return "held"
        if (self._delivered / name).exists():
            return "delivered"
        if (self._rejected / name).exists():
            return "rejected"
        return None

    @_locked
    def attempts(self, package_id: str) -> int:
        """Failed attempts of a pending package so far (survives restarts)."""
        record = self._attempts.get(package_id)
        return record.count if record else 0

    @_locked
    def summary(self, limit: int = 20) -> OutboxSummary:
        """Counts per state and up to ``limit`` recent problems, newest first."""
        pending = self.pending()
        problems: list[Problem] = []
        for package_id in pending:
            if package_id in self._attempts and (entry := self._pending_entry(package_id)):
                problems.append(entry)
        rejected = self.rejected()
        for package_id in rejected:
            problems.append(self._rejection(package_id))
        held = self.held()
        problems.extend(self._holding(package_id) for package_id in held)
        problems.sort(key=lambda problem: problem.at or "", reverse=True)
        return OutboxSummary(
            pending=len(pending),
            delivered=sum(1 for _ in self._delivered.glob("*.json")),
            rejected=len(rejected),
            corrupt=sum(1 for _ in self._corrupt.glob("*")),
            problems=tuple(problems[:limit]),
            held=len(held),
        )

    def _holding(self, package_id: str) -> Problem:
        """A held package as ``status`` shows it: why, and how to let it go."""
        path = self._held / f"{package_id}.json"
        try:
            at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            record = json.loads(path.read_bytes())["provenance"]["deidentification"]
            why = f"burned-in annotation {record.get('burned_in_annotation', 'unknown')}"
        except (OSError, ValueError, KeyError, TypeError):
            return Problem(package_id, "held", 0, "held; release: acqharvest outbox release", None)
        stamp = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        detail = f"{why}; deliver with: acqharvest outbox release {package_id}"
        return Problem(package_id, "held", 0, detail, stamp)

    @_locked
    def entries(self) -> list[Problem]:
        """Every undelivered package: pending ones oldest first, then held and rejected ones
        by id."""
        listed = [self._pending_entry(package_id) for package_id in self.pending()]
        listed += [self._holding(package_id) for package_id in self.held()]
        listed += [self._rejection(package_id) for package_id in self.rejected()]
        return [entry for entry in listed if entry is not None]

    @_locked
    def entry(self, package_id: str) -> Problem | None:
        """The record of one undelivered package; None when it is delivered or unknown."""
        state = self.state_of(package_id)
        if state == "pending":
            return self._pending_entry(package_id)
        if state == "held":
            return self._holding(package_id)
        if state == "rejected":
            return self._rejection(package_id)
        return None

    def _pending_entry(self, package_id: str) -> Problem | None:
        try:
            queued = self._stamp_of(f"{package_id}.json")
        except FileNotFoundError:
            return None  # delivered or rejected meanwhile
        record = self._attempts.get(package_id)
        if record is None:
            return Problem(package_id, "pending", 0, None, None, queued)
        return Problem(
            package_id, "pending", record.count, record.last_error, record.failed_at, queued
        )

    def _rejection(self, package_id: str) -> Problem:
        queued: int | None
        try:
            queued = (self._rejected / f"{package_id}.json").stat().st_mtime_ns
        except OSError:
            queued = None
        try:
            reason = json.loads((self._rejected / (package_id + _REASON_SUFFIX)).read_bytes())
            status = reason.get("http_status")
            detail = str(reason.get("detail", ""))
            error = f"HTTP {status}: {detail}" if status is not None else detail
            attempts = int(reason.get("attempts", 0))
            return Problem(
                package_id, "rejected", attempts, error, reason.get("rejected_at"), queued
            )
        except (OSError, ValueError, AttributeError, TypeError):
            return Problem(package_id, "rejected", 0, "reason unknown", None, queued)
