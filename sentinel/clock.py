"""The clocks Sentinel runs on: integer milliseconds, injected so tests never sleep.

Two kinds of time, never mixed: ``WallClock`` for what replicas share (limit windows,
calendar quotas, breaker entries in Redis), ``MonotonicClock`` for what one process measures
(breaker cooldowns, health-check periods), which a wall-clock step must not stretch or cut.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "MonotonicClock", "WallClock"]


class Clock(Protocol):
    """Integer milliseconds from a fixed origin (which origin is the implementation's)."""

    def now_ms(self) -> int:
        """The current time."""
        ...


class WallClock:
    """Milliseconds since the Unix epoch: the only time replicas share."""

    def now_ms(self) -> int:
        """The current time, from the integer nanosecond clock (no float on the way)."""
        return time.time_ns() // 1_000_000


class MonotonicClock:
    """The process's monotonic clock: durations, never dates."""

    def now_ms(self) -> int:
        """The current monotonic time."""
        return time.monotonic_ns() // 1_000_000
