"""Prepaid credits: top-ups, the ledger, and which keys are credit-metered.

A key that has ever been topped up is *credit-metered*: each of its requests holds its price
against the balance (topped up, less charged, less held) in the same atomic admission as its
limits, and 402 ``insufficient_credits`` when the balance cannot cover the hold. Every top-up
and every charge is a ledger entry with a per-key sequence number, the amount and the balance
after it.

Two homes, as the rest of the state (DESIGN, "State"):

* ``RedisCredits`` (with ``[redis]``): the balance and ledger are the key's ``credits`` and
  ``ledger`` keys beside its limits (``sentinel.limits.redis_store.money_keys``); a top-up is
  ``credits.lua`` (idempotent by its ``Idempotency-Key``), a charge is written by the limits
  script's settlement. The set of credit-metered keys is a Redis set read back every
  ``refresh_s``: another replica meters a key within that long of its first top-up.
* ``SqliteCredits`` (embedded mode): the balance lives in the ``MemoryStore`` (where
  admission holds against it) and in the state file's ``credit_*`` tables, which every top-up
  and charge updates in the same step (charges through ``MemoryStore.journal_credits``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Protocol

import structlog
from redis.asyncio import Redis, RedisCluster

from sentinel.config.budgets import format_usd
from sentinel.errors import SentinelError, ServiceUnavailable
from sentinel.limits.decision import Reservation
from sentinel.limits.holds import CREDITS_FIELD
from sentinel.limits.memory import MemoryStore
from sentinel.limits.redis_store import money_keys
from sentinel.limits.window import KeyState
from sentinel.statefile import open_state_db

__all__ = [
    "CreditAccounts",
    "IdempotencyConflict",
    "LedgerEntry",
    "RedisCredits",
    "SqliteCredits",
]

log = structlog.get_logger("sentinel.money")

_REFRESH_S = 1.0


class IdempotencyConflict(SentinelError):
    """An ``Idempotency-Key`` sent again with another amount."""

    status = 409
    error_type = "invalid_request_error"
    default_code = "idempotency_key_reused"
    default_message = "This Idempotency-Key was already used with a different amount."


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One top-up or charge of one key's credits (nano-USD; ``balance`` after it)."""

    seq: int
    kind: str  # "top_up" | "charge"
    nano_usd: int
    balance: int
    at_ms: int
    reference: str  # the top-up's Idempotency-Key, the charge's request id

    @property
    def id(self) -> str:
        """The entry's id in the ledger API (``cle_<sequence>``)."""
        return f"cle_{self.seq}"

    def view(self, key_id: str) -> dict[str, Any]:
        """The entry as the ledger API shows it (charges are negative amounts)."""
        sign = -1 if self.kind == "charge" else 1
        return {
            "object": "credit_ledger_entry",
            "id": self.id,
            "key_id": key_id,
            "type": self.kind,
            "amount_usd": format_usd(sign * self.nano_usd),
            "balance_usd": format_usd(self.balance),
            "created_at": self.at_ms // 1000,
            "reference": self.reference,
        }

    @classmethod
    def parse(cls, member: str) -> LedgerEntry:
        """An entry from its Redis form ``"<seq> <kind> <nano> <balance> <ms> <ref>"``."""
        seq, kind, nano, balance, at_ms, reference = member.split(" ", 5)
        return cls(int(seq), kind, int(nano), int(balance), int(at_ms), reference)


class CreditAccounts(Protocol):
    """Where prepaid credits live; ``sentinel.money.budgets`` asks which keys they meter."""

    def is_metered(self, key_id: str) -> bool:
        """Whether ``key_id`` has a credit account (any top-up ever)."""
        ...

    async def top_up(
        self, key_id: str, nano_usd: int, idempotency_key: str, now_ms: int
    ) -> tuple[LedgerEntry, bool]:
        """Add credits; the entry and whether it is a replay. 409 on a reused key."""
        ...

    async def ledger(
        self, key_id: str, limit: int, after: int | None
    ) -> tuple[list[LedgerEntry], bool]:
        """Entries after sequence ``after``, oldest first, and whether more follow."""
        ...

    async def balance(self, key_id: str) -> tuple[int, int] | None:
        """(balance, held) in nano-USD; None without an account."""
        ...


