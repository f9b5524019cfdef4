"""The circuit breaker in front of Redis: a pure state machine on an injected clock.

::

    closed ──failure──► open ──reopen_ms later, one caller──► half_open ──success──► closed
                         ▲                                        │
                         └──────────────────failure───────────────┘

While open, nobody calls Redis. Once ``reopen_ms`` has passed, exactly one caller gets the
probe (the write-back of what was admitted locally); a probe that never reports back goes
stale after another ``reopen_ms``. Only the probe closes the breaker: a late success of a call
started before the failure cannot skip the write-back.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Breaker", "BreakerState"]


class BreakerState(StrEnum):
    """Where the breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    """Stops calling a dead dependency and lets one probe through every ``reopen_ms``."""

    def __init__(self, reopen_ms: int = 1_000) -> None:
        if reopen_ms < 1:
            raise ValueError("reopen_ms must be >= 1")
        self.reopen_ms = reopen_ms
        self.state = BreakerState.CLOSED
        self.opened = 0
        self._probe_at_ms = 0

    @property
    def is_closed(self) -> bool:
        """Whether calls go to the dependency."""
        return self.state is BreakerState.CLOSED

    def try_probe(self, now_ms: int) -> bool:
        """Whether the caller gets the one probe now (the breaker is then half open)."""
        if self.state is BreakerState.CLOSED or now_ms < self._probe_at_ms:
            return False
        self.state = BreakerState.HALF_OPEN
        self._probe_at_ms = now_ms + self.reopen_ms
        return True

    def record_failure(self, now_ms: int) -> None:
        """A call failed: open (again) and wait ``reopen_ms`` before the next probe."""
        if self.state is BreakerState.CLOSED:
            self.opened += 1
        self.state = BreakerState.OPEN
        self._probe_at_ms = now_ms + self.reopen_ms

    def probe_succeeded(self) -> None:
        """The probe got through: close. (An ordinary success never closes an open breaker.)"""
        self.state = BreakerState.CLOSED

    def retry_in_ms(self, now_ms: int) -> int:
        """How long until the next probe may run (0 when closed or already due)."""
        if self.state is BreakerState.CLOSED:
            return 0
        return max(0, self._probe_at_ms - now_ms)
