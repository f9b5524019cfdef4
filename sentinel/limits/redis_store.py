"""The Redis limit store: exact across every replica, one atomic Lua call per operation.

Per API key, five Redis keys share one hash tag, so every script touches one cluster slot::

    <prefix>:{<key name>}:requests   hash  bucket start (ms) → requests
    <prefix>:{<key name>}:tokens     hash  bucket start (ms) → tokens
    <prefix>:{<key name>}:quotas     hash  "day:2024-03-09" … → tokens
    <prefix>:{<key name>}:leases     zset  reservation id → expiry (ms)
    <prefix>:{<key name>}:settled    zset  reservation id → until when it is remembered (ms)

``settled`` makes settlement idempotent: a settlement whose reply timed out may still have run
in Redis, and the fallback replays it later; the replay must not refund twice.

The window hashes also hold meta fields (``s``, ``l``, ``h``, ``b``: see ``limits.lua``).
Every key carries a TTL, so nothing outlives its use. The one script, ``limits.lua``, lives
next to this module and is registered once per store. Against a single server, calls queued
while others are in flight share one round trip (``ScriptBatcher``); a cluster gets them one
by one. Every call is bounded by ``timeout_ms``;
a timeout or a connection, cluster or read-only error becomes ``StoreUnavailable`` here, at
the boundary, and nowhere else. A timeout is only declared once the event loop has had a
chance to read a reply that already arrived: a busy replica must not mistake its own lag for
a dead Redis (and fall back to the local share for nothing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from importlib.resources import files
from typing import Any, TypeVar

import redis.exceptions as redis_errors
from redis.asyncio import Redis, RedisCluster

from sentinel.deadline import Deadline
from sentinel.limits.decision import (
    Decision,
    Reservation,
    decide,
    plan_admission,
    plan_settlement,
)
from sentinel.limits.periods import Calendar
from sentinel.limits.spec import Admission, Dimension, LimitSpec
from sentinel.limits.store import StoreUnavailable
from sentinel.limits.window import (
    AdmitPlan,
    KeyState,
    Outcome,
    SettlePlan,
    Timing,
    WindowUsage,
    usage,
)
from sentinel.redis_io.batching import LATE_REPLY_TURNS, ScriptBatcher
from sentinel.redis_io.client import hash_tag

__all__ = ["MERGED_QUOTA_TTL_MS", "RedisStore", "redis_keys"]

_T = TypeVar("_T")

MERGED_QUOTA_TTL_MS = 33 * 86_400_000
"""TTL floor of a quota hash after a write-back: a month and two days, the longest period."""

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,  # also BusyLoadingError, MaxConnectionsError
    redis_errors.TimeoutError,
    redis_errors.ClusterError,  # also ClusterDownError, MasterDownError
    redis_errors.TryAgainError,
    redis_errors.ReadOnlyError,  # a failed-over primary that is now a replica
    redis_errors.OutOfMemoryError,
    OSError,  # also the builtin TimeoutError raised by a Deadline
)
_SUFFIXES = ("requests", "tokens", "quotas", "leases", "settled")
_DIMENSIONS = tuple(Dimension)
_MAX_KEY_NAMES = 10_000
"""Key names whose Redis keys are kept worked out; past it the cache starts over."""


def redis_keys(prefix: str, key_name: str) -> list[str]:
    """The four Redis keys of ``key_name``, hash-tagged so that they share one cluster slot.

    Braces and ``%`` in the name are percent-encoded so that the tag is always exactly the
    whole name (injective, never empty).
    """
    tag = hash_tag(key_name)
    return [f"{prefix}:{tag}:{suffix}" for suffix in _SUFFIXES]


class RedisStore:
    """Limits held in Redis (a single server or a cluster), exact across replicas."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        timeout_ms: int = 100,
        *,
        timing: Timing | None = None,
        prefix: str = "sentinel",
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the key prefix must not contain braces")
        self.timing = timing or Timing()
        self.settled_memory_ms = 2 * self.timing.span_ms
        """How long a settled reservation id is remembered, so that a replay is a no-op."""
        self._calendar = Calendar()
        self._client = client
        self._timeout_s = timeout_ms / 1000
        self._prefix = prefix
        self._keys: dict[str, tuple[str, ...]] = {}  # key name -> its Redis keys
        source = files("sentinel.limits").joinpath("limits.lua").read_text(encoding="utf-8")
        self._script = client.register_script(source)
        # A single server gets concurrent calls in one round trip; a cluster, one by one.
        self._batcher = (
            ScriptBatcher(client, source, self._timeout_s) if isinstance(client, Redis) else None
        )

    async def admit(self, spec: LimitSpec, admission: Admission, now_ms: int) -> Decision:
        """Check every dimension of ``spec`` and, only if all fit, record the request."""
        plan = plan_admission(spec, admission, now_ms, self.timing, self._calendar)
        reply = await self._run(admission.key_name, _admit_args(plan))
        return decide(spec, admission, plan, _outcome(reply))

    async def settle(
        self,
        reservation: Reservation,
        actual_tokens: int,
        now_ms: int,
        *,
        release_request: bool = False,
    ) -> None:
        """Replace the reserved tokens with ``actual_tokens`` and release the lease."""
        plan = plan_settlement(
            reservation,
            actual_tokens,
            now_ms,
            self.timing,
            self._calendar,
            release_request=release_request,
        )
        args = _settle_args(plan)
        args += [reservation.reservation_id, now_ms + self.settled_memory_ms]
        await self._run(reservation.key_name, args)

    async def renew(self, reservation: Reservation, now_ms: int) -> bool:
        """Extend the reservation's lease by the lease TTL; False when it is already gone."""
        if not reservation.has_lease:
            return False
        expires = now_ms + self.timing.lease_ttl_ms
        args = [*self._common("renew", now_ms), reservation.reservation_id, expires]
        return bool(await self._run(reservation.key_name, args))

    async def usage(self, key_name: str, spec: LimitSpec, now_ms: int) -> WindowUsage:
        """What ``key_name`` has used at ``now_ms`` on every dimension."""
        periods = tuple(self._calendar.period(d, now_ms, spec.timezone) for d, _ in spec.quotas())
        state = await self.state(key_name)
        return usage(state, now_ms, self.timing.span_ms, periods)

    async def state(self, key_name: str) -> KeyState:
        """Every raw counter and lease stored for ``key_name`` (read in one round trip)."""
        requests, tokens, quotas, leases, _ = redis_keys(self._prefix, key_name)
        async with self._client.pipeline(transaction=False) as pipe:
            # A pipeline only queues each call; execute() sends them all and awaits.
            _ = pipe.hgetall(requests)
            _ = pipe.hgetall(tokens)
            _ = pipe.hgetall(quotas)
            _ = pipe.zrange(leases, 0, -1, withscores=True, score_cast_func=_whole)
            replies: list[Any] = await self._bounded(pipe.execute())
        return KeyState(
            requests=_buckets(replies[0]),
            tokens=_buckets(replies[1]),
            quotas={_text(k): int(v) for k, v in replies[2].items()},
            leases={_text(member): int(score) for member, score in replies[3]},
        )

    async def merge(self, key_name: str, state: KeyState, now_ms: int) -> None:
        """Add ``state``'s live usage and leases to Redis in one atomic call."""
        args = [*self._common("merge", now_ms), MERGED_QUOTA_TTL_MS]
        for section in (state.requests, state.tokens, state.quotas, state.leases):
            args.append(len(section))
            for name, value in section.items():
                args += [name, value]
        await self._run(key_name, args)

    def _common(self, operation: str, now_ms: int) -> list[int | str]:
        return [operation, now_ms, self.timing.span_ms, self.timing.bucket_ms]

    async def _run(self, key_name: str, args: list[int | str]) -> Any:
        keys = self._keys.get(key_name)
        if keys is None:
            if len(self._keys) >= _MAX_KEY_NAMES:
                self._keys.clear()
            keys = self._keys[key_name] = tuple(redis_keys(self._prefix, key_name))
        packed = " ".join(map(str, args))  # one argument: see limits.lua
        if self._batcher is None:
            return await self._bounded(self._script(keys=keys, args=[packed]))
        try:
            return await self._batcher.call(keys, packed)  # bounded by the batch's timeout
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}") from exc

    async def _bounded(self, call: Awaitable[_T]) -> _T:
        when = asyncio.get_running_loop().time() + self._timeout_s
        try:
            with Deadline(when, late_turns=LATE_REPLY_TURNS):
                return await call
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}") from exc


