"""The limits arithmetic, once, as plain Python on plain dicts: the reference implementation.

The in-memory store runs these functions directly; ``limits.lua`` implements the very same
steps on Redis (keeping a running sum so that an admission need not read every bucket), and
a contract test checks that both give identical replies and identical stored counters on
random operation sequences.

Sliding window. Time is cut into buckets of ``bucket_ms`` (1 s by default); a request or a
token amount is added to the bucket containing ``now``. A bucket starting at ``s`` counts
while ``s + span_ms > now``, where ``span_ms = window_ms + bucket_ms``: every admitted unit
counts for at least one full window (60 s) and at most one bucket longer, so no interval of
``window_ms`` milliseconds ever holds more than the limit. The price is that capacity comes
back up to one bucket late. Everything is an integer (milliseconds, counts); nothing divides.

Leases (``max_parallel``) are reservation ids with an expiry; expired ones are purged on every
admission, so a replica that dies mid-request frees its slots after ``lease_ttl_ms``. Calendar
quotas are counters named by period (see ``periods.py``); when an admission opens a new
period, that quota's counters of earlier periods are dropped.

Money (nano-USD). A key's dollar budgets are counters of what was *charged* per period
(``usd_day:2024-03-09`` …, ``usd_total``); prepaid credits are the amount ever topped up
(``credits_in``) less what was charged against it (the ``credits`` counter). A request's
hold is kept apart, under its reservation id with an expiry like a lease: every budget
checks ``charged + held + hold <= limit`` and credits ``held + hold <= balance``, all in the
same call as the token limits. Settlement drops the hold and charges the real cost to the
periods current then; a hold never settled (a replica killed mid-request) expires. A team's
budgets are the same counters and holds in the team's own state, checked in the same call.

The plans and outcomes built for every request are slotted dataclasses that are not
frozen: a frozen dataclass sets each field through ``object.__setattr__``, which made building
one five times slower (5.4 µs against 1.0 µs for an ``AdmitPlan``). They are never changed
once built, and hash by value as frozen ones do (``unsafe_hash``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from sentinel.config.limits import timing_problems
from sentinel.limits.holds import NO_MONEY, MoneyChecks, check_money
from sentinel.limits.periods import Period
from sentinel.limits.spec import Dimension

__all__ = [
    "AdmitPlan",
    "KeyState",
    "Outcome",
    "QuotaCheck",
    "QuotaSettlement",
    "SettlePlan",
    "Timing",
    "WindowUsage",
    "absorb",
    "admit",
    "renew",
    "settle",
    "usage",
]

_K = TypeVar("_K", int, str)


@dataclass(frozen=True, slots=True)
class Timing:
    """The geometry of the windows and leases, shared by every key of a store."""

    window_ms: int = 60_000
    bucket_ms: int = 1_000
    lease_ttl_ms: int = 600_000
    parallel_retry_ms: int = 1_000

    @property
    def span_ms(self) -> int:
        """How long a bucket counts after its start: one window plus one bucket."""
        return self.window_ms + self.bucket_ms

    def bucket_of(self, now_ms: int) -> int:
        """The start of the bucket containing ``now_ms``."""
        return now_ms - now_ms % self.bucket_ms

    def problems(self) -> list[str]:
        """Every invalid field as ``"field: message"``; empty when all is well."""
        return timing_problems(
            self.bucket_ms, self.lease_ttl_ms, self.parallel_retry_ms, self.window_ms
        )


@dataclass(slots=True)
class KeyState:
    """Everything stored for one API key, exactly as Redis holds it in four keys."""

    requests: dict[int, int] = field(default_factory=dict)
    """Bucket start (ms) → requests admitted in that bucket (always > 0)."""
    tokens: dict[int, int] = field(default_factory=dict)
    """Bucket start (ms) → tokens charged in that bucket (always > 0)."""
    quotas: dict[str, int] = field(default_factory=dict)
    """Period name (``day:2024-03-09``) → tokens charged in that period (always > 0)."""
    leases: dict[str, int] = field(default_factory=dict)
    """Reservation id → lease expiry (ms)."""
    money: dict[str, int] = field(default_factory=dict)
    """Money counter (``usd_day:2024-03-09``, ``usd_total``, ``credits``) → nano-USD charged."""
    holds: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Reservation id → (nano-USD held, hold expiry in ms)."""
    credits_in: int = 0
    """Nano-USD ever topped up (a credit account exists once this is above zero)."""

    def is_empty(self) -> bool:
        """Whether nothing at all is stored (what a leak test expects after full refunds)."""
        return not (
            self.requests
            or self.tokens
            or self.quotas
            or self.leases
            or self.money
            or self.holds
            or self.credits_in
        )