class RedisCredits:
    """Credits in Redis beside the key's limits (see the module docstring)."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        timeout_ms: int,
        *,
        prefix: str = "sentinel",
        refresh_s: float = _REFRESH_S,
    ) -> None:
        self._client = client
        self._timeout_s = max(timeout_ms / 1000, 1.0)  # an admin call may wait a little
        self._prefix = prefix
        self._accounts = f"{prefix}:credit-accounts"
        self._metered: set[str] = set()
        self._refresh_s = refresh_s
        self._task: asyncio.Task[None] | None = None
        source = files("sentinel.money").joinpath("credits.lua").read_text(encoding="utf-8")
        self._script = client.register_script(source)

    def is_metered(self, key_id: str) -> bool:
        """Whether ``key_id`` has a credit account, as last read from Redis."""
        return key_id in self._metered

    async def refresh(self) -> None:
        """Read the set of credit-metered keys again."""
        members = await self._bounded(self._client.smembers(self._accounts))
        self._metered = {_text(m) for m in members}

    def start(self) -> None:
        """Begin refreshing the metered set every ``refresh_s`` (an owned task)."""
        self._task = asyncio.create_task(self._refresh_forever(), name="credit-accounts")

    async def aclose(self) -> None:
        """Stop refreshing."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # the next round tries again; the set stays as it was
                log.warning("credit_accounts_refresh_failed", error=str(exc))
            await asyncio.sleep(self._refresh_s)

    async def top_up(
        self, key_id: str, nano_usd: int, idempotency_key: str, now_ms: int
    ) -> tuple[LedgerEntry, bool]:
        """Add ``nano_usd`` in one script; the key joins the metered set."""
        money, _, credits, ledger = money_keys(self._prefix, key_id)
        reply = await self._bounded(
            self._script(keys=[money, credits, ledger], args=[now_ms, nano_usd, idempotency_key])
        )
        status, entry = int(reply[0]), _text(reply[1])
        if status == -1:
            raise IdempotencyConflict(
                f"This Idempotency-Key was already used for a top-up of ${format_usd(int(entry))}.",
                param="Idempotency-Key",
            )
        await self._bounded(self._client.sadd(self._accounts, key_id))
        self._metered.add(key_id)
        return LedgerEntry.parse(entry), status == 0

    async def ledger(
        self, key_id: str, limit: int, after: int | None
    ) -> tuple[list[LedgerEntry], bool]:
        """A page of the ledger, oldest first."""
        ledger = money_keys(self._prefix, key_id)[3]
        low = f"({after}" if after is not None else "-inf"
        members = await self._bounded(
            self._client.zrangebyscore(ledger, low, "+inf", start=0, num=limit + 1)
        )
        entries = [LedgerEntry.parse(_text(m)) for m in members]
        return entries[:limit], len(entries) > limit

    async def balance(self, key_id: str) -> tuple[int, int] | None:
        """(balance, held) from Redis; None without an account."""
        money, _, credits, _ = money_keys(self._prefix, key_id)
        async with self._client.pipeline(transaction=False) as pipe:
            _ = pipe.hget(credits, "in")
            _ = pipe.hmget(money, [CREDITS_FIELD, "held"])
            replies: list[Any] = await self._bounded(pipe.execute())
        if replies[0] is None:
            return None
        spent, held = (int(v or 0) for v in replies[1])
        return int(replies[0]) - spent, held

    async def _bounded(self, call: Any) -> Any:
        try:
            return await asyncio.wait_for(call, self._timeout_s)
        except (TimeoutError, OSError, ConnectionError) as exc:
            raise ServiceUnavailable(
                "Credits cannot be reached right now. Please try again shortly.",
                code="credits_unavailable",
                reason=type(exc).__name__,
            ) from exc
        except Exception as exc:
            if type(exc).__module__.startswith("redis"):
                raise ServiceUnavailable(
                    "Credits cannot be reached right now. Please try again shortly.",
                    code="credits_unavailable",
                    reason=type(exc).__name__,
                ) from exc
            raise


