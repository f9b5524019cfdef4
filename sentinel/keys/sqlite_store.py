"""Runtime keys in the state directory's SQLite file (``sentinel.statefile``), without Redis.

One process serves them (more than one worker needs ``[redis]``), so there is nothing to
announce: the process that makes a change applies it at once. Each change is one
``BEGIN IMMEDIATE`` transaction over the record, its indexes, the change log and the audit,
run in a worker thread behind one lock, so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from sentinel.keys.records import KeyRecord
from sentinel.keys.store import (
    CHANGE_LOG,
    AuditEntry,
    Conflict,
    Head,
    IdempotentReply,
    KeyStoreUnavailable,
    Refused,
    audit_cutoff,
)
from sentinel.statefile import open_state_db

__all__ = ["SqliteKeyStore"]

_T = TypeVar("_T")
_IDEMPOTENCY_S = 86_400

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runtime_keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    live_name TEXT UNIQUE,
    record TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE TABLE IF NOT EXISTS runtime_key_digests (
    digest TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    until INTEGER
);
CREATE TABLE IF NOT EXISTS runtime_key_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runtime_key_changes (version INTEGER PRIMARY KEY, id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runtime_key_idempotency (
    key TEXT PRIMARY KEY,
    reply TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS admin_audit (id TEXT PRIMARY KEY, entry TEXT NOT NULL);
"""


