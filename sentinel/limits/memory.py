"""The in-process limit store: the embedded mode's store and the fail-closed fallback.

It runs ``window.py`` directly on one ``KeyState`` per key (and one per team with a dollar
budget, under ``team_state_name``). No method awaits anything, so each call is atomic with
respect to the event loop, as one Lua call is atomic in Redis.

In embedded mode the prepaid credits live here too: ``fund`` adds a top-up, and
``on_credit_charge`` is told of every charge against credits in the same step as the charge,
so that ``sentinel.money.credits`` can write it to the SQLite ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from sentinel.limits.decision import (
    Decision,
    Reservation,
    decide,
    plan_admission,
    plan_settlement,
    team_state_name,
)
from sentinel.limits.periods import Calendar
from sentinel.limits.spec import Admission, LimitSpec
from sentinel.limits.spending import Spending, spending_of
from sentinel.limits.window import (
    KeyState,
    Timing,
    WindowUsage,
    absorb,
    admit,
    renew,
    settle,
    usage,
)

__all__ = ["MemoryStore"]


class MemoryStore:
    """Limits for one process, exact within it; a key's state is dropped once it is empty."""

    def __init__(self, timing: Timing | None = None) -> None:
        self.timing = timing or Timing()
        self._calendar = Calendar()
        self._states: dict[str, KeyState] = {}
        self._on_credit_charge: Callable[[Reservation, int, int], None] | None = None

    def journal_credits(self, on_charge: Callable[[Reservation, int, int], None]) -> None:
        """Call ``on_charge(reservation, nano_usd, now_ms)`` in the step of every charge
        against credits (embedded mode's ledger)."""
        self._on_credit_charge = on_charge

    async def admit(self, spec: LimitSpec, admission: Admission, now_ms: int) -> Decision:
        """Check every dimension of ``spec`` and, only if all fit, record the request."""
        plan = plan_admission(spec, admission, now_ms, self.timing, self._calendar)
        state = self._states.setdefault(admission.key_name, KeyState())
        team_name = team_state_name(spec.team) if plan.checks.team and spec.team else None
        team = self._states.setdefault(team_name, KeyState()) if team_name else None
        outcome = admit(state, plan, team)
        self._forget_if_empty(admission.key_name, state)
        if team_name is not None and team is not None:
            self._forget_if_empty(team_name, team)
        return decide(spec, admission, plan, outcome)

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
        state = self._states.setdefault(reservation.key_name, KeyState())
        team_name = team_state_name(reservation.team) if reservation.team else None
        team = self._states.setdefault(team_name, KeyState()) if team_name else None
        settle(state, plan, team)
        if reservation.credits and plan.nano_charged > 0 and self._on_credit_charge is not None:
            self._on_credit_charge(reservation, plan.nano_charged, now_ms)
        spent: Spending | None = None
        if plan.nano_charged > 0:
            values = [state.money.get(name, 0) for name in plan.money_fields]
            if team is not None:
                values += [team.money.get(name, 0) for name in plan.team_fields]
            spent = spending_of(plan, reservation, values)
        self._forget_if_empty(reservation.key_name, state)
        if team_name is not None and team is not None:
            self._forget_if_empty(team_name, team)
        return spent

    async def renew(self, reservation: Reservation, now_ms: int) -> bool:
        """Extend the reservation's lease by the lease TTL; False when it is already gone."""
        if not reservation.needs_renewal:
            return False
        expires = now_ms + self.timing.lease_ttl_ms
        renewed = False
        for name in (reservation.key_name, team_state_name(reservation.team or "")):
            state = self._states.get(name)
            if state is not None and renew(state, reservation.reservation_id, now_ms, expires):
                renewed = True
        return renewed

    async def usage(self, key_name: str, spec: LimitSpec, now_ms: int) -> WindowUsage:
        """What ``key_name`` has used at ``now_ms`` on every dimension."""
        periods = tuple(self._calendar.period(d, now_ms, spec.timezone) for d, _ in spec.quotas())
        state = self._states.get(key_name, KeyState())
        return usage(state, now_ms, self.timing.span_ms, periods)

    async def state(self, key_name: str) -> KeyState:
        """A copy of every counter and lease stored for ``key_name``."""
        return _copy(self._states.get(key_name, KeyState()))

    async def merge(self, key_name: str, state: KeyState, now_ms: int) -> None:
        """Add ``state``'s live usage and leases to what is stored for ``key_name``."""
        self.merge_now(key_name, state, now_ms)

    def merge_now(self, key_name: str, state: KeyState, now_ms: int) -> None:
        """``merge`` without a coroutine (at startup, before the loop serves anything)."""
        target = self._states.setdefault(key_name, KeyState())
        absorb(target, state, now_ms, self.timing.span_ms)
        self._forget_if_empty(key_name, target)

    def fund(self, key_name: str, nano_usd: int) -> None:
        """Add a top-up of ``nano_usd`` to ``key_name``'s prepaid credits."""
        self._states.setdefault(key_name, KeyState()).credits_in += nano_usd

    def key_names(self) -> list[str]:
        """The keys that have anything stored."""
        return list(self._states)

    def take(self, key_name: str) -> KeyState:
        """Remove and return everything stored for ``key_name`` (to write it elsewhere)."""
        return self._states.pop(key_name, KeyState())

    def _forget_if_empty(self, key_name: str, state: KeyState) -> None:
        if state.is_empty():
            self._states.pop(key_name, None)


def _copy(state: KeyState) -> KeyState:
    return replace(
        state,
        requests=dict(state.requests),
        tokens=dict(state.tokens),
        quotas=dict(state.quotas),
        leases=dict(state.leases),
        money=dict(state.money),
        holds=dict(state.holds),
    )
