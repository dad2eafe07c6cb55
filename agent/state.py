"""The seen-files registry: which file versions were packaged, under which acquisition.

SQLite (stdlib) in WAL mode under the state dir. It lets reconciliation scans after a
restart skip files already harvested, lets a late DICOM instance rejoin its series, and
gives ``replaces`` its value. It is separate from the outbox: a crash between spooling a
package and recording it here only makes the next start rebuild the same package, whose
deterministic id the outbox already holds.

A database found corrupt when the daemon opens it is renamed aside
(``state.sqlite3.corrupt-<UTC time>``, with its ``-wal``/``-shm`` files) and a new, empty
one is created: every file in the watched folders is then read and packaged again. A
package whose receipt the outbox still keeps (``delivered/``, 90 days) is not sent again;
an older one is, and the endpoint deduplicates it by ``Idempotency-Key``. Nothing is lost,
and a damaged registry never becomes a crash loop.

Paths and acquisition keys are stored through ``pathtext.to_sql``: TEXT as they are, or a
BLOB of the name's bytes when it is not valid UTF-8 (a Latin-1 name from an old instrument
PC), so every name is kept exactly; failure reasons are stored in the percent form.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from acqharvest.durable import StorageError, error_code
from acqharvest.model import ProbedFile
from acqharvest.pathtext import escape, from_sql, to_sql

_CORRUPT = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})
_log = structlog.get_logger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    root TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    file_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    acquisition_key TEXT NOT NULL,
    package_id TEXT NOT NULL,
    harvested_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_key ON files (acquisition_key);
CREATE TABLE IF NOT EXISTS acquisitions (
    key TEXT PRIMARY KEY,
    adapter TEXT,
    package_id TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS identity_mismatches (
    acquisition_key TEXT PRIMARY KEY,
    package_id TEXT NOT NULL,
    path TEXT NOT NULL,
    mismatches TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL,
    final INTEGER NOT NULL
);
"""


def same_file(recorded: str, seen: str) -> bool:
    """Whether two identities (``device:inode:ctime_ns``, see watch) name one unchanged file.

    The ctime must match, and so must the inode on the same device. On another device (a
    remount) inode numbers may be renumbered (SMB), so the ctime alone decides. Identities
    recorded before they held a ctime compare device and inode only.
    """
    old, new = recorded.split(":"), seen.split(":")
    if len(old) < 3 or len(new) < 3:
        return old[:2] == new[:2]
    if old[2] != new[2]:
        return False
    return old[0] != new[0] or old[1] == new[1]


@dataclass(frozen=True, slots=True)
class HarvestedFile:
    path: Path
    root: Path
    size: int
    mtime_ns: int
    file_id: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Failure:
    path: Path
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class IdentityMismatch:
    """The last package of an acquisition whose file reports another instrument."""

    path: Path
    package_id: str
    #: ``provenance.identity_check.mismatches``: field, configured, reported
    mismatches: list[dict[str, str]]
    at: float


class StateError(StorageError):
    """The registry cannot be opened or written; names the database file."""

    def __init__(self, message: str, path: Path, cause: sqlite3.Error | OSError) -> None:
        super().__init__(message, path, error_code(cause))


