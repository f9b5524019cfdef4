"""A circuit breaker as a pure state machine: no I/O, time from an injected clock.

::

    CLOSED ──(failure_threshold failures in a row, or trip())──► OPEN
    OPEN ──(reset_after_s elapsed; the next allow() is the probe)──► HALF_OPEN
    HALF_OPEN ──(probe succeeds)──► CLOSED      HALF_OPEN ──(probe fails)──► OPEN

While half-open exactly one probe is allowed at a time, so a dead receiver sees one request per
``reset_after_s`` instead of every batch.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(enum.Enum):
    """Where the breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Decides whether a call may go out, from the outcomes of the calls before it."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_after_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or reset_after_s < 0:
            raise ValueError("failure_threshold must be >= 1 and reset_after_s >= 0")
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._open_until = 0.0
        self._probing = False

    @property
    def state(self) -> BreakerState:
        """The current state (OPEN turns HALF_OPEN only when a call asks to go out)."""
        return self._state

    def allow(self) -> bool:
        """Whether a call may go out now; a True while half-open claims the single probe."""
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            if self._clock() < self._open_until:
                return False
            self._state = BreakerState.HALF_OPEN
            self._probing = False
        if self._probing:
            return False
        self._probing = True
        return True

    def record_success(self) -> None:
        """A call went through: close the circuit."""
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._probing = False

    def record_failure(self) -> None:
        """A call failed: count it, and open the circuit at the threshold or after a probe."""
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self.trip(self.reset_after_s)

    def trip(self, for_s: float) -> None:
        """Open the circuit for ``for_s`` seconds (at least), e.g. for a long ``Retry-After``."""
        until = self._clock() + for_s
        if self._state is not BreakerState.OPEN or until > self._open_until:
            self._open_until = until
        self._state = BreakerState.OPEN
        self._probing = False
