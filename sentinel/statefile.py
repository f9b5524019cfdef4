"""The state directory's one SQLite file: runtime keys, credits and the audit without Redis.

``open_state_db`` creates ``<state_dir>/sentinel.sqlite3`` (the directory owner-only) in WAL
mode, so that readers never wait for the one writer, with a busy timeout so that two processes
(``serve`` and a ``check-config`` or a second worker) wait for each other instead of failing.
Each module that keeps state here creates its own tables (``CREATE TABLE IF NOT EXISTS``) and
owns them; nothing else reads them. Calls are synchronous and short: callers on the event loop
run writes through ``asyncio.to_thread`` and serve reads from their own caches.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["STATE_FILE", "open_state_db"]

STATE_FILE = "sentinel.sqlite3"
_BUSY_TIMEOUT_MS = 5_000


def open_state_db(state_dir: Path) -> sqlite3.Connection:
    """A connection to the state file under ``state_dir``, created (mode 0700) if missing.

    ``check_same_thread=False``: one connection serves the loop and its worker threads; callers
    serialise writes with their own lock.
    """
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    db = sqlite3.connect(
        state_dir / STATE_FILE,
        timeout=_BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,  # autocommit; explicit BEGIN IMMEDIATE where a change spans rows
        check_same_thread=False,
    )
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    return db