@dataclass(slots=True, unsafe_hash=True)  # built per request: see the module doc
class QuotaCheck:
    """One configured quota as an admission sees it: its current period and its limit."""

    period: Period
    limit: int


@dataclass(slots=True, unsafe_hash=True)  # built per request: see the module doc
class AdmitPlan:
    """Every input of one admission, already resolved to integers (the Lua ARGV)."""

    now_ms: int
    bucket_start_ms: int
    bucket_ms: int
    span_ms: int
    rpm: int | None
    tpm: int | None
    max_parallel: int | None
    tokens: int
    reservation_id: str
    lease_expires_ms: int
    parallel_retry_ms: int
    quotas: tuple[QuotaCheck, ...]
    nano_usd: int = 0
    hold_expires_ms: int = 0
    credit_share: int | None = None
    checks: MoneyChecks = NO_MONEY
    """The key's money checks, its credits' and its team's, with what every admission
    derives from them (the Lua argument, the reservation's dimensions and limits)."""

    @property
    def holds_money(self) -> bool:
        """Whether the key's own state keeps a hold for this request."""
        return bool(self.checks.money) or self.checks.credits


@dataclass(slots=True, unsafe_hash=True)  # built per request: see the module doc
class Outcome:
    """The reply of one admission (the Lua reply, decoded)."""

    allowed: bool
    dimension: Dimension | None
    retry_after_ms: int
    exceeds_limit: bool
    requests_used: int
    tokens_used: int
    requests_reset_ms: int
    tokens_reset_ms: int
    money_remaining: tuple[int, ...] = ()
    """Nano-USD left on each money check after the admission (budgets, credits, team)."""


@dataclass(slots=True, unsafe_hash=True)  # built per request: see the module doc
class QuotaSettlement:
    """One quota a reservation charged: the period it charged and the period current now."""

    reserved: str
    current: Period


@dataclass(slots=True, unsafe_hash=True)  # built per request: see the module doc
class SettlePlan:
    """Every input of one settlement, resolved to integers (the Lua ARGV)."""

    now_ms: int
    bucket_start_ms: int
    bucket_ms: int
    span_ms: int
    reserved_bucket_ms: int
    delta_tokens: int
    counts_tokens: bool
    release_request: bool
    reservation_id: str | None
    quotas: tuple[QuotaSettlement, ...]
    hold_id: str = ""
    nano_charged: int = 0
    money_fields: tuple[str, ...] = ()
    """The key's money counters to charge: the periods current at settlement, ``usd_total``,
    ``credits``; empty when the key holds no money."""
    team_fields: tuple[str, ...] = ()
    """The team's counters to charge; empty when no team budget applied."""


@dataclass(frozen=True, slots=True)
class WindowUsage:
    """What a key has used right now, on every dimension (limits aside)."""

    requests: int
    tokens: int
    parallel: int
    day: int
    week: int
    month: int