class SqliteCredits:
    """Credits in the state file, held against in the embedded ``MemoryStore``."""

    def __init__(self, state_dir: Path, store: MemoryStore) -> None:
        self._db = open_state_db(state_dir)
        self._store = store
        self._db.executescript(_SCHEMA)
        self._metered: set[str] = set()
        now_ms = int(time.time() * 1000)
        for key_id, topped_up, spent in self._db.execute(
            "SELECT key_id, topped_up, spent FROM credit_accounts"
        ):
            self._metered.add(key_id)
            store.fund(key_id, topped_up)
            if spent:
                state = KeyState(money={CREDITS_FIELD: spent})
                store.merge_now(key_id, state, now_ms)
        store.journal_credits(self._charged)

    def is_metered(self, key_id: str) -> bool:
        """Whether ``key_id`` has a credit account."""
        return key_id in self._metered

    def close(self) -> None:
        """Close the state file's connection."""
        self._db.close()

    async def top_up(
        self, key_id: str, nano_usd: int, idempotency_key: str, now_ms: int
    ) -> tuple[LedgerEntry, bool]:
        """Add ``nano_usd`` in one transaction and to the store's balance."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT amount, seq FROM credit_idempotency WHERE key_id = ? AND idem = ?",
                (key_id, idempotency_key),
            ).fetchone()
            if row is not None:
                db.execute("ROLLBACK")
                if row[0] != nano_usd:
                    raise IdempotencyConflict(
                        "This Idempotency-Key was already used for a top-up of "
                        f"${format_usd(row[0])}.",
                        param="Idempotency-Key",
                    )
                return self._entry(key_id, row[1]), True
            db.execute(
                "INSERT INTO credit_accounts (key_id, topped_up, spent, seq) VALUES (?, ?, 0, 0)"
                " ON CONFLICT (key_id) DO UPDATE SET topped_up = topped_up + excluded.topped_up",
                (key_id, nano_usd),
            )
            entry = self._append(key_id, "top_up", nano_usd, now_ms, idempotency_key)
            db.execute(
                "INSERT INTO credit_idempotency (key_id, idem, amount, seq) VALUES (?, ?, ?, ?)",
                (key_id, idempotency_key, nano_usd, entry.seq),
            )
            db.execute("COMMIT")
        except sqlite3.Error:
            db.execute("ROLLBACK")
            raise
        self._store.fund(key_id, nano_usd)
        self._metered.add(key_id)
        return entry, False

    async def ledger(
        self, key_id: str, limit: int, after: int | None
    ) -> tuple[list[LedgerEntry], bool]:
        """A page of the ledger, oldest first."""
        rows = self._db.execute(
            "SELECT seq, kind, amount, balance, at_ms, ref FROM credit_ledger"
            " WHERE key_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (key_id, after or 0, limit + 1),
        ).fetchall()
        entries = [LedgerEntry(*row) for row in rows]
        return entries[:limit], len(entries) > limit

    async def balance(self, key_id: str) -> tuple[int, int] | None:
        """(balance, held) from the store; None without an account."""
        if key_id not in self._metered:
            return None
        state = await self._store.state(key_id)
        held = sum(amount for amount, _ in state.holds.values())
        return state.credits_in - state.money.get(CREDITS_FIELD, 0), held

    def _charged(self, reservation: Reservation, nano_usd: int, now_ms: int) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "UPDATE credit_accounts SET spent = spent + ? WHERE key_id = ?",
                (nano_usd, reservation.key_name),
            )
            self._append(reservation.key_name, "charge", nano_usd, now_ms, reservation.request_id)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            db.execute("ROLLBACK")
            log.error("credit_charge_not_journaled", key_id=reservation.key_name, exc_info=exc)

    def _append(self, key_id: str, kind: str, nano_usd: int, now_ms: int, ref: str) -> LedgerEntry:
        row = self._db.execute(
            "UPDATE credit_accounts SET seq = seq + 1 WHERE key_id = ?"
            " RETURNING seq, topped_up - spent",
            (key_id,),
        ).fetchone()
        entry = LedgerEntry(row[0], kind, nano_usd, row[1], now_ms, ref)
        self._db.execute(
            "INSERT INTO credit_ledger (key_id, seq, kind, amount, balance, at_ms, ref)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key_id, entry.seq, kind, nano_usd, entry.balance, now_ms, ref),
        )
        return entry

    def _entry(self, key_id: str, seq: int) -> LedgerEntry:
        row = self._db.execute(
            "SELECT seq, kind, amount, balance, at_ms, ref FROM credit_ledger"
            " WHERE key_id = ? AND seq = ?",
            (key_id, seq),
        ).fetchone()
        return LedgerEntry(*row)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS credit_accounts (
    key_id TEXT PRIMARY KEY, topped_up INTEGER NOT NULL, spent INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS credit_ledger (
    key_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, amount INTEGER NOT NULL,
    balance INTEGER NOT NULL, at_ms INTEGER NOT NULL, ref TEXT NOT NULL,
    PRIMARY KEY (key_id, seq)
);
CREATE TABLE IF NOT EXISTS credit_idempotency (
    key_id TEXT NOT NULL, idem TEXT NOT NULL, amount INTEGER NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (key_id, idem)
);
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
