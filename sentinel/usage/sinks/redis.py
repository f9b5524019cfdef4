"""A sink keeping per-key usage counters in Redis, per minute and per day, exactly once.

Each bucket is a hash with ``requests``, ``prompt_tokens``, ``completion_tokens`` and
``total_tokens``, under keys hash-tagged by the key name so one operation touches one slot::

    sentinel:{team-a}:usage:m:202501311230     minute bucket (UTC)
    sentinel:{team-a}:usage:d:20250131         day bucket (UTC)
    sentinel:{team-a}:usage:seen:<record_id>   dedupe marker

``usage_counters.lua`` sets the record's dedupe marker with ``SET NX`` before incrementing, so
a batch replayed from the spool (or retried after a partial failure) never counts a record
twice while its marker lives (``dedupe_ttl_s``); two requests that share a client's
``x-request-id`` are two records and both count. Buckets follow the request's ``started_at``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from sentinel.redis_io.batching import FunctionBatcher
from sentinel.redis_io.functions import Fields, RedisFunction, op_fields
from sentinel.usage.records import UsageRecord
from sentinel.usage.sinks import DeliveryError

__all__ = ["Period", "RedisCounterSink", "UsageCounters", "counter_key", "read_counters"]

Period = Literal["minute", "day"]

_BUCKET_FORMATS: dict[Period, tuple[str, str]] = {
    "minute": ("m", "%Y%m%d%H%M"),
    "day": ("d", "%Y%m%d"),
}
_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens")


def counter_key(key: str, period: Period, when: datetime) -> str:
    """The hash holding ``key``'s counters for the minute or day (UTC) containing ``when``."""
    letter, pattern = _BUCKET_FORMATS[period]
    return f"sentinel:{{{key}}}:usage:{letter}:{when.astimezone(UTC).strftime(pattern)}"


def _seen_key(record: UsageRecord) -> str:
    return f"sentinel:{{{record.key}}}:usage:seen:{record.record_id}"


def _buckets(record: UsageRecord) -> tuple[str, str]:
    """The minute and day hashes ``record`` is counted in."""
    at = record.started_at
    if len(at) == 24 and at[-1] == "Z" and at[4] == "-" and at[13] == ":":
        # As Sentinel writes it (2025-01-31T12:30:45.123Z): the buckets are in the text.
        day = f"{at[0:4]}{at[5:7]}{at[8:10]}"
        prefix = f"sentinel:{{{record.key}}}:usage:"
        return f"{prefix}m:{day}{at[11:13]}{at[14:16]}", f"{prefix}d:{day}"
    started = datetime.fromisoformat(at)  # any other UTC form a spool file may hold
    return counter_key(record.key, "minute", started), counter_key(record.key, "day", started)


def _calls(
    batch: Sequence[UsageRecord], ttls: tuple[int, int, int]
) -> list[tuple[tuple[str, ...], Fields]]:
    """The operations counting ``batch``: one per minute bucket (a key's records share its
    hash tag), of at most ``_MAX_PER_CALL`` records each, as (keys, the operation's fields)."""
    groups: dict[tuple[str, str], list[UsageRecord]] = {}
    for record in batch:
        groups.setdefault(_buckets(record), []).append(record)
    calls = []
    for buckets, records in groups.items():
        for start in range(0, len(records), _MAX_PER_CALL):
            part = records[start : start + _MAX_PER_CALL]
            keys = (*buckets, *(_seen_key(record) for record in part))
            fields: list[int | str] = [*ttls]
            for r in part:
                fields += (
                    _count(r.prompt_tokens),
                    _count(r.completion_tokens),
                    _count(r.total_tokens),
                )
            calls.append((keys, op_fields(fields)))
    return calls


def _count(tokens: int) -> int | str:
    """A count as sent: a number, or a string of digits from 2^53 up (Lua would round it)."""
    return tokens if tokens < _EXACT else str(tokens)


_EXACT = 2**53
_MAX_PER_CALL = 256
"""Records counted by one operation: Redis runs a call to its end before anything else."""


@dataclass(frozen=True, slots=True)
class UsageCounters:
    """One bucket's totals (all zero for a bucket nobody used)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class RedisCounterSink:
    """Counts each record once into its key's minute and day buckets: one operation for the
    records of a batch that share a minute bucket (up to ``_MAX_PER_CALL`` of them).

    A batch goes out as one function call on a single server (``FunctionBatcher``), or call by
    call to each slot's node on a cluster, bounded by ``timeout_s``; a batch that times out
    may have been counted in part, which the dedupe markers make safe to send again.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        minute_ttl_s: int = 2 * 86_400,
        day_ttl_s: int = 35 * 86_400,
        dedupe_ttl_s: int = 2 * 86_400,
        timeout_s: float = 5.0,
        name: str = "redis",
    ) -> None:
        self._client = client
        self._timeout_s = timeout_s  # per batch: the client sets no socket timeouts
        self._ttls = (minute_ttl_s, day_ttl_s, dedupe_ttl_s)
        self._function = RedisFunction(
            "sentinel.usage.sinks", "usage_counters.lua", "sentinel_usage_counters"
        )
        # A single server gets a batch's operations in one call (sentinel.redis_io.batching).
        self._batcher = (
            FunctionBatcher(client, self._function, timeout_s)
            if isinstance(client, Redis)
            else None
        )
        self._name = name
        self.counted = 0
        self.duplicates = 0

    @property
    def name(self) -> str:
        """The sink's name in logs, metrics and the spool."""
        return self._name

    async def deliver(self, batch: Sequence[UsageRecord]) -> None:
        """Count each record of ``batch`` not counted before; ``DeliveryError`` on Redis trouble."""
        try:
            async with asyncio.timeout(self._timeout_s):
                results = await self._count(batch)
        except (RedisError, OSError, TimeoutError) as exc:
            raise DeliveryError(f"{self._name}: {type(exc).__name__}: {exc}") from exc
        counted = sum(1 for result in results if result == 1)
        self.counted += counted
        self.duplicates += len(results) - counted

    async def _count(self, batch: Sequence[UsageRecord]) -> list[object]:
        """One reply per record of ``batch``: 1 counted, 0 its ``record_id`` counted before."""
        calls = _calls(batch, self._ttls)
        if self._batcher is not None:
            batched = self._batcher.call
            replies = await asyncio.gather(
                *(batched(keys, op) for keys, op in calls), return_exceptions=True
            )
        else:
            # A cluster: each operation goes to its slot's node on its own.
            call = self._function.call
            replies = await asyncio.gather(
                *(_first(call(self._client, keys, [op])) for keys, op in calls),
                return_exceptions=True,
            )
        results: list[object] = []
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
            results.extend(reply)
        return results


async def _first(replies: Awaitable[list[Any]]) -> Any:
    """The reply of a call's one operation."""
    return (await replies)[0]


async def read_counters(
    client: Redis | RedisCluster, key: str, period: Period, *, at: float | None = None
) -> UsageCounters:
    """``key``'s counters for the minute or day (UTC) containing ``at`` (epoch s; now if None)."""
    when = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    raw: dict[bytes | str, bytes | str] = await client.hgetall(counter_key(key, period, when))
    values = {_text(name): int(value) for name, value in raw.items()}
    return UsageCounters(*(values.get(name, 0) for name in _FIELDS))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
