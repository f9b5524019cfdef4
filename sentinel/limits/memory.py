"""The in-process limit store: the embedded mode's store and the fail-closed fallback.

It runs ``window.py`` directly on one ``KeyState`` per key. No method awaits anything, so each
call is atomic with respect to the event loop, as one Lua call is atomic in Redis.
"""

from __future__ import annotations

from dataclasses import replace

from sentinel.limits.decision import (
    Decision,
    Reservation,
    decide,
    plan_admission,
    plan_settlement,
)
from sentinel.limits.periods import Calendar
from sentinel.limits.spec import Admission, LimitSpec
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

    async def admit(self, spec: LimitSpec, admission: Admission, now_ms: int) -> Decision:
        """Check every dimension of ``spec`` and, only if all fit, record the request."""
        plan = plan_admission(spec, admission, now_ms, self.timing, self._calendar)
        state = self._states.setdefault(admission.key_name, KeyState())
        outcome = admit(state, plan)
        self._forget_if_empty(admission.key_name, state)
        return decide(spec, admission, plan, outcome)

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
        state = self._states.setdefault(reservation.key_name, KeyState())
        settle(state, plan)
        self._forget_if_empty(reservation.key_name, state)

    async def renew(self, reservation: Reservation, now_ms: int) -> bool:
        """Extend the reservation's lease by the lease TTL; False when it is already gone."""
        state = self._states.get(reservation.key_name)
        if state is None or not reservation.has_lease:
            return False
        return renew(state, reservation.reservation_id, now_ms, now_ms + self.timing.lease_ttl_ms)

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
        target = self._states.setdefault(key_name, KeyState())
        absorb(target, state, now_ms, self.timing.span_ms)
        self._forget_if_empty(key_name, target)

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
    )
