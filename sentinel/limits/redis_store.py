"""The Redis limit store: exact across every replica, each operation atomic in Redis.

Per API key, five Redis keys share one hash tag, so every operation touches one cluster slot::

    <prefix>:{<key name>}:requests   hash  bucket start (ms) → requests
    <prefix>:{<key name>}:tokens     hash  bucket start (ms) → tokens
    <prefix>:{<key name>}:quotas     hash  "day:2024-03-09" … → tokens
    <prefix>:{<key name>}:leases     zset  reservation id → expiry (ms)
    <prefix>:{<key name>}:settled    zset  reservation id → until when it is remembered (ms)

``settled`` makes settlement idempotent: a settlement whose reply timed out may still have run
in Redis, and the fallback replays it later; the replay must not refund twice.

A key (or team) with money has four more, under the same tag (``money_keys``)::

    <prefix>:{<name>}:money      hash  "usd_day:2024-03-09" … "usd_total", "credits", "held"
    <prefix>:{<name>}:holds      zset  "<reservation id>:<nano-USD>" → expiry (ms)
    <prefix>:{<name>}:credits    hash  "in" (nano-USD topped up), "seq", idempotency keys
    <prefix>:{<name>}:ledger     zset  one entry per top-up and charge, by sequence

A team's budgets are the team's ``money`` and ``holds`` (name ``team:<team>``), passed to the
same call as the key's: another hash tag, so team budgets need a single server (not a
cluster), which the configuration checks.

The window hashes also hold meta fields (``s``, ``l``, ``h``, ``b``: see ``limits.lua``).
Every key carries a TTL, so nothing outlives its use. ``limits.lua``, next to this module,
is a Redis function library (Redis 7 or newer), loaded when Redis first says it lacks it
(``sentinel.redis_io.functions``). Against a single server, every operation queued while a
call is in flight goes out in the next call, whatever its key (``FunctionBatcher``): a call
reads and writes each hash it touches once, so Redis spends far less per operation the more
a call carries. A cluster gets operations one by one. Every call is bounded by
``timeout_ms``; a timeout or a connection, cluster or read-only error becomes
``StoreUnavailable`` here, at the boundary, and nowhere else. A timeout is only declared
once the event loop has had a chance to read a reply that already arrived: a busy replica
must not mistake its own lag for a dead Redis (and fall back to the local share for
nothing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
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
    team_state_name,
)
from sentinel.limits.periods import Calendar
from sentinel.limits.spec import Admission, Dimension, LimitSpec
from sentinel.limits.spending import Spending, spending_of
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
from sentinel.redis_io.batching import LATE_REPLY_TURNS, FunctionBatcher
from sentinel.redis_io.client import hash_tag
from sentinel.redis_io.functions import RedisFunction, op_fields

__all__ = ["MERGED_QUOTA_TTL_MS", "RedisStore", "money_keys", "redis_keys"]

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
_MONEY_SUFFIXES = ("money", "holds", "credits", "ledger")
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


def money_keys(prefix: str, key_name: str) -> list[str]:
    """The four money keys of ``key_name`` (a principal id, or ``team:<team>``)."""
    tag = hash_tag(key_name)
    return [f"{prefix}:{tag}:{suffix}" for suffix in _MONEY_SUFFIXES]


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
        self._keys: dict[tuple[str, str | None], tuple[str, ...]] = {}  # → its Redis keys
        self._function = RedisFunction(
            "sentinel.limits", "limits.lua", "sentinel_limits", views=True
        )
        # A single server gets concurrent operations in one call; a cluster, one by one.
        self._batcher = (
            FunctionBatcher(client, self._function, self._timeout_s)
            if isinstance(client, Redis)
            else None
        )

    async def admit(self, spec: LimitSpec, admission: Admission, now_ms: int) -> Decision:
        """Check every dimension of ``spec`` and, only if all fit, record the request."""
        plan = plan_admission(spec, admission, now_ms, self.timing, self._calendar)
        if plan.credit_share is not None:
            raise ValueError("a credit share is the fallback's, never Redis's")
        money = spec.has_money
        team = spec.team if plan.checks.team else None
        reply = await self._run(admission.key_name, _admit_args(plan), money=money, team=team)
        return decide(spec, admission, plan, _outcome(reply))

    async def settle(
        self,
        reservation: Reservation,
        actual_tokens: int,
        now_ms: int,
        *,
        release_request: bool = False,
        nano_usd: int = 0,
    ) -> Spending | None:
        """Replace the reserved tokens with ``actual_tokens`` and release the lease; charge
        ``nano_usd`` instead of the money hold. What was charged so far, when it charged."""
        plan = plan_settlement(
            reservation,
            actual_tokens,
            now_ms,
            self.timing,
            self._calendar,
            release_request=release_request,
            nano_usd=nano_usd,
        )
        args = _settle_args(plan)
        money = reservation.holds_money
        if money:
            args += [
                _hold_member(reservation),
                plan.nano_charged,
                reservation.request_id,
                " ".join(plan.money_fields),  # counter names never hold a space
                " ".join(plan.team_fields),
            ]
        args += [reservation.reservation_id, now_ms + self.settled_memory_ms]
        reply = await self._run(reservation.key_name, args, money=money, team=reservation.team)
        if isinstance(reply, list):
            return spending_of(plan, reservation, reply[1:])  # Lua integers: ints
        return None

    async def renew(self, reservation: Reservation, now_ms: int) -> bool:
        """Extend the reservation's lease and money hold by the lease TTL; False when both
        are already gone."""
        if not reservation.needs_renewal:
            return False
        expires = now_ms + self.timing.lease_ttl_ms
        args: list[int | str] = [
            *self._common("renew", now_ms),
            reservation.reservation_id,
            expires,
        ]
        money = reservation.holds_money
        if money:
            args.append(_hold_member(reservation))
        result = await self._run(reservation.key_name, args, money=money, team=reservation.team)
        return bool(result)

    async def usage(self, key_name: str, spec: LimitSpec, now_ms: int) -> WindowUsage:
        """What ``key_name`` has used at ``now_ms`` on every dimension."""
        periods = tuple(self._calendar.period(d, now_ms, spec.timezone) for d, _ in spec.quotas())
        state = await self.state(key_name)
        return usage(state, now_ms, self.timing.span_ms, periods)

    async def state(self, key_name: str) -> KeyState:
        """Every raw counter and lease stored for ``key_name`` (read in one round trip)."""
        requests, tokens, quotas, leases, _ = redis_keys(self._prefix, key_name)
        money, holds, credits, _ = money_keys(self._prefix, key_name)
        async with self._client.pipeline(transaction=False) as pipe:
            # A pipeline only queues each call; execute() sends them all and awaits.
            _ = pipe.hgetall(requests)
            _ = pipe.hgetall(tokens)
            _ = pipe.hgetall(quotas)
            _ = pipe.zrange(leases, 0, -1, withscores=True, score_cast_func=_whole)
            _ = pipe.hgetall(money)
            _ = pipe.zrange(holds, 0, -1, withscores=True, score_cast_func=_whole)
            _ = pipe.hget(credits, "in")
            replies: list[Any] = await self._bounded(pipe.execute())
        return KeyState(
            requests=_buckets(replies[0]),
            tokens=_buckets(replies[1]),
            quotas={_text(k): int(v) for k, v in replies[2].items()},
            leases={_text(member): int(score) for member, score in replies[3]},
            money={_text(k): int(v) for k, v in replies[4].items() if _text(k) not in _INNER},
            holds=dict(_hold(_text(member), int(score)) for member, score in replies[5]),
            credits_in=int(replies[6] or 0),
        )

    async def merge(self, key_name: str, state: KeyState, now_ms: int) -> None:
        """Add ``state``'s live usage, leases and holds to Redis in one atomic call."""
        args = [*self._common("merge", now_ms), MERGED_QUOTA_TTL_MS]
        for section in (state.requests, state.tokens, state.quotas, state.leases):
            args.append(len(section))
            for name, value in section.items():
                args += [name, value]
        money = bool(state.money or state.holds)
        if money:
            args.append(len(state.money))
            for name, amount in state.money.items():
                args += [name, amount]
            args.append(len(state.holds))
            for hold, (amount, expires) in state.holds.items():
                args += [f"{hold}:{amount}", expires]
        await self._run(key_name, args, money=money)

    def _common(self, operation: str, now_ms: int) -> list[int | str]:
        return [operation, now_ms, self.timing.span_ms, self.timing.bucket_ms]

    async def _run(
        self,
        key_name: str,
        args: list[int | str],
        *,
        money: bool = False,
        team: str | None = None,
    ) -> Any:
        # Money adds the key's four money keys and, with a team budget, the team's two.
        wanted = (key_name, None if not money else team or "")
        keys = self._keys.get(wanted)
        if keys is None:
            if len(self._keys) >= _MAX_KEY_NAMES:
                self._keys.clear()
            found = redis_keys(self._prefix, key_name)
            if money:
                found += money_keys(self._prefix, key_name)
                if team:
                    found += money_keys(self._prefix, team_state_name(team))[:2]
            keys = self._keys[wanted] = tuple(found)
        op = op_fields(args)  # see limits.lua
        if self._batcher is None:
            (reply,) = await self._bounded(self._function.call(self._client, keys, [op]))
            return reply
        try:
            return await self._batcher.call(keys, op)  # bounded by the batch's timeout
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
    if plan.checks.checks:  # the key's budgets, its credits, its team's: any money
        args += (plan.nano_usd, plan.hold_expires_ms, plan.checks.args)
    return args


