"""The durable queue of Event invocations: SQLite at ``$SNAPSTART_HOME/events.db``.

An event is written (and committed) here *before* the Invoke API answers 202, so a
crash of the server after that loses nothing: pending rows are picked up again by
the next server's worker (at-least-once, as Lambda's own async invocations).

Schema (format version 1, ``PRAGMA user_version``)::

    pending(id TEXT PK, function TEXT, qualifier TEXT NULL, payload BLOB,
            trace_id TEXT NULL, client_context TEXT NULL, attempts INT,
            next_at REAL (unix time), created REAL, last_error TEXT NULL)
    failed (id TEXT PK, function, qualifier, payload, trace_id, client_context,
            attempts INT, created REAL, failed_at REAL, error TEXT)

``failed`` is the dead-letter table: events whose function failed on every attempt
(or which can never run: function deleted). One connection per call; WAL mode so
the worker and the HTTP handlers do not block each other.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EventStore", "EventRecord"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    id TEXT PRIMARY KEY, function TEXT NOT NULL, qualifier TEXT, payload BLOB NOT NULL,
    trace_id TEXT, client_context TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL, created REAL NOT NULL, last_error TEXT);
CREATE INDEX IF NOT EXISTS pending_next ON pending(next_at);
CREATE TABLE IF NOT EXISTS failed (
    id TEXT PRIMARY KEY, function TEXT NOT NULL, qualifier TEXT, payload BLOB NOT NULL,
    trace_id TEXT, client_context TEXT, attempts INTEGER NOT NULL,
    created REAL NOT NULL, failed_at REAL NOT NULL, error TEXT);
PRAGMA user_version = 1;
"""


@dataclass(frozen=True)
class EventRecord:
    id: str
    function: str
    qualifier: str | None
    payload: bytes
    trace_id: str | None
    client_context: str | None
    attempts: int
    created: float
    next_at: float | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "function": self.function, "qualifier": self.qualifier,
                "payload": self.payload.decode("utf-8", "replace"), "attempts": self.attempts,
                "created": self.created, "next_at": self.next_at, "error": self.error}


def _record(row: tuple, *, next_at: float | None, error: str | None) -> EventRecord:
    """An EventRecord from a row's first eight columns (the schema's order)."""
    return EventRecord(id=row[0], function=row[1], qualifier=row[2], payload=row[3],
                       trace_id=row[4], client_context=row[5], attempts=row[6],
                       created=row[7], next_at=next_at, error=error)


class EventStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit): for a caller that writes its own rows
        and an event in one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``), as the
        scheduler does (triggers/schedule.py)."""
        return self._conn()

    def _conn(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def add(self, function: str, qualifier: str | None, payload: bytes, *,
            trace_id: str | None = None, client_context: str | None = None,
            event_id: str | None = None) -> str:
        """Persist one event (committed when this returns)."""
        event_id = event_id or str(uuid.uuid4())
        now = time.time()
        self._conn().execute(
            "INSERT INTO pending(id, function, qualifier, payload, trace_id, client_context,"
            " attempts, next_at, created) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
            (event_id, function, qualifier, payload, trace_id, client_context, now, now))
        return event_id

    def due(self, limit: int = 16, now: float | None = None,
            exclude: set[str] | frozenset[str] = frozenset()) -> list[EventRecord]:
        rows = self._conn().execute(
            "SELECT id, function, qualifier, payload, trace_id, client_context, attempts,"
            " created, next_at, last_error FROM pending WHERE next_at <= ? ORDER BY next_at"
            " LIMIT ?", (time.time() if now is None else now, limit + len(exclude))).fetchall()
        return [_record(r, next_at=r[8], error=r[9]) for r in rows
                if r[0] not in exclude][:limit]

    def done(self, event_id: str) -> None:
        self._conn().execute("DELETE FROM pending WHERE id = ?", (event_id,))

    def retry(self, event_id: str, *, next_at: float, error: str | None,
              count_attempt: bool = True) -> None:
        self._conn().execute(
            "UPDATE pending SET attempts = attempts + ?, next_at = ?, last_error = ?"
            " WHERE id = ?", (1 if count_attempt else 0, next_at, error, event_id))

    def fail(self, event_id: str, error: str) -> None:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT OR REPLACE INTO failed(id, function, qualifier, payload, trace_id,"
                " client_context, attempts, created, failed_at, error)"
                " SELECT id, function, qualifier, payload, trace_id, client_context,"
                " attempts + 1, created, ?, ? FROM pending WHERE id = ?",
                (time.time(), error, event_id))
            db.execute("DELETE FROM pending WHERE id = ?", (event_id,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def pending(self) -> list[EventRecord]:
        rows = self._conn().execute(
            "SELECT id, function, qualifier, payload, trace_id, client_context, attempts,"
            " created, next_at, last_error FROM pending ORDER BY created").fetchall()
        return [_record(r, next_at=r[8], error=r[9]) for r in rows]

    def failed(self) -> list[EventRecord]:
        rows = self._conn().execute(
            "SELECT id, function, qualifier, payload, trace_id, client_context, attempts,"
            " created, error FROM failed ORDER BY failed_at").fetchall()
        return [_record(r, next_at=None, error=r[8]) for r in rows]

    def count_pending(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM pending").fetchone()[0]
