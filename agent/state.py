"""The seen-files registry: which file versions were packaged, under which acquisition.

SQLite (stdlib) in WAL mode under the state dir. It lets reconciliation scans after a
restart skip files already harvested, lets a late DICOM instance rejoin its series, and
gives ``replaces`` its value. It is separate from the outbox: a crash between spooling a
package and recording it here only makes the next start rebuild the same package, whose
deterministic id the outbox already holds.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from acqharvest.model import ProbedFile

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
CREATE TABLE IF NOT EXISTS failures (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL,
    final INTEGER NOT NULL
);
"""


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


class StateError(Exception):
    """The registry cannot be opened or written; names the database file."""


class State:
    """Registry of harvested file versions and acquisitions. One thread at a time."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False) -> State:
        try:
            if readonly:
                connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                connection = sqlite3.connect(path)
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.executescript(_SCHEMA)
            connection.execute("SELECT count(*) FROM files").fetchone()
        except sqlite3.DatabaseError as error:
            raise StateError(f"{path}: cannot open the state database: {error}") from error
        return cls(connection, path)

    def close(self) -> None:
        self._db.close()

    def is_done(self, path: Path, size: int, mtime_ns: int) -> bool:
        """True when this exact version of the file was packaged, or failed for good."""
        row = self._db.execute(
            "SELECT 1 FROM files WHERE path = ? AND size = ? AND mtime_ns = ? "
            "UNION ALL SELECT 1 FROM failures "
            "WHERE path = ? AND size = ? AND mtime_ns = ? AND final",
            (str(path), size, mtime_ns, str(path), size, mtime_ns),
        ).fetchone()
        return row is not None

    def package_of(self, acquisition_key: str) -> str | None:
        row = self._db.execute(
            "SELECT package_id FROM acquisitions WHERE key = ?", (acquisition_key,)
        ).fetchone()
        return None if row is None else str(row[0])

    def members_of(self, acquisition_key: str) -> list[HarvestedFile]:
        rows = self._db.execute(
            "SELECT path, root, size, mtime_ns, file_id, sha256 FROM files "
            "WHERE acquisition_key = ? ORDER BY path",
            (acquisition_key,),
        ).fetchall()
        return [
            HarvestedFile(Path(p), Path(r), int(s), int(m), str(f), str(h))
            for p, r, s, m, f, h in rows
        ]

    def record_packages(
        self, packaged: Iterable[tuple[str, str, str | None, Sequence[ProbedFile]]]
    ) -> None:
        """Record (acquisition_key, package_id, adapter, members) rows in one transaction."""
        now = time.time()
        try:
            with self._db:
                for key, package_id, adapter, members in packaged:
                    self._db.execute(
                        "INSERT OR REPLACE INTO acquisitions VALUES (?, ?, ?, ?)",
                        (key, adapter, package_id, now),
                    )
                    self._db.executemany(
                        "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            (
                                str(m.settled.path),
                                str(m.settled.root),
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
                        [(str(m.settled.path),) for m in members],
                    )
        except sqlite3.Error as error:
            raise StateError(f"{self.path}: cannot record packages: {error}") from error

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
                    (str(path), size, mtime_ns, reason, time.time(), int(final)),
                )
        except sqlite3.Error as error:
            raise StateError(f"{self.path}: cannot record a failure: {error}") from error

    def failures(self, limit: int = 20) -> list[Failure]:
        rows = self._db.execute(
            "SELECT path, reason, at FROM failures ORDER BY at DESC LIMIT ?", (limit,)
        ).fetchall()
        return [Failure(Path(p), str(r), float(a)) for p, r, a in rows]

    def counts(self) -> dict[str, int]:
        files = self._db.execute("SELECT count(*) FROM files").fetchone()[0]
        acquisitions = self._db.execute("SELECT count(*) FROM acquisitions").fetchone()[0]
        failures = self._db.execute("SELECT count(*) FROM failures").fetchone()[0]
        return {"files": files, "acquisitions": acquisitions, "failures": failures}