def _hold_member(reservation: Reservation) -> str:
    """The holds zset member of ``reservation``'s hold ("" when it holds nothing)."""
    if reservation.nano_usd <= 0:
        return ""
    return f"{reservation.reservation_id}:{reservation.nano_usd}"


def _hold(member: str, expires: int) -> tuple[str, tuple[int, int]]:
    """A holds zset entry as ``KeyState.holds`` has it: id → (nano-USD, expiry)."""
    hold, _, amount = member.rpartition(":")
    return hold, (int(amount), expires)


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
    allowed, code, retry, exceeds, requests, tokens, requests_reset, tokens_reset = reply[:8]
    return Outcome(
        allowed=allowed == 1,
        dimension=_DIMENSIONS[code - 1] if code else None,
        retry_after_ms=retry,
        exceeds_limit=exceeds == 1,
        requests_used=requests,
        tokens_used=tokens,
        requests_reset_ms=requests_reset,
        tokens_reset_ms=tokens_reset,
        money_remaining=tuple(reply[8:]),
    )


def _whole(score: bytes | str | float) -> int:
    return int(score)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _buckets(fields: dict[bytes | str, bytes | str]) -> dict[int, int]:
    """The buckets of a window hash, without its meta fields (which are not numbers)."""
    return {int(k): int(v) for k, v in fields.items() if k not in _META}


_META = frozenset({b"s", b"l", b"h", b"b", "s", "l", "h", "b"})
_INNER = frozenset({"held", "next"})
"""The money hash's bookkeeping fields (the holds' sum and expiry bound), not counters."""