def _limit(value: int | None) -> int:
    return -1 if value is None else value


def _admit_args(plan: AdmitPlan) -> list[int | str]:
    horizon = plan.now_ms - plan.span_ms
    args: list[int | str] = [
        "admit",
        plan.now_ms,
        plan.span_ms,
        plan.bucket_ms,
        plan.bucket_start_ms,
        horizon - horizon % plan.bucket_ms + plan.bucket_ms,  # the first start that counts
        _limit(plan.rpm),
        _limit(plan.tpm),
        _limit(plan.max_parallel),
        plan.tokens,
        plan.reservation_id,
        plan.lease_expires_ms,
        plan.parallel_retry_ms,
        len(plan.quotas),
    ]
    for quota in plan.quotas:
        period = quota.period
        args += [period.dimension.code, period.name, quota.limit, period.end_ms]
    return args


def _settle_args(plan: SettlePlan) -> list[int | str]:
    args: list[int | str] = [
        "settle",
        plan.now_ms,
        plan.span_ms,
        plan.bucket_ms,
        plan.bucket_start_ms,
        plan.reserved_bucket_ms,
        plan.delta_tokens,
        int(plan.counts_tokens),
        int(plan.release_request),
        plan.reservation_id or "",
        len(plan.quotas),
    ]
    for quota in plan.quotas:
        args += [quota.reserved, quota.current.name, quota.current.end_ms]
    return args


def _outcome(reply: list[int]) -> Outcome:
    allowed, code, retry, exceeds, requests, tokens, requests_reset, tokens_reset = reply
    return Outcome(
        allowed=allowed == 1,
        dimension=_DIMENSIONS[code - 1] if code else None,
        retry_after_ms=retry,
        exceeds_limit=exceeds == 1,
        requests_used=requests,
        tokens_used=tokens,
        requests_reset_ms=requests_reset,
        tokens_reset_ms=tokens_reset,
    )


def _whole(score: bytes | str | float) -> int:
    return int(score)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _buckets(fields: dict[bytes | str, bytes | str]) -> dict[int, int]:
    """The buckets of a window hash, without its meta fields (which are not numbers)."""
    return {int(k): int(v) for k, v in fields.items() if k not in _META}


_META = frozenset({b"s", b"l", b"h", b"b", "s", "l", "h", "b"})
