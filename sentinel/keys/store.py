"""The seam between runtime keys and their storage: one Protocol, two backends.

``RedisKeyStore`` (shared by every replica, with ``[redis]``) and ``SqliteKeyStore`` (the
state file, without it) both satisfy ``KeyStore``; one contract test suite runs against both.
Every change is one atomic write that also bumps the store's ``version``, appends the changed
key's id to a bounded change log and appends its audit entry, so a cache that knows the
version it saw last can catch up with exactly what changed, and no change goes unaudited.

The ``epoch`` is chosen by the first write to an empty store: a store that lost its data (a
Redis restarted without persistence) has another epoch, and every cache of it starts over.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from sentinel.errors import ServiceUnavailable
from sentinel.keys.records import KeyRecord

__all__ = [
    "CHANGE_LOG",
    "MAX_PAGE",
    "AuditEntry",
    "Conflict",
    "Head",
    "IdempotentReply",
    "KeyStore",
    "KeyStoreUnavailable",
    "Refused",
    "audit_cutoff",
    "new_audit_id",
]

MAX_PAGE = 100
"""The most records one page holds."""
CHANGE_LOG = 10_000
"""Changes kept for catching up; a cache further behind reloads everything it holds."""


class KeyStoreUnavailable(ServiceUnavailable):
    """The key store could not answer in time: an unknown key is never admitted meanwhile."""

    default_code = "key_store_unavailable"
    default_message = "Keys cannot be checked right now; try again later."


class Conflict(Exception):
    """The record changed since it was read (its ``version`` moved on)."""


class Refused(Exception):
    """A create that would break uniqueness: ``what`` is ``"name"`` or ``"digest"``."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass(frozen=True, slots=True)
class Head:
    """The store's identity and how many changes it has seen."""

    epoch: str
    version: int


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change: who (an admin token's name), what, when, and the views before and after."""

    id: str
    at: int
    actor: str
    action: str
    key_id: str | None
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None

    def dump(self) -> bytes:
        """The stored (and listed) JSON form."""
        return orjson.dumps(
            {
                "object": "audit_entry",
                "id": self.id,
                "at": self.at,
                "actor": self.actor,
                "action": self.action,
                "key_id": self.key_id,
                "before": self.before,
                "after": self.after,
            }
        )

    @staticmethod
    def view(raw: bytes | str) -> dict[str, Any]:
        """The listed form of a stored entry."""
        data: dict[str, Any] = orjson.loads(raw)
        return data


def new_audit_id(now_ms: int | None = None) -> str:
    """``aud_<ms>_<random>``: ids sort by time, so the newest come first by id alone."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return f"aud_{ms:014d}_{secrets.token_hex(4)}"


def audit_cutoff(retention_days: int, now_s: float) -> str:
    """The smallest audit id still within ``retention_days`` of ``now_s``."""
    return f"aud_{int((now_s - retention_days * 86_400) * 1000):014d}"


@dataclass(frozen=True, slots=True)
class IdempotentReply:
    """A create's stored reply (without its secret) and the hash of the body that made it."""

    body_hash: str
    reply: Mapping[str, Any]

    def dump(self) -> bytes:
        return orjson.dumps({"body_hash": self.body_hash, "reply": self.reply})

    @classmethod
    def load(cls, raw: bytes | str) -> IdempotentReply:
        data = orjson.loads(raw)
        return cls(data["body_hash"], data["reply"])


class KeyStore(Protocol):
    """Where runtime keys, their change log, the audit and create replies are kept."""

    async def create(
        self,
        record: KeyRecord,
        audit: AuditEntry,
        idempotency: tuple[str, IdempotentReply] | None = None,
    ) -> IdempotentReply | None:
        """Store a new key; ``Refused`` if its live name or digest is taken. With
        ``idempotency`` (key, reply), returns the reply stored earlier under that key instead
        of creating anything, else None."""
        ...

    async def replace(self, record: KeyRecord, audit: AuditEntry) -> None:
        """Store ``record`` over the one of version ``record.version - 1``; ``Conflict`` if
        the stored one is another version, ``LookupError`` if there is none."""
        ...

    async def get(self, key_id: str) -> KeyRecord | None:
        """The record of ``key_id``."""
        ...

    async def get_many(self, key_ids: list[str]) -> list[KeyRecord]:
        """The records of those ``key_ids`` that exist."""
        ...

    async def find(self, digest: str) -> KeyRecord | None:
        """The record that hex ``digest`` opens, now or in a grace period (which the caller
        checks against the record), or None."""
        ...

    async def page(self, limit: int, after: str | None) -> tuple[list[KeyRecord], bool]:
        """Records in creation order after the id ``after`` (``LookupError`` if unknown), and
        whether more follow."""
        ...

    async def head(self) -> Head:
        """The store's epoch and version."""
        ...

    async def changes_since(self, version: int) -> list[str] | None:
        """Ids of the keys changed after ``version``; None when the log no longer reaches
        back that far."""
        ...

    async def touch(self, used: Mapping[str, int]) -> None:
        """Record when keys were last used (approximate; not a change)."""
        ...

    async def last_used(self, key_ids: list[str]) -> dict[str, int]:
        """When each of ``key_ids`` was last used, where known."""
        ...

    async def remembered(self, key: str) -> IdempotentReply | None:
        """The create reply stored under idempotency key ``key``."""
        ...

    async def audit_page(self, limit: int, after: str | None) -> tuple[list[dict[str, Any]], bool]:
        """Audit entries, newest first, older than the entry ``after``; and whether more
        follow."""
        ...

    async def listen(self, changed: Callable[[], None]) -> None:
        """Call ``changed`` on every change announced by any replica, until cancelled (a
        backend with no announcements returns at once)."""
        ...

    async def aclose(self) -> None:
        """Release what the store holds (not a shared Redis client)."""
        ...
