"""Admission decisions and reservations, and the plans every store hands to the arithmetic.

``plan_admission`` and ``plan_settlement`` turn a spec, a request and the clock into the
integers of ``window.py`` (and the ARGV of ``limits.lua``); ``decide`` turns the arithmetic's
``Outcome`` into the ``Decision`` the proxy acts on. Both stores share these: no drift.

The decisions and reservations built for every request are slotted dataclasses that are not
frozen, as ``window.py``'s plans: a frozen dataclass sets each field through
``object.__setattr__``, several times slower to build. They are never changed once built, and
hash by value as frozen ones do (``unsafe_hash``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sentinel.config.limits import MAX_AMOUNT
from sentinel.limits.holds import CREDITS_FIELD, NO_MONEY, TOTAL_FIELD, MoneyCheck, MoneyChecks
from sentinel.limits.periods import Calendar, Period
from sentinel.limits.spec import MONEY, TEAM_MONEY, Admission, Dimension, LimitSpec
from sentinel.limits.window import (
    AdmitPlan,
    Outcome,
    QuotaCheck,
    QuotaSettlement,
    SettlePlan,
    Timing,
)

__all__ = [
    "Budget",
    "Decision",
    "RateWindow",
    "Refusal",
    "Reservation",
    "decide",
    "plan_admission",
    "plan_settlement",
    "team_state_name",
]


def team_state_name(team: str) -> str:
    """The store's name for a team's money state (principal ids never start with ``team:``)."""
    return "team:" + team


@dataclass(slots=True, unsafe_hash=True)  # built per request: see the module doc
class Reservation:
    """What an admitted request holds until it is settled: exactly what was recorded, where.

    The proxy keeps it for the request's lifetime and hands it back to ``settle`` once, on
    every outcome. ``degraded`` marks a reservation made by the local fallback store.
    """

    key_name: str
    request_id: str
    reservation_id: str
    tokens: int
    bucket_start_ms: int
    counts_requests: bool
    counts_tokens: bool
    has_lease: bool
    quotas: tuple[Period, ...]
    timezone: str
    degraded: bool = False
    nano_usd: int = 0
    """The money held (nano-USD) on ``money``, the credits and ``team_money``."""
    money: tuple[Dimension, ...] = ()
    credits: bool = False
    team: str | None = None
    team_money: tuple[Dimension, ...] = ()
    spend_dimensions: tuple[Dimension, ...] = ()
    """The dimension of each money counter a settlement charges, in its order: the key's
    budgets, its credits, the team's budgets (for the budget alerts)."""
    spend_limits: tuple[int, ...] = ()
    """The limit of each of ``spend_dimensions`` (nano-USD; 0 for credits)."""

    @property
    def holds_money(self) -> bool:
        """Whether settlement must charge money (and drop a hold)."""
        return bool(self.money or self.credits or self.team_money)

    @property
    def needs_renewal(self) -> bool:
        """Whether a lease or a money hold expires unless renewed while the request runs."""
        return self.has_lease or (self.nano_usd > 0 and self.holds_money)