class SqliteKeyStore:
    """Runtime keys in ``<state_dir>/sentinel.sqlite3``."""

    def __init__(
        self,
        state_dir: Path,
        *,
        audit_retention_days: int = 90,
        audit_max_entries: int = 100_000,
    ) -> None:
        self._db = open_state_db(state_dir)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._retention_days = audit_retention_days
        self._audit_max = audit_max_entries

    async def create(
        self,
        record: KeyRecord,
        audit: AuditEntry,
        idempotency: tuple[str, IdempotentReply] | None = None,
    ) -> IdempotentReply | None:
        def run(db: sqlite3.Connection) -> IdempotentReply | None:
            now = int(time.time())
            if idempotency is not None:
                row = db.execute(
                    "SELECT reply FROM runtime_key_idempotency WHERE key = ? AND expires_at > ?",
                    (_hashed(idempotency[0]), now),
                ).fetchone()
                if row is not None:
                    return IdempotentReply.load(row[0])
            if db.execute(
                "SELECT 1 FROM runtime_keys WHERE live_name = ?", (record.name,)
            ).fetchone():
                raise Refused("name")
            if db.execute(
                "SELECT 1 FROM runtime_key_digests "
                "WHERE digest = ? AND (until IS NULL OR until > ?)",
                (record.digest, now),
            ).fetchone():
                raise Refused("digest")
            db.execute(
                "INSERT INTO runtime_keys (id, live_name, record, version) VALUES (?, ?, ?, ?)",
                (record.id, record.name, record.dump().decode(), record.version),
            )
            db.execute(
                "INSERT OR REPLACE INTO runtime_key_digests (digest, id, until) "
                "VALUES (?, ?, NULL)",
                (record.digest, record.id),
            )
            if idempotency is not None:
                db.execute(
                    "INSERT OR REPLACE INTO runtime_key_idempotency VALUES (?, ?, ?)",
                    (_hashed(idempotency[0]), idempotency[1].dump().decode(), now + _IDEMPOTENCY_S),
                )
                db.execute("DELETE FROM runtime_key_idempotency WHERE expires_at <= ?", (now,))
            self._log(db, record.id, audit)
            return None

        return await self._write(run)

    async def replace(self, record: KeyRecord, audit: AuditEntry) -> None:
        def run(db: sqlite3.Connection) -> None:
            row = db.execute(
                "SELECT version FROM runtime_keys WHERE id = ?", (record.id,)
            ).fetchone()
            if row is None:
                raise LookupError(record.id)
            if row[0] != record.version - 1:
                raise Conflict(record.id)
            live = record.name if record.revoked_at is None else None
            if (
                live is not None
                and db.execute(
                    "SELECT 1 FROM runtime_keys WHERE live_name = ? AND id != ?", (live, record.id)
                ).fetchone()
            ):
                raise Refused("name")
            db.execute(
                "UPDATE runtime_keys SET live_name = ?, record = ?, version = ? WHERE id = ?",
                (live, record.dump().decode(), record.version, record.id),
            )
            db.execute("DELETE FROM runtime_key_digests WHERE id = ?", (record.id,))
            rows: list[tuple[str, str, int | None]] = [(d, record.id, u) for d, u in record.grace]
            rows.append((record.digest, record.id, None))
            db.executemany(
                "INSERT OR REPLACE INTO runtime_key_digests (digest, id, until) VALUES (?, ?, ?)",
                rows,
            )
            self._log(db, record.id, audit)

        await self._write(run)

    def _log(self, db: sqlite3.Connection, key_id: str, audit: AuditEntry) -> None:
        """The change log and the audit entry of one change, and the version bump."""
        db.execute(
            "INSERT OR IGNORE INTO runtime_key_meta VALUES ('epoch', ?)", (secrets.token_hex(8),)
        )
        db.execute("INSERT OR IGNORE INTO runtime_key_meta VALUES ('version', '0')")
        db.execute(
            "UPDATE runtime_key_meta SET value = CAST(value AS INTEGER) + 1 WHERE name = 'version'"
        )
        version = int(
            db.execute("SELECT value FROM runtime_key_meta WHERE name = 'version'").fetchone()[0]
        )
        db.execute("INSERT INTO runtime_key_changes VALUES (?, ?)", (version, key_id))
        db.execute("DELETE FROM runtime_key_changes WHERE version <= ?", (version - CHANGE_LOG,))
        db.execute("INSERT INTO admin_audit VALUES (?, ?)", (audit.id, audit.dump().decode()))
        db.execute(
            "DELETE FROM admin_audit WHERE id < ?",
            (audit_cutoff(self._retention_days, audit.at),),
        )
        db.execute(
            "DELETE FROM admin_audit WHERE id NOT IN "
            "(SELECT id FROM admin_audit ORDER BY id DESC LIMIT ?)",
            (self._audit_max,),
        )

    async def get(self, key_id: str) -> KeyRecord | None:
        found = await self.get_many([key_id])
        return found[0] if found else None

    async def get_many(self, key_ids: list[str]) -> list[KeyRecord]:
        if not key_ids:
            return []

        def run(db: sqlite3.Connection) -> list[KeyRecord]:
            marks = ",".join("?" * len(key_ids))
            rows = db.execute(
                f"SELECT record FROM runtime_keys WHERE id IN ({marks})",  # noqa: S608 (marks)
                key_ids,
            ).fetchall()
            return [KeyRecord.load(row[0]) for row in rows]

        return await self._read(run)

    async def find(self, digest: str) -> KeyRecord | None:
        def run(db: sqlite3.Connection) -> KeyRecord | None:
            row = db.execute(
                "SELECT k.record FROM runtime_key_digests d JOIN runtime_keys k ON k.id = d.id "
                "WHERE d.digest = ?",
                (digest,),
            ).fetchone()
            return None if row is None else KeyRecord.load(row[0])

        return await self._read(run)

    async def page(self, limit: int, after: str | None) -> tuple[list[KeyRecord], bool]:
        def run(db: sqlite3.Connection) -> tuple[list[KeyRecord], bool]:
            start = 0
            if after is not None:
                row = db.execute("SELECT seq FROM runtime_keys WHERE id = ?", (after,)).fetchone()
                if row is None:
                    raise LookupError(after)
                start = row[0]
            rows = db.execute(
                "SELECT record FROM runtime_keys WHERE seq > ? ORDER BY seq LIMIT ?",
                (start, limit + 1),
            ).fetchall()
            return [KeyRecord.load(r[0]) for r in rows[:limit]], len(rows) > limit

        return await self._read(run)

    async def head(self) -> Head:
        def run(db: sqlite3.Connection) -> Head:
            meta = dict(db.execute("SELECT name, value FROM runtime_key_meta").fetchall())
            return Head(meta.get("epoch", ""), int(meta.get("version", 0)))

        return await self._read(run)

    async def changes_since(self, version: int) -> list[str] | None:
        def run(db: sqlite3.Connection) -> list[str] | None:
            oldest = db.execute("SELECT MIN(version) FROM runtime_key_changes").fetchone()[0]
            if oldest is not None and oldest > version + 1:
                return None
            rows = db.execute(
                "SELECT id FROM runtime_key_changes WHERE version > ? ORDER BY version",
                (version,),
            ).fetchall()
            return list(dict.fromkeys(r[0] for r in rows))

        return await self._read(run)

    async def touch(self, used: Mapping[str, int]) -> None:
        if not used:
            return

        def run(db: sqlite3.Connection) -> None:
            db.executemany(
                "UPDATE runtime_keys SET last_used_at = ? WHERE id = ?",
                [(at, key_id) for key_id, at in used.items()],
            )

        await self._write(run)

    async def last_used(self, key_ids: list[str]) -> dict[str, int]:
        if not key_ids:
            return {}

        def run(db: sqlite3.Connection) -> dict[str, int]:
            marks = ",".join("?" * len(key_ids))
            rows = db.execute(
                f"SELECT id, last_used_at FROM runtime_keys WHERE id IN ({marks})",  # noqa: S608
                key_ids,
            ).fetchall()
            return {r[0]: r[1] for r in rows if r[1] is not None}

        return await self._read(run)

    async def remembered(self, key: str) -> IdempotentReply | None:
        def run(db: sqlite3.Connection) -> IdempotentReply | None:
            row = db.execute(
                "SELECT reply FROM runtime_key_idempotency WHERE key = ? AND expires_at > ?",
                (_hashed(key), int(time.time())),
            ).fetchone()
            return None if row is None else IdempotentReply.load(row[0])

        return await self._read(run)

    async def audit_page(self, limit: int, after: str | None) -> tuple[list[dict[str, Any]], bool]:
        def run(db: sqlite3.Connection) -> tuple[list[dict[str, Any]], bool]:
            rows = db.execute(
                "SELECT entry FROM admin_audit WHERE id < ? ORDER BY id DESC LIMIT ?",
                ("\U0010ffff" if after is None else after, limit + 1),
            ).fetchall()
            return [AuditEntry.view(r[0]) for r in rows[:limit]], len(rows) > limit

        return await self._read(run)

    async def listen(self, changed: Callable[[], None]) -> None:
        return None

    async def aclose(self) -> None:
        # Under the lock: closing while a worker thread still runs a statement on the same
        # connection crashes the interpreter (sqlite3 is not safe against that).
        def close() -> None:
            with self._lock:
                self._db.close()

        await asyncio.to_thread(close)

    async def _read(self, run: Callable[[sqlite3.Connection], _T]) -> _T:
        return await asyncio.to_thread(self._locked, run, False)

    async def _write(self, run: Callable[[sqlite3.Connection], _T]) -> _T:
        return await asyncio.to_thread(self._locked, run, True)

    def _locked(self, run: Callable[[sqlite3.Connection], _T], write: bool) -> _T:
        with self._lock:
            try:
                if not write:
                    return run(self._db)
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = run(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return result
            except sqlite3.Error as error:
                raise KeyStoreUnavailable(detail=type(error).__name__) from None


def _hashed(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