class State:
    """Registry of harvested file versions and acquisitions. One thread at a time."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False) -> State:
        """Open (or create) the registry; a writable open moves a corrupt database aside."""
        try:
            return cls(_connect(path, readonly), path)
        except sqlite3.DatabaseError as error:
            if readonly or error_code(error) not in _CORRUPT:
                raise StateError(
                    f"{path}: cannot open the state database: {error}", path, error
                ) from error
            aside = _move_aside(path)
            _log.error(
                "state_database_corrupt",
                path=str(path),
                moved_to=str(aside),
                error=str(error),
                effect="a new registry was created; files already harvested are read again; "
                "packages the outbox has receipts for are not sent again",
            )
        try:
            return cls(_connect(path, readonly), path)
        except sqlite3.DatabaseError as error:
            raise StateError(
                f"{path}: cannot create the state database: {error}", path, error
            ) from error
        except OSError as error:
            raise StateError(
                f"{path}: cannot create the state database: {error}", path, error
            ) from error

    @property
    def file_id(self) -> tuple[int, int] | None:
        """(device, inode) of the database file now at ``path``; None when it is gone."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def close(self) -> None:
        self._db.close()

    def is_done(self, path: Path, size: int, mtime_ns: int, file_id: str | None = None) -> bool:
        """True when this version of the file was packaged, or failed for good.

        Size and mtime must match; so must ``file_id`` when given (see ``same_file``): a
        file replaced by another of the same size and mtime is not the version packaged.
        """
        key = (to_sql(str(path)), size, mtime_ns)
        row = self._db.execute(
            "SELECT file_id FROM files WHERE path = ? AND size = ? AND mtime_ns = ?", key
        ).fetchone()
        if row is not None and (file_id is None or same_file(str(row[0]), file_id)):
            return True
        failed = self._db.execute(
            "SELECT 1 FROM failures WHERE path = ? AND size = ? AND mtime_ns = ? AND final", key
        ).fetchone()
        return failed is not None

    def refresh_unchanged(self, probed: ProbedFile) -> bool:
        """Record a new identity for a file whose content is the version packaged; True if so.

        A touched, copied-over or remounted file looks changed until its sha256 is known;
        when that matches, nothing is packaged again.
        """
        settled = probed.settled
        row = (
            settled.mtime_ns,
            settled.file_id,
            to_sql(str(settled.path)),
            settled.size,
            probed.sha256,
        )
        try:
            with self._db:
                updated = self._db.execute(
                    "UPDATE files SET mtime_ns = ?, file_id = ? "
                    "WHERE path = ? AND size = ? AND sha256 = ?",
                    row,
                ).rowcount
        except sqlite3.Error as error:
            raise StateError(
                f"{self.path}: cannot record a file: {error}", self.path, error
            ) from error
        return updated > 0

    def package_of(self, acquisition_key: str) -> str | None:
        row = self._db.execute(
            "SELECT package_id FROM acquisitions WHERE key = ?", (to_sql(acquisition_key),)
        ).fetchone()
        return None if row is None else str(row[0])

    def members_of(self, acquisition_key: str) -> list[HarvestedFile]:
        rows = self._db.execute(
            "SELECT path, root, size, mtime_ns, file_id, sha256 FROM files "
            "WHERE acquisition_key = ? ORDER BY path",
            (to_sql(acquisition_key),),
        ).fetchall()
        return [
            HarvestedFile(Path(from_sql(p)), Path(from_sql(r)), int(s), int(m), str(f), str(h))
            for p, r, s, m, f, h in rows
        ]

    def record_packages(
        self, packaged: Iterable[tuple[str, str, str | None, Sequence[ProbedFile]]]
    ) -> None:
        """Record (acquisition_key, package_id, adapter, members) rows in one transaction."""
        now = time.time()
        try:
            with self._db:
                for acquisition_key, package_id, adapter, members in packaged:
                    key = to_sql(acquisition_key)
                    self._db.execute(
                        "INSERT OR REPLACE INTO acquisitions VALUES (?, ?, ?, ?)",
                        (key, adapter, package_id, now),
                    )
                    self._db.executemany(
                        "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            (
                                to_sql(str(m.settled.path)),
                                to_sql(str(m.settled.root)),
                                m.settled.size,
                                m.settled.mtime_ns,
                                m.settled.file_id,
                                m.sha256,
                                key,
                                package_id,
                                now,
                            )
                            for m in members
                        ],
                    )
                    self._db.executemany(
                        "DELETE FROM failures WHERE path = ?",
                        [(to_sql(str(m.settled.path)),) for m in members],
                    )
        except sqlite3.Error as error:
            raise StateError(
                f"{self.path}: cannot record packages: {error}", self.path, error
            ) from error

    def record_failure(
        self, path: Path, size: int, mtime_ns: int, reason: str, *, final: bool = True
    ) -> None:
        """Remember a failure for ``status``; a ``final`` one also stops retries of this version.

        Not final: the file could not be read right now (permissions, a sharing
        violation, a network error); the next scan tries it again.
        """
        try:
            with self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?, ?)",
                    (to_sql(str(path)), size, mtime_ns, escape(reason), time.time(), int(final)),
                )
        except sqlite3.Error as error:
            raise StateError(
                f"{self.path}: cannot record a failure: {error}", self.path, error
            ) from error

    def clear_failure(self, path: Path) -> None:
        """Forget the failure recorded for ``path`` (a sidecar applied again), if any."""
        key = (to_sql(str(path)),)
        if self._db.execute("SELECT 1 FROM failures WHERE path = ?", key).fetchone() is None:
            return  # the common case: nothing to write
        try:
            with self._db:
                self._db.execute("DELETE FROM failures WHERE path = ?", key)
        except sqlite3.Error as error:
            raise StateError(
                f"{self.path}: cannot clear a failure: {error}", self.path, error
            ) from error

    def failed_already(self, path: Path, reason: str) -> bool:
        """True when the failure recorded for ``path`` has this ``reason``: it was logged.

        A file that fails again for the same cause (an unreadable file at every rescan, the
        same version read again) is logged once, not at every attempt.
        """
        row = self._db.execute("SELECT reason FROM failures WHERE path = ?", (to_sql(str(path)),))
        found = row.fetchone()
        # reasons are stored in the percent form (record_failure)
        return found is not None and found[0] == escape(reason)

    def record_identities(
        self, checked: Iterable[tuple[str, str, Path, Sequence[Mapping[str, str]]]]
    ) -> set[str]:
        """Keep the identity mismatches of each acquisition's latest package for ``status``,
        from (acquisition_key, package_id, path, mismatches) rows, in one transaction; no
        mismatches forget the earlier ones. Returns the keys whose mismatches are new, so a
        package built again with the same mismatch is not reported twice."""
        new: set[str] = set()
        try:
            with self._db:
                for acquisition_key, package_id, path, mismatches in checked:
                    key = to_sql(acquisition_key)
                    text = json.dumps(list(mismatches), sort_keys=True)
                    row = self._db.execute(
                        "SELECT mismatches FROM identity_mismatches WHERE acquisition_key = ?",
                        (key,),
                    ).fetchone()
                    if not mismatches:
                        if row is not None:
                            self._db.execute(
                                "DELETE FROM identity_mismatches WHERE acquisition_key = ?", (key,)
                            )
                        continue
                    self._db.execute(
                        "INSERT OR REPLACE INTO identity_mismatches VALUES (?, ?, ?, ?, ?)",
                        (key, package_id, to_sql(str(path)), text, time.time()),
                    )
                    if row is None or row[0] != text:
                        new.add(acquisition_key)
        except sqlite3.Error as error:
            raise StateError(
                f"{self.path}: cannot record identity checks: {error}", self.path, error
            ) from error
        return new

    def identity_mismatches(self, limit: int = 20) -> list[IdentityMismatch]:
        """The latest acquisitions whose files report another instrument, newest first."""
        try:
            rows = self._db.execute(
                "SELECT path, package_id, mismatches, at FROM identity_mismatches "
                "ORDER BY at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        except sqlite3.OperationalError:
            return []  # a registry no daemon of this version has opened yet has no such table
        return [
            IdentityMismatch(Path(from_sql(p)), str(i), json.loads(m), float(a))
            for p, i, m, a in rows
        ]

    def failures(self, limit: int = 20) -> list[Failure]:
        rows = self._db.execute(
            "SELECT path, reason, at FROM failures ORDER BY at DESC LIMIT ?", (limit,)
        ).fetchall()
        return [Failure(Path(from_sql(p)), str(r), float(a)) for p, r, a in rows]

    def acquisitions_by_adapter(self) -> dict[str, int]:
        """Adapter name -> acquisitions it packaged (``""`` for those no adapter claimed)."""
        rows = self._db.execute(
            "SELECT coalesce(adapter, ''), count(*) FROM acquisitions GROUP BY 1"
        ).fetchall()
        return {str(adapter): int(count) for adapter, count in rows}

    def counts(self) -> dict[str, int]:
        files = self._db.execute("SELECT count(*) FROM files").fetchone()[0]
        acquisitions = self._db.execute("SELECT count(*) FROM acquisitions").fetchone()[0]
        failures = self._db.execute("SELECT count(*) FROM failures").fetchone()[0]
        return {"files": files, "acquisitions": acquisitions, "failures": failures}


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    if readonly:
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        connection.execute("SELECT count(*) FROM files").fetchone()
        return connection
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(_SCHEMA)
        # Pages are checked here, at start, not in the middle of a harvest.
        verdict = connection.execute("PRAGMA quick_check(1)").fetchone()[0]
        if verdict != "ok":
            error = sqlite3.DatabaseError(f"quick_check: {verdict}")
            error.sqlite_errorname = "SQLITE_CORRUPT"
            raise error
    except BaseException:
        connection.close()
        raise
    return connection


def _move_aside(path: Path) -> Path:
    """Rename a corrupt database and its journal files to ``<name>.corrupt-<UTC time>``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    for suffix in ("-wal", "-shm"):
        journal = path.with_name(path.name + suffix)
        if journal.exists():
            os.replace(journal, aside.with_name(aside.name + suffix))
    os.replace(path, aside)
    return aside
