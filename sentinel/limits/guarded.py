"""Redis first, a fail-closed local share when Redis cannot answer, and a write-back after.

``GuardedStore`` is what the proxy talks to when ``[redis]`` is configured. While Redis
answers, it is a pass-through. When a call times out or the connection fails, the breaker
opens and admissions go to a ``MemoryStore`` with every limit divided by ``replicas``
(``on_unavailable = "local"``), marked ``degraded``; or they raise ``ServiceUnavailable``
(``"deny"``). An exception never admits anything.

Recovery: once the breaker lets a probe through (``reopen_ms`` after the failure, on the next
admission or ``recover`` call), the probe replays the settlements that could not reach Redis,
then writes every key's locally admitted usage and leases into Redis (one Lua call per key),
and only then closes the breaker. Until it closes, admissions stay local, so nothing is
admitted against a Redis that does not yet know the local usage.

Money is shared differently (DESIGN, "Money arithmetic"): a dollar budget or a credit balance
may have been mostly spent by other replicas, so the local share of it is the *last remaining
amount Redis reported to this replica* for that key, divided by ``replicas * workers``; a key
this replica never saw admitted in Redis (or not for ``money_memory_ms``) gets nothing. The
local spend is written back with the rest (charges against credits as one ledger entry).

Settlement goes to the store that holds the reservation: a degraded reservation settles
locally until its key has been written back, and in Redis after. A settlement that cannot
reach Redis is queued (bounded; drops are counted) and replayed by the next probe.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, replace
from typing import Literal

import structlog

from sentinel.breaker import BreakerPolicy, CircuitBreaker
from sentinel.config.budgets import Budgets
from sentinel.errors import ServiceUnavailable
from sentinel.limits.decision import Budget, Decision, Reservation
from sentinel.limits.memory import MemoryStore
from sentinel.limits.spec import MONEY, TEAM_MONEY, Admission, Dimension, LimitSpec, local_share
from sentinel.limits.spending import Spending
from sentinel.limits.store import MergingStore, StoreUnavailable
from sentinel.limits.window import KeyState, WindowUsage

__all__ = ["REDIS_BREAKER", "GuardStats", "GuardedStore", "OnUnavailable"]

log = structlog.get_logger("sentinel.limits")

OnUnavailable = Literal["local", "deny"]

REDIS_BREAKER = BreakerPolicy(failures=1, cooldown_ms=1_000)
"""Open on the first failure, probe once a second. Only the probe (the write-back) reports a
success, so only the probe closes it: a late success of a call started before the failure
cannot skip the write-back."""


@dataclass(slots=True)
class GuardStats:
    """Counters for metrics: what the fallback did and how often."""

    unavailable: int = 0
    """Calls to Redis that timed out or failed to connect."""
    degraded_decisions: int = 0
    """Admissions answered by the local share."""
    denied: int = 0
    """Admissions answered with 503 (``on_unavailable = "deny"``)."""
    settlements_queued: int = 0
    """Settlements that could not reach Redis and wait for the next probe."""
    settlements_dropped: int = 0
    """Queued settlements pushed out by a full queue (their reservation stays charged)."""
    recoveries: int = 0
    """Successful probes: Redis is back and the local usage was written to it."""
    keys_written_back: int = 0
    """Keys whose local usage was merged into Redis."""


@dataclass(slots=True, unsafe_hash=True)  # per request: not frozen (see decision.py)
class _Settlement:
    reservation: Reservation
    actual_tokens: int
    now_ms: int
    release_request: bool
    nano_usd: int = 0


MONEY_MEMORY_MS = 300_000
"""How long the remaining money Redis last reported for a key may seed its local share."""
_MAX_MONEY_KEYS = 100_000


class GuardedStore:
    """A ``LimitStore`` over Redis that fails closed to a per-replica local share."""

    def __init__(
        self,
        primary: MergingStore,
        fallback: MemoryStore | None = None,
        *,
        replicas: int = 1,
        on_unavailable: OnUnavailable = "local",
        breaker: CircuitBreaker | None = None,
        max_queued_settlements: int = 10_000,
        workers: int = 1,
        money_memory_ms: int = MONEY_MEMORY_MS,
    ) -> None:
        self.stats = GuardStats()
        self.breaker = breaker or CircuitBreaker(REDIS_BREAKER)
        self._primary = primary
        self._fallback = fallback or MemoryStore(primary.timing)
        self._replicas = max(1, replicas)
        self._money_parts = self._replicas * max(1, workers)
        self._money_memory_ms = money_memory_ms
        # Key name → (when, what was left of its money) as Redis last reported.
        self._money_left: dict[str, tuple[int, Budget]] = {}
        self._on_unavailable = on_unavailable
        self._queue: deque[_Settlement] = deque()
        self._max_queued = max_queued_settlements
        self._local: dict[str, set[str]] = {}  # key name → ids of reservations held locally
        # Key names whose local usage is being written back right now, each with the event set
        # when it has arrived (or failed to).
        self._in_transit: dict[str, asyncio.Event] = {}

    @property
    def is_degraded(self) -> bool:
        """Whether admissions are currently answered without Redis."""
        return not self.breaker.is_closed

    async def admit(self, spec: LimitSpec, admission: Admission, now_ms: int) -> Decision:
        """Admit against Redis, or against the local share when Redis cannot answer."""
        while (written := self._in_transit.get(admission.key_name)) is not None:
            # The key's local usage is on its way to Redis: decided here, the request would
            # see an empty local window and be admitted past the share. Wait for it to land.
            await written.wait()
        if not self.breaker.is_closed and self.breaker.try_acquire(now_ms):
            await self._recover(now_ms)
        if self.breaker.is_closed:
            try:
                decision = await self._primary.admit(spec, admission, now_ms)
            except StoreUnavailable as exc:
                self._failed(now_ms, exc)
            else:
                budget = decision.budget
                if budget is not None:  # remembered for the local share (inline: per request)
                    key_name = admission.key_name
                    money_left = self._money_left
                    if len(money_left) >= _MAX_MONEY_KEYS and key_name not in money_left:
                        self._forget_oldest_money()
                    money_left[key_name] = (now_ms, budget)
                return decision
        # No await from the breaker check to the local admission: a probe that found the
        # local store empty and closed the breaker cannot miss an admission made here.
        return await self._admit_locally(spec, admission, now_ms)

    async def settle(
        self,
        reservation: Reservation,
        actual_tokens: int,
        now_ms: int,
        *,
        release_request: bool = False,
        nano_usd: int = 0,
    ) -> Spending | None:
        """Settle in the store holding the reservation; queue it while Redis is unreachable
        (what it charged is then not known: None)."""
        settlement = _Settlement(reservation, actual_tokens, now_ms, release_request, nano_usd)
        if reservation.key_name in self._in_transit:
            # Its key's usage is on its way to Redis: replay once it has arrived.
            self._enqueue(settlement)
        elif self._is_local(reservation):
            return await self._settle_locally(settlement)
        elif not self.breaker.is_closed:
            self._enqueue(settlement)
        else:
            try:
                return await self._settle_in_primary(settlement)
            except StoreUnavailable as exc:
                self._failed(now_ms, exc)
                self._enqueue(settlement)
        return None

    async def renew(self, reservation: Reservation, now_ms: int) -> bool:
        """Extend the lease where it lives; False when that store cannot be reached."""
        if reservation.key_name in self._in_transit:
            return False
        if self._is_local(reservation):
            return await self._fallback.renew(reservation, now_ms)
        if not self.breaker.is_closed:
            return False
        try:
            return await self._primary.renew(reservation, now_ms)
        except StoreUnavailable as exc:
            self._failed(now_ms, exc)
            return False

    async def usage(self, key_name: str, spec: LimitSpec, now_ms: int) -> WindowUsage:
        """What Redis counts for ``key_name``; 503 while Redis is unreachable."""
        try:
            return await self._primary.usage(key_name, spec, now_ms)
        except StoreUnavailable as exc:
            raise ServiceUnavailable(code="limits_unavailable", reason=str(exc)) from exc

    async def state(self, key_name: str) -> KeyState:
        """Redis's raw counters for ``key_name``; 503 while Redis is unreachable."""
        try:
            return await self._primary.state(key_name)
        except StoreUnavailable as exc:
            raise ServiceUnavailable(code="limits_unavailable", reason=str(exc)) from exc

    async def recover(self, now_ms: int) -> bool:
        """Probe Redis now if the breaker allows it; True when the breaker is closed after."""
        if not self.breaker.is_closed and self.breaker.try_acquire(now_ms):
            await self._recover(now_ms)
        return self.breaker.is_closed

    async def local_state(self, key_name: str) -> KeyState:
        """What the local share holds for ``key_name`` and has not yet written back."""
        return await self._fallback.state(key_name)

    async def _admit_locally(self, spec: LimitSpec, admission: Admission, now_ms: int) -> Decision:
        if self._on_unavailable == "deny":
            self.stats.denied += 1
            raise ServiceUnavailable(
                "Rate limits cannot be checked right now. Please try again shortly.",
                code="limits_unavailable",
                headers={"retry-after": "1"},
            )
        self.stats.degraded_decisions += 1
        share = local_share(spec, self._replicas)
        if spec.has_money:
            share = self._money_share(share, admission.key_name, now_ms)
        decision = await self._fallback.admit(share, admission, now_ms)
        reservation = decision.reservation
        if reservation is not None:
            self._local.setdefault(admission.key_name, set()).add(reservation.reservation_id)
            reservation = replace(reservation, degraded=True)
        refusal = decision.refusal
        if refusal is not None and refusal.exceeds_limit:
            if not _exceeds(spec, refusal.dimension, admission):
                # Too large for this replica's share only: it fits once Redis is back.
                wait = max(self.breaker.retry_in_ms(now_ms), 1)
                refusal = replace(refusal, exceeds_limit=False, retry_after_ms=wait)
        return replace(decision, reservation=reservation, refusal=refusal, degraded=True)

    def _forget_oldest_money(self) -> None:
        oldest = min(self._money_left, key=lambda k: self._money_left[k][0])
        del self._money_left[oldest]

    def _money_share(self, spec: LimitSpec, key_name: str, now_ms: int) -> LimitSpec:
        """``spec`` with each money limit replaced by this process's share of what Redis
        last said was left; nothing for a key not seen lately."""
        seen = self._money_left.get(key_name)
        fresh = seen is not None and now_ms - seen[0] <= self._money_memory_ms
        left = dict(seen[1].left) if seen is not None and fresh else {}
        parts = self._money_parts

        def part(dimension: Dimension) -> int:
            return left.get(dimension, 0) // parts

        def shares(budgets: Budgets, dimensions: tuple[Dimension, ...]) -> Budgets:
            fields = ("usd_per_day", "usd_per_week", "usd_per_month", "usd_total")
            return Budgets(
                **{
                    name: None if getattr(budgets, name) is None else part(dimension)
                    for name, dimension in zip(fields, dimensions, strict=True)
                }
            )

        return replace(
            spec,
            budgets=shares(spec.budgets, MONEY),
            team_budgets=shares(spec.team_budgets, TEAM_MONEY),
            credit_share=part(Dimension.CREDITS) if spec.credits else None,
        )

    def _is_local(self, reservation: Reservation) -> bool:
        held = self._local.get(reservation.key_name)
        return reservation.degraded and held is not None and reservation.reservation_id in held

    async def _settle_locally(self, settlement: _Settlement) -> Spending | None:
        reservation = settlement.reservation
        held = self._local.get(reservation.key_name, set())
        held.discard(reservation.reservation_id)
        if not held:
            self._local.pop(reservation.key_name, None)
        return await self._fallback.settle(
            reservation,
            settlement.actual_tokens,
            settlement.now_ms,
            release_request=settlement.release_request,
            nano_usd=settlement.nano_usd,
        )

    async def _settle_in_primary(self, settlement: _Settlement) -> Spending | None:
        return await self._primary.settle(
            settlement.reservation,
            settlement.actual_tokens,
            settlement.now_ms,
            release_request=settlement.release_request,
            nano_usd=settlement.nano_usd,
        )

    def _enqueue(self, settlement: _Settlement) -> None:
        if len(self._queue) >= self._max_queued:
            self._queue.popleft()
            self.stats.settlements_dropped += 1
        self._queue.append(settlement)
        self.stats.settlements_queued += 1

    def _failed(self, now_ms: int, exc: StoreUnavailable) -> None:
        self.stats.unavailable += 1
        was_closed = self.breaker.is_closed
        self.breaker.record_failure(now_ms)
        if was_closed:
            log.warning(
                "limits_degraded",
                reason=str(exc),
                on_unavailable=self._on_unavailable,
                replicas=self._replicas,
            )

    async def _recover(self, now_ms: int) -> None:
        """The probe: replay queued settlements, write back every local key, then close."""
        replayed = written = 0
        try:
            while True:
                if self._queue:
                    await self._replay(self._queue.popleft())
                    replayed += 1
                elif names := self._fallback.key_names():
                    await self._write_back(names[0], now_ms)
                    written += 1
                else:
                    break
        except StoreUnavailable as exc:
            self._failed(now_ms, exc)
            return
        # Nothing local is left and no await separates that check from closing.
        self._local.clear()
        self.breaker.record_success(now_ms)
        self.stats.recoveries += 1
        log.info("limits_recovered", settlements_replayed=replayed, keys_written_back=written)

    async def _replay(self, settlement: _Settlement) -> None:
        if self._is_local(settlement.reservation):
            await self._settle_locally(settlement)
            return
        try:
            await self._settle_in_primary(settlement)
        except StoreUnavailable:
            self._queue.appendleft(settlement)
            raise

    async def _write_back(self, key_name: str, now_ms: int) -> None:
        ids = set(self._local.get(key_name, ()))
        state = self._fallback.take(key_name)
        written = self._in_transit[key_name] = asyncio.Event()
        try:
            await self._primary.merge(key_name, state, now_ms)
        except BaseException:
            await self._fallback.merge(key_name, state, now_ms)
            raise
        finally:
            del self._in_transit[key_name]
            written.set()
        held = self._local.get(key_name)
        if held is not None:
            held -= ids
            if not held:
                del self._local[key_name]
        self.stats.keys_written_back += 1


def _exceeds(spec: LimitSpec, dimension: Dimension, admission: Admission) -> bool:
    """Whether one request is larger than ``spec``'s full limit on ``dimension`` (money never
    says so locally: the balance or budget Redis holds may have room)."""
    if dimension.is_money:
        return False
    limit = spec.limit(dimension)
    amount = 1 if dimension in (Dimension.REQUESTS, Dimension.PARALLEL) else admission.tokens
    return limit is not None and amount > limit