def admit(state: KeyState, plan: AdmitPlan, team: KeyState | None = None) -> Outcome:
    """Check every configured dimension and, only if all of them fit, record the request.

    ``team`` is the state of the team whose budgets ``plan.checks.team`` holds."""
    now = plan.now_ms
    verdict = _Verdict()
    requests_used = tokens_used = 0
    if plan.rpm is not None:
        requests_used = _purge_window(state.requests, now, plan.span_ms)
        verdict.consider(
            Dimension.REQUESTS, *_check(state.requests, requests_used, plan.rpm, 1, plan)
        )
    if plan.tpm is not None:
        tokens_used = _purge_window(state.tokens, now, plan.span_ms)
        verdict.consider(
            Dimension.TOKENS, *_check(state.tokens, tokens_used, plan.tpm, plan.tokens, plan)
        )
    for lease, expires in list(state.leases.items()):
        if expires <= now:
            del state.leases[lease]
    if plan.max_parallel is not None:
        verdict.consider(Dimension.PARALLEL, *_check_parallel(state.leases, plan))
    for quota in plan.quotas:
        if quota.period.name not in state.quotas:  # a new period: drop the earlier ones
            _purge_periods(state.quotas, quota.period)
        used = state.quotas.get(quota.period.name, 0)
        over = plan.tokens > quota.limit
        refused = over or used + plan.tokens > quota.limit
        verdict.consider(quota.period.dimension, refused, over, quota.period.end_ms - now)
    remaining = check_money(state, team, plan, verdict.consider)
    allowed = verdict.dimension is None
    if allowed:
        requests_used, tokens_used = _record(state, plan, requests_used, tokens_used)
        if plan.nano_usd > 0:
            hold = (plan.nano_usd, plan.hold_expires_ms)
            if plan.holds_money:
                state.holds[plan.reservation_id] = hold
            if plan.checks.team and team is not None:
                team.holds[plan.reservation_id] = hold
            remaining = [left - plan.nano_usd for left in remaining]
    return Outcome(
        allowed=allowed,
        dimension=verdict.dimension,
        retry_after_ms=verdict.retry_after_ms,
        exceeds_limit=verdict.exceeds_limit,
        requests_used=requests_used,
        tokens_used=tokens_used,
        requests_reset_ms=_reset_ms(state.requests, plan) if plan.rpm is not None else 0,
        tokens_reset_ms=_reset_ms(state.tokens, plan) if plan.tpm is not None else 0,
        money_remaining=tuple(max(0, left) for left in remaining),
    )


def settle(state: KeyState, plan: SettlePlan, team: KeyState | None = None) -> None:
    """Charge or refund ``delta_tokens`` where the reservation was recorded; free its lease.

    A refund only lands in a bucket or period that still counts; a charge for a bucket or
    period that is over lands in the current one instead. Counters never go below zero.
    Money: the hold is dropped and ``nano_charged`` added to every money counter named.
    """
    live = plan.reserved_bucket_ms + plan.span_ms > plan.now_ms
    delta = plan.delta_tokens
    if plan.counts_tokens and delta != 0:
        if live:
            _add(state.tokens, plan.reserved_bucket_ms, delta)
        elif delta > 0:
            _add(state.tokens, plan.bucket_start_ms, delta)
    if plan.release_request and live:
        _add(state.requests, plan.reserved_bucket_ms, -1)
    for quota in plan.quotas:
        if delta == 0:
            continue
        if quota.reserved == quota.current.name:
            _add(state.quotas, quota.reserved, delta)
        elif delta > 0:
            _add(state.quotas, quota.current.name, delta)
    if plan.reservation_id is not None:
        state.leases.pop(plan.reservation_id, None)
    if plan.money_fields:
        state.holds.pop(plan.hold_id, None)
        if plan.nano_charged > 0:
            for name in plan.money_fields:
                _add(state.money, name, plan.nano_charged)
    if plan.team_fields and team is not None:
        team.holds.pop(plan.hold_id, None)
        if plan.nano_charged > 0:
            for name in plan.team_fields:
                _add(team.money, name, plan.nano_charged)


def renew(state: KeyState, reservation_id: str, now_ms: int, expires_ms: int) -> bool:
    """Move a live lease's and a live hold's expiry to ``expires_ms``; an expired or released
    one stays gone. True when either was renewed."""
    renewed = False
    current = state.leases.get(reservation_id)
    if current is not None and current > now_ms:
        state.leases[reservation_id] = expires_ms
        renewed = True
    hold = state.holds.get(reservation_id)
    if hold is not None and hold[1] > now_ms:
        state.holds[reservation_id] = (hold[0], expires_ms)
        renewed = True
    return renewed


def absorb(state: KeyState, other: KeyState, now_ms: int, span_ms: int) -> None:
    """Add ``other``'s usage into ``state`` (the write-back after an outage).

    Live buckets and every quota and money counter are summed; live leases and holds are kept
    with the later of the two expiries. Buckets, leases and holds that no longer count are
    not copied, nor are top-ups (a write-back carries usage only).
    """
    for target, source in ((state.requests, other.requests), (state.tokens, other.tokens)):
        for start, count in source.items():
            if start + span_ms > now_ms:
                _add(target, start, count)
    for name, count in other.quotas.items():
        _add(state.quotas, name, count)
    for lease, expires in other.leases.items():
        if expires > now_ms:
            state.leases[lease] = max(expires, state.leases.get(lease, expires))
    for name, amount in other.money.items():
        _add(state.money, name, amount)
    for hold, (amount, expires) in other.holds.items():
        if expires > now_ms:
            known = state.holds.get(hold)
            state.holds[hold] = (amount, max(expires, known[1] if known else expires))


