"""Admission decisions and reservations, and the plans every store hands to the arithmetic.

``plan_admission`` and ``plan_settlement`` turn a spec, a request and the clock into the
integers of ``window.py`` (and the ARGV of ``limits.lua``); ``decide`` turns the arithmetic's
``Outcome`` into the ``Decision`` the proxy acts on. Both stores share these: no drift.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentinel.config.limits import MAX_AMOUNT
from sentinel.limits.periods import Calendar, Period
from sentinel.limits.spec import Admission, Dimension, LimitSpec
from sentinel.limits.window import (
    AdmitPlan,
    Outcome,
    QuotaCheck,
    QuotaSettlement,
    SettlePlan,
    Timing,
)

__all__ = [
    "Decision",
    "RateWindow",
    "Refusal",
    "Reservation",
    "decide",
    "plan_admission",
    "plan_settlement",
]


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one admission, with what the response headers need either way."""

    reservation: Reservation | None
    refusal: Refusal | None
    requests: RateWindow | None
    tokens: RateWindow | None
    degraded: bool = False

    @property
    def allowed(self) -> bool:
        """Whether the request may go upstream (it then holds ``reservation``)."""
        return self.reservation is not None


def plan_admission(
    spec: LimitSpec, admission: Admission, now_ms: int, timing: Timing, calendar: Calendar
) -> AdmitPlan:
    """The integers one admission works on."""
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
        lease_expires_ms=now_ms + timing.lease_ttl_ms,
        parallel_retry_ms=timing.parallel_retry_ms,
        quotas=tuple(
            QuotaCheck(calendar.period(dimension, now_ms, spec.timezone), limit)
            for dimension, limit in spec.quotas()
        ),
    )


def plan_settlement(
    reservation: Reservation,
    actual_tokens: int,
    now_ms: int,
    timing: Timing,
    calendar: Calendar,
    *,
    release_request: bool,
) -> SettlePlan:
    """The integers one settlement works on."""
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
    )


def decide(spec: LimitSpec, admission: Admission, plan: AdmitPlan, outcome: Outcome) -> Decision:
    """The decision for ``outcome``, holding a reservation of exactly what was recorded."""
    reservation = refusal = None
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
    )


def _window(limit: int | None, used: int, reset_ms: int) -> RateWindow | None:
    if limit is None:
        return None
    return RateWindow(limit=limit, remaining=max(0, limit - used), reset_ms=reset_ms)


def _amount(tokens: int) -> int:
    """A token count clamped to what Lua holds exactly; above any limit, so still refused."""
    return min(max(0, tokens), MAX_AMOUNT)