@dataclass(slots=True, unsafe_hash=True)  # built per request: see the module doc
class RateWindow:
    """One window's state for OpenAI's ``x-ratelimit-{limit,remaining,reset}-*`` headers."""

    limit: int
    remaining: int
    reset_ms: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request was refused and when it may fit.

    ``exceeds_limit``: the request alone is larger than the limit, so no wait helps.
    ``retry_after_ms`` comes from the window's state: when enough old buckets expire, when the
    quota period ends, or when the first lease may free.
    """

    dimension: Dimension
    limit: int
    retry_after_ms: int
    exceeds_limit: bool

    @property
    def is_quota(self) -> bool:
        """Whether the client should not retry soon (OpenAI's ``insufficient_quota``)."""
        return self.exceeds_limit or self.dimension.is_quota

    @property
    def code(self) -> str:
        """The OpenAI error code: ``insufficient_quota`` or ``rate_limit_exceeded``."""
        return "insufficient_quota" if self.is_quota else "rate_limit_exceeded"


@dataclass(slots=True, unsafe_hash=True)  # built per request: see the module doc
class Budget:
    """What is left of a key's money after an admission, for the ``x-sentinel-budget-*``
    headers and the fallback's share: the tightest money dimension, and each one's.

    Not a named tuple either: its Python ``__new__`` takes twice the time of this ``__init__``.
    """

    remaining: int
    """Nano-USD left on the tightest dimension (holds of requests in flight subtracted)."""
    reset_ms: int | None
    """When the tightest dimension renews (None: never, as ``usd_total`` and credits)."""
    dimensions: tuple[Dimension, ...]
    """Every money dimension checked."""
    values: tuple[int, ...]
    """Nano-USD left on each of ``dimensions``."""

    @property
    def left(self) -> tuple[tuple[Dimension, int], ...]:
        """Nano-USD left on every money dimension checked."""
        return tuple(zip(self.dimensions, self.values, strict=True))


@dataclass(slots=True, unsafe_hash=True)  # built per request: see the module doc
class Decision:
    """The answer to one admission, with what the response headers need either way."""

    reservation: Reservation | None
    refusal: Refusal | None
    requests: RateWindow | None
    tokens: RateWindow | None
    degraded: bool = False
    budget: Budget | None = None

    @property
    def allowed(self) -> bool:
        """Whether the request may go upstream (it then holds ``reservation``)."""
        return self.reservation is not None


def plan_admission(
    spec: LimitSpec, admission: Admission, now_ms: int, timing: Timing, calendar: Calendar
) -> AdmitPlan:
    """The integers one admission works on."""
    checks = _money_checks(spec, now_ms, calendar) if spec.has_money else NO_MONEY
    lease_expires_ms = now_ms + timing.lease_ttl_ms
    return AdmitPlan(
        now_ms=now_ms,
        bucket_start_ms=timing.bucket_of(now_ms),
        bucket_ms=timing.bucket_ms,
        span_ms=timing.span_ms,
        rpm=spec.rpm,
        tpm=spec.tpm,
        max_parallel=spec.max_parallel,
        tokens=_amount(admission.tokens),
        reservation_id=admission.reservation_id,
        lease_expires_ms=lease_expires_ms,
        parallel_retry_ms=timing.parallel_retry_ms,
        quotas=tuple(
            QuotaCheck(calendar.period(dimension, now_ms, spec.timezone), limit)
            for dimension, limit in spec.quotas()
        ),
        nano_usd=_amount(admission.nano_usd) if spec.has_money else 0,
        hold_expires_ms=lease_expires_ms,
        credit_share=spec.credit_share,
        checks=checks,
    )


def _money_checks(spec: LimitSpec, now_ms: int, calendar: Calendar) -> MoneyChecks:
    """The checks of ``spec``'s budgets, its credits and its team's budgets at ``now_ms``,
    remembered by the calendar until the first of their periods ends (the same object
    meanwhile)."""
    known: MoneyChecks | None = calendar.recall(spec, now_ms)
    if known is not None:
        return known
    tz = spec.timezone
    until = _FOREVER
    found: list[tuple[MoneyCheck, ...]] = []
    for dimensions in (MONEY, TEAM_MONEY) if spec.team is not None else (MONEY,):
        checks = []
        for dimension, limit in spec.budgets_of(dimensions):
            if dimension.calendar is None:
                checks.append(MoneyCheck(dimension, TOTAL_FIELD, limit, 0))
                continue
            period = calendar.period(dimension, now_ms, tz)
            checks.append(MoneyCheck(dimension, period.name, limit, period.end_ms))
            until = min(until, period.end_ms)
        found.append(tuple(checks))
    known = MoneyChecks.of(found[0], found[1] if len(found) > 1 else (), spec.credits)
    calendar.keep(spec, now_ms, until, known)
    return known


_FOREVER = 2**62


def _money_fields(
    dimensions: tuple[Dimension, ...], now_ms: int, timezone: str, calendar: Calendar
) -> tuple[str, ...]:
    """The counters of ``dimensions`` current at ``now_ms`` (remembered like the checks;
    ``dimensions`` is a reservation's, one tuple shared by every reservation alike)."""
    known: tuple[str, tuple[str, ...]] | None = calendar.recall(dimensions, now_ms)
    if known is not None and known[0] == timezone:
        return known[1]
    names = []
    until = _FOREVER
    for dimension in dimensions:
        if dimension.calendar is None:
            names.append(TOTAL_FIELD)
            continue
        period = calendar.period(dimension, now_ms, timezone)
        names.append(period.name)
        until = min(until, period.end_ms)
    calendar.keep(dimensions, now_ms, until, (timezone, tuple(names)))
    return tuple(names)


def plan_settlement(
    reservation: Reservation,
    actual_tokens: int,
    now_ms: int,
    timing: Timing,
    calendar: Calendar,
    *,
    release_request: bool,
    nano_usd: int = 0,
) -> SettlePlan:
    """The integers one settlement works on; ``nano_usd`` is the real cost to charge."""
    money_fields: tuple[str, ...] = ()
    team_fields: tuple[str, ...] = ()
    if reservation.holds_money:
        tz = reservation.timezone
        money_fields = _money_fields(reservation.money, now_ms, tz, calendar)
        if reservation.credits:
            money_fields += (CREDITS_FIELD,)
        if reservation.team is not None:
            team_fields = _money_fields(reservation.team_money, now_ms, tz, calendar)
    return SettlePlan(
        now_ms=now_ms,
        bucket_start_ms=timing.bucket_of(now_ms),
        bucket_ms=timing.bucket_ms,
        span_ms=timing.span_ms,
        reserved_bucket_ms=reservation.bucket_start_ms,
        delta_tokens=_amount(actual_tokens) - reservation.tokens,
        counts_tokens=reservation.counts_tokens,
        release_request=release_request and reservation.counts_requests,
        reservation_id=reservation.reservation_id if reservation.has_lease else None,
        quotas=tuple(
            QuotaSettlement(
                period.name, calendar.period(period.dimension, now_ms, reservation.timezone)
            )
            for period in reservation.quotas
        ),
        hold_id=reservation.reservation_id,
        nano_charged=_amount(nano_usd) if reservation.holds_money else 0,
        money_fields=money_fields,
        team_fields=team_fields,
    )


def decide(spec: LimitSpec, admission: Admission, plan: AdmitPlan, outcome: Outcome) -> Decision:
    """The decision for ``outcome``, holding a reservation of exactly what was recorded."""
    reservation = refusal = None
    checks = plan.checks
    if outcome.allowed:
        reservation = Reservation(
            key_name=admission.key_name,
            request_id=admission.request_id,
            reservation_id=plan.reservation_id,
            tokens=plan.tokens,
            bucket_start_ms=plan.bucket_start_ms,
            counts_requests=plan.rpm is not None,
            counts_tokens=plan.tpm is not None,
            has_lease=plan.max_parallel is not None,
            quotas=tuple(q.period for q in plan.quotas),
            timezone=spec.timezone,
            nano_usd=plan.nano_usd,
            money=checks.money_dimensions,
            credits=checks.credits,
            team=spec.team if checks.team else None,
            team_money=checks.team_dimensions,
            spend_dimensions=checks.dimensions,
            spend_limits=checks.limits,
        )
    elif outcome.dimension is not None:
        limit = spec.limit(outcome.dimension)
        refusal = Refusal(
            dimension=outcome.dimension,
            limit=limit if limit is not None else 0,
            retry_after_ms=outcome.retry_after_ms,
            exceeds_limit=outcome.exceeds_limit,
        )
    return Decision(
        reservation=reservation,
        refusal=refusal,
        requests=_window(plan.rpm, outcome.requests_used, outcome.requests_reset_ms),
        tokens=_window(plan.tpm, outcome.tokens_used, outcome.tokens_reset_ms),
        budget=_budget(plan, outcome) if outcome.money_remaining else None,
    )


def _budget(plan: AdmitPlan, outcome: Outcome) -> Budget | None:
    """The tightest money dimension and every one's remainder (None: no money checked)."""
    remaining = outcome.money_remaining
    money = plan.checks
    checks = money.checks
    if not remaining or len(remaining) != len(checks):
        return None
    tightest = remaining.index(min(remaining))
    end_ms = checks[tightest].end_ms
    reset_ms = end_ms - plan.now_ms if end_ms else None
    return Budget(remaining[tightest], reset_ms, money.dimensions, remaining)


def _window(limit: int | None, used: int, reset_ms: int) -> RateWindow | None:
    if limit is None:
        return None
    return RateWindow(limit=limit, remaining=max(0, limit - used), reset_ms=reset_ms)


def _amount(tokens: int) -> int:
    """A token count clamped to what Lua holds exactly; above any limit, so still refused."""
    if 0 <= tokens <= MAX_AMOUNT:  # nearly always: no min() and max() calls
        return tokens
    return 0 if tokens < 0 else MAX_AMOUNT