def usage(state: KeyState, now_ms: int, span_ms: int, periods: tuple[Period, ...]) -> WindowUsage:
    """What ``state`` counts at ``now_ms``, without changing it."""
    per_period = {period.dimension: state.quotas.get(period.name, 0) for period in periods}
    return WindowUsage(
        requests=sum(c for s, c in state.requests.items() if s + span_ms > now_ms),
        tokens=sum(c for s, c in state.tokens.items() if s + span_ms > now_ms),
        parallel=sum(1 for expires in state.leases.values() if expires > now_ms),
        day=per_period.get(Dimension.DAY, 0),
        week=per_period.get(Dimension.WEEK, 0),
        month=per_period.get(Dimension.MONTH, 0),
    )


@dataclass(slots=True)
class _Verdict:
    """Which refusal to report: any request that can never fit wins, else the longest wait."""

    dimension: Dimension | None = None
    retry_after_ms: int = 0
    exceeds_limit: bool = False

    def consider(self, dimension: Dimension, refused: bool, over: bool, retry_ms: int) -> None:
        if not refused or self.exceeds_limit:
            return
        if over or self.dimension is None or retry_ms > self.retry_after_ms:
            self.dimension, self.retry_after_ms, self.exceeds_limit = dimension, retry_ms, over


def _purge_window(buckets: dict[int, int], now_ms: int, span_ms: int) -> int:
    for start in [s for s in buckets if s + span_ms <= now_ms]:
        del buckets[start]
    return sum(buckets.values())


def _check(
    buckets: dict[int, int], used: int, limit: int, amount: int, plan: AdmitPlan
) -> tuple[bool, bool, int]:
    """(refused, can never fit, retry after ms) for adding ``amount`` to a window."""
    if amount > limit:
        return True, True, 0
    if used + amount <= limit:
        return False, False, 0
    freed = 0
    for start in sorted(buckets):
        freed += buckets[start]
        if used - freed + amount <= limit:
            return True, False, start + plan.span_ms - plan.now_ms
    return True, False, plan.span_ms  # unreachable: amount <= limit once every bucket is gone


def _check_parallel(leases: dict[str, int], plan: AdmitPlan) -> tuple[bool, bool, int]:
    limit = plan.max_parallel
    assert limit is not None
    if limit < 1:
        return True, True, 0
    if len(leases) + 1 <= limit:
        return False, False, 0
    return True, False, min(min(leases.values()) - plan.now_ms, plan.parallel_retry_ms)


def _purge_periods(quotas: dict[str, int], period: Period) -> None:
    prefix = f"{period.dimension}:"
    for name in [n for n in quotas if n.startswith(prefix) and n != period.name]:
        del quotas[name]


def _record(
    state: KeyState, plan: AdmitPlan, requests_used: int, tokens_used: int
) -> tuple[int, int]:
    if plan.rpm is not None:
        _add(state.requests, plan.bucket_start_ms, 1)
        requests_used += 1
    if plan.tpm is not None and plan.tokens > 0:
        _add(state.tokens, plan.bucket_start_ms, plan.tokens)
        tokens_used += plan.tokens
    if plan.max_parallel is not None:
        state.leases[plan.reservation_id] = plan.lease_expires_ms
    if plan.tokens > 0:
        for quota in plan.quotas:
            _add(state.quotas, quota.period.name, plan.tokens)
    return requests_used, tokens_used


def _reset_ms(buckets: dict[int, int], plan: AdmitPlan) -> int:
    """Time until the window is empty again (OpenAI's ``x-ratelimit-reset-*``)."""
    if not buckets:
        return 0
    return max(buckets) + plan.span_ms - plan.now_ms


def _add(counters: dict[_K, int], name: _K, delta: int) -> None:
    value = counters.get(name, 0) + delta
    if value <= 0:
        counters.pop(name, None)
    else:
        counters[name] = value
