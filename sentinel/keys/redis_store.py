"""Runtime keys in Redis, shared by every replica (``[redis]``).

Every key of the store carries one hash tag, so a cluster keeps them on one node and
``commit.lua`` can change a record, its indexes, the change log and the audit at once::

    <prefix>:keys:{keys}:meta          hash    epoch, version, seq
    <prefix>:keys:{keys}:rec:<id>      string  the record (JSON)
    <prefix>:keys:{keys}:list          zset    key ids by creation
    <prefix>:keys:{keys}:name:<name>   string  the live key of that name
    <prefix>:keys:{keys}:digest:<hex>  string  the key that digest opens (expires with a grace)
    <prefix>:keys:{keys}:changes       zset    "<version>:<id>" by version
    <prefix>:keys:{keys}:used          hash    id -> last used (s)
    <prefix>:keys:{keys}:idem:<key>    string  a create's reply (24 h)
    <prefix>:keys:{keys}:audit         zset    audit ids;  ...:auditlog  hash  id -> entry

A commit publishes ``<epoch>:<version>`` on ``<prefix>:keys:changes``. Every call is bounded
(lookups by ``timeout_ms``, the rest by ten times that); a timeout or a Redis error becomes
``KeyStoreUnavailable`` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable, Callable, Mapping
from importlib.resources import files
from typing import Any, TypeVar

import structlog
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from sentinel.keys.records import KeyRecord
from sentinel.keys.store import (
    AuditEntry,
    Conflict,
    Head,
    IdempotentReply,
    KeyStoreUnavailable,
    Refused,
    audit_cutoff,
)

__all__ = ["RedisKeyStore"]

log = structlog.get_logger("sentinel.keys")

_T = TypeVar("_T")
_IDEMPOTENCY_S = 86_400
_RECONNECT_S = (0.05, 0.1, 0.2, 0.5, 1.0)


class RedisKeyStore:
    """Runtime keys held in Redis; raises ``KeyStoreUnavailable`` rather than guesses."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        timeout_ms: int,
        *,
        prefix: str = "sentinel",
        audit_retention_days: int = 90,
        audit_max_entries: int = 100_000,
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the key prefix must not contain braces")
        self._client = client
        self._timeout_s = timeout_ms / 1000
        self._slow_s = max(1.0, timeout_ms / 100)
        self._base = f"{prefix}:keys:{{keys}}"
        self.channel = f"{prefix}:keys:changes"
        self._retention_days = audit_retention_days
        self._audit_max = audit_max_entries
        source = files("sentinel.keys").joinpath("commit.lua").read_text("utf-8")
        self._commit = client.register_script(source)

    def _key(self, *parts: str) -> str:
        return ":".join((self._base, *parts))

    async def create(
        self,
        record: KeyRecord,
        audit: AuditEntry,
        idempotency: tuple[str, IdempotentReply] | None = None,
    ) -> IdempotentReply | None:
        idem_key = self._idem_key(idempotency[0]) if idempotency else self._key("meta")
        reply = await self._run_commit(
            "create",
            record,
            audit,
            expected=0,
            point=[(self._key("name", record.name), 0), (self._key("digest", record.digest), 0)],
            drop=[],
            idem=(idem_key, idempotency[1].dump() if idempotency else b""),
        )
        if reply[0] == b"idem":
            return IdempotentReply.load(reply[1])
        if reply[0] == b"taken":
            raise Refused("name" if int(reply[1]) == 1 else "digest")
        return None

    async def replace(self, record: KeyRecord, audit: AuditEntry) -> None:
        before = await self.get(record.id)
        if before is None:
            raise LookupError(record.id)
        wanted = [(self._key("digest", d), until or 0) for d, until in record.grace]
        wanted.append((self._key("digest", record.digest), 0))
        kept = {record.digest, *(d for d, _ in record.grace)}
        drop = [self._key("digest", d) for d in (before.digest, *(d for d, _ in before.grace))]
        drop = [k for k in drop if k.rpartition(":")[2] not in kept]
        if record.revoked_at is None:
            wanted.insert(0, (self._key("name", record.name), 0))
        else:
            drop.append(self._key("name", record.name))
        reply = await self._run_commit(
            "replace",
            record,
            audit,
            expected=record.version - 1,
            point=wanted,
            drop=drop,
            idem=(self._key("meta"), b""),
        )
        if reply[0] == b"missing":
            raise LookupError(record.id)
        if reply[0] == b"conflict":
            raise Conflict(record.id)
        if reply[0] == b"taken":
            raise Refused("name")

    async def _run_commit(
        self,
        mode: str,
        record: KeyRecord,
        audit: AuditEntry,
        *,
        expected: int,
        point: list[tuple[str, int]],
        drop: list[str],
        idem: tuple[str, bytes],
    ) -> list[Any]:
        keys = [
            self._key("meta"),
            self._key("changes"),
            self._key("audit"),
            self._key("auditlog"),
            self._key("rec", record.id),
            self._key("list"),
            idem[0],
            *(key for key, _ in point),
            *drop,
        ]
        args: list[str | int | bytes] = [
            mode,
            record.id,
            record.dump(),
            expected,
            secrets.token_hex(8),
            audit.id,
            audit.dump(),
            audit_cutoff(self._retention_days, audit.at),
            self._audit_max,
            self.channel,
            idem[1],
            _IDEMPOTENCY_S,
            len(point),
            *(until for _, until in point),
        ]
        reply: list[Any] = await self._bounded(self._commit(keys=keys, args=args), slow=True)
        return reply

    async def get(self, key_id: str) -> KeyRecord | None:
        raw = await self._bounded(self._client.get(self._key("rec", key_id)))
        return None if raw is None else KeyRecord.load(raw)

    async def get_many(self, key_ids: list[str]) -> list[KeyRecord]:
        if not key_ids:
            return []
        found = await self._bounded(self._client.mget([self._key("rec", i) for i in key_ids]))
        return [KeyRecord.load(raw) for raw in found if raw is not None]

    async def find(self, digest: str) -> KeyRecord | None:
        key_id = await self._bounded(self._client.get(self._key("digest", digest)))
        if key_id is None:
            return None
        return await self.get(_text(key_id))

    async def page(self, limit: int, after: str | None) -> tuple[list[KeyRecord], bool]:
        start = "-inf"
        if after is not None:
            score = await self._bounded(self._client.zscore(self._key("list"), after))
            if score is None:
                raise LookupError(after)
            start = f"({int(score)}"
        ids = await self._bounded(
            self._client.zrangebyscore(self._key("list"), start, "+inf", start=0, num=limit + 1)
        )
        records = await self.get_many([_text(i) for i in ids[:limit]])
        return records, len(ids) > limit

    async def head(self) -> Head:
        epoch, version = await self._bounded(
            self._client.hmget(self._key("meta"), ["epoch", "version"])
        )
        return Head("" if epoch is None else _text(epoch), int(version or 0))

    async def changes_since(self, version: int) -> list[str] | None:
        key = self._key("changes")
        oldest = await self._bounded(self._client.zrange(key, 0, 0, withscores=True))
        if oldest and int(oldest[0][1]) > version + 1:
            return None
        members = await self._bounded(self._client.zrangebyscore(key, f"({version}", "+inf"))
        return list(dict.fromkeys(_text(m).partition(":")[2] for m in members))

    async def touch(self, used: Mapping[str, int]) -> None:
        if used:
            await self._bounded(
                self._client.hset(self._key("used"), mapping={k: v for k, v in used.items()})
            )

    async def last_used(self, key_ids: list[str]) -> dict[str, int]:
        if not key_ids:
            return {}
        values = await self._bounded(self._client.hmget(self._key("used"), key_ids))
        return {i: int(v) for i, v in zip(key_ids, values, strict=True) if v is not None}

    async def remembered(self, key: str) -> IdempotentReply | None:
        raw = await self._bounded(self._client.get(self._idem_key(key)))
        return None if raw is None else IdempotentReply.load(raw)

    async def audit_page(self, limit: int, after: str | None) -> tuple[list[dict[str, Any]], bool]:
        top = "+" if after is None else f"({after}"
        ids = await self._bounded(
            self._client.zrevrangebylex(self._key("audit"), top, "-", start=0, num=limit + 1)
        )
        if not ids:
            return [], False
        raws = await self._bounded(self._client.hmget(self._key("auditlog"), ids[:limit]))
        return [AuditEntry.view(r) for r in raws if r is not None], len(ids) > limit

    async def listen(self, changed: Callable[[], None]) -> None:
        """Subscribe to the change channel for good: every message, and every (re)subscription
        (messages may have been missed meanwhile), calls ``changed``."""
        failures = 0
        while True:
            pubsub = self._client.pubsub()
            try:
                async with asyncio.timeout(self._slow_s):
                    await pubsub.subscribe(self.channel)
                failures = 0
                changed()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if message is not None:
                        changed()
            except (RedisError, OSError, TimeoutError) as error:
                log.warning("keys_subscription_lost", error=type(error).__name__)
            except Exception:  # the loop's boundary: the version check covers meanwhile
                log.exception("keys_subscription_failed")
            finally:
                await _quietly(pubsub.aclose())
            await asyncio.sleep(_RECONNECT_S[min(failures, len(_RECONNECT_S) - 1)])
            failures += 1

    async def aclose(self) -> None:
        return None

    def _idem_key(self, key: str) -> str:
        # Hashed: a client's header value never becomes part of a Redis key as such.
        return self._key("idem", hashlib.sha256(key.encode("utf-8")).hexdigest())

    async def _bounded(self, call: Awaitable[_T], *, slow: bool = False) -> _T:
        try:
            async with asyncio.timeout(self._slow_s if slow else self._timeout_s):
                return await call
        except (RedisError, OSError, TimeoutError) as error:
            raise KeyStoreUnavailable(detail=type(error).__name__) from None


async def _quietly(call: Awaitable[Any]) -> None:
    try:
        await call
    except (RedisError, OSError):
        pass


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
