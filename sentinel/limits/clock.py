"""The clock the limits run on: integer milliseconds, injected so tests never sleep."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """Wall-clock time in integer milliseconds since the Unix epoch."""

    def now_ms(self) -> int:
        """The current time."""
        ...


class SystemClock:
    """The real clock (wall time: windows and calendar quotas are shared across replicas)."""

    def now_ms(self) -> int:
        """The current time, from the integer nanosecond clock (no float on the way)."""
        return time.time_ns() // 1_000_000
