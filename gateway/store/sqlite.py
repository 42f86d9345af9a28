"""SQLite as the stores use it: one durable connection per file, explicit transactions.

`connect()` opens (creating with mode 0600: the stores hold configuration, often secrets) in WAL mode
with `synchronous=FULL`, autocommit off for explicit `BEGIN IMMEDIATE` transactions. `transaction()`
commits on success and rolls back on error — also when COMMIT itself fails (disk full), so the
connection is never left inside a transaction.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import TracebackType


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.touch(mode=0o600)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=2.0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


def schema_version(db: sqlite3.Connection, newest: int, what: str) -> int:
    """The file's schema version (`PRAGMA user_version`); RuntimeError if it is newer than this code knows."""
    (current,) = db.execute("PRAGMA user_version").fetchone()
    if current > newest:
        raise RuntimeError(f"{what} schema {current} is newer than this gateway ({newest})")
    return int(current)


class transaction:
    """`with` body runs inside BEGIN IMMEDIATE; COMMIT on success, ROLLBACK on error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
                return
            except BaseException:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self._db.in_transaction:  # SQLite may have rolled back on its own already
            self._db.execute("ROLLBACK")
