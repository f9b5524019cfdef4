"""The circuit breaker of one upstream (or one upstream's model): a pure state machine.

::

    closed ──N consecutive failures, or ratio over the window──► open
      ▲                                                           │ cooldown_ms later,
      │                                                           ▼ one caller
      └───────────────success──────────────────────────────── half_open ──failure──► open

No I/O and no clock of its own: every call takes ``now_ms``. While open, routing skips the
upstream. After ``cooldown_ms`` exactly one caller gets the probe; a probe that never reports
back goes stale after another ``cooldown_ms``. Outcomes are counted in a rolling window of
``_BUCKETS`` buckets, which also gives the recent error rate shown by the admin API.
``open_until`` adopts an open decided elsewhere (another replica's breaker, through Redis).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["BreakerSettings", "BreakerState", "CircuitBreaker"]

_BUCKETS = 10


class BreakerState(StrEnum):
    """Where a breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """When a breaker opens and how long it stays open."""

    failures: int = 5
    failure_ratio: float = 0.5
    window_ms: int = 30_000
    min_requests: int = 20
    cooldown_ms: int = 10_000


class CircuitBreaker:
    """Counts outcomes and decides whether calls may go through (see the module docstring)."""

    __slots__ = (
        "_bucket_ms",
        "_buckets",
        "_probe_due_ms",
        "consecutive_failures",
        "opened",
        "settings",
        "state",
    )

    def __init__(self, settings: BreakerSettings) -> None:
        self.settings = settings
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self.opened = 0  # how many times it opened (for the admin API)
        self._probe_due_ms = 0
        self._bucket_ms = max(1, settings.window_ms // _BUCKETS)
        # bucket start (ms) -> [calls, failures]; at most _BUCKETS + 1 entries.
        self._buckets: dict[int, list[int]] = {}

    def is_available(self, now_ms: int) -> bool:
        """Whether a call could go through now (closed, or a probe is due); claims nothing."""
        return self.state is BreakerState.CLOSED or now_ms >= self._probe_due_ms

    def try_acquire(self, now_ms: int) -> bool:
        """Whether this caller may call now; when a probe is due, this caller becomes it."""
        if self.state is BreakerState.CLOSED:
            return True
        if now_ms < self._probe_due_ms:
            return False
        self.state = BreakerState.HALF_OPEN
        self._probe_due_ms = now_ms + self.settings.cooldown_ms  # a lost probe goes stale
        return True

    def record_success(self, now_ms: int) -> None:
        """A call succeeded: a half-open breaker closes; a closed one counts it."""
        self._count(now_ms, failed=False)
        self.consecutive_failures = 0
        if self.state is BreakerState.HALF_OPEN:
            self.state = BreakerState.CLOSED
            self._buckets.clear()  # the failures that opened it must not reopen it at once

    def record_failure(self, now_ms: int) -> None:
        """A call failed: a probe's failure reopens; a closed breaker opens past a threshold."""
        self._count(now_ms, failed=True)
        self.consecutive_failures += 1
        if self.state is BreakerState.HALF_OPEN:
            self._open(now_ms)
        elif self.state is BreakerState.CLOSED and self._tripped(now_ms):
            self._open(now_ms)

    @property
    def probe_due_ms(self) -> int:
        """When an open breaker lets its probe through (meaningless while closed)."""
        return self._probe_due_ms

    def open_until(self, until_ms: int, now_ms: int) -> bool:
        """Stay open, with no probe, until ``until_ms``: another replica's breaker opened.

        Never shortens an open and never interrupts a live probe; does not count in
        ``opened`` (this breaker did not trip). True when it changed anything.
        """
        if until_ms <= now_ms:
            return False
        if self.state is BreakerState.HALF_OPEN and now_ms < self._probe_due_ms:
            return False  # the probe in flight will tell
        if self.state is BreakerState.OPEN and until_ms <= self._probe_due_ms:
            return False
        self.state = BreakerState.OPEN
        self._probe_due_ms = until_ms
        return True

    def retry_in_ms(self, now_ms: int) -> int:
        """How long until a call may go through (0 when it may now)."""
        if self.state is BreakerState.CLOSED:
            return 0
        return max(0, self._probe_due_ms - now_ms)

    def window(self, now_ms: int) -> tuple[int, int]:
        """Calls and failures in the rolling window ending at ``now_ms``."""
        horizon = now_ms - self.settings.window_ms
        calls = failures = 0
        for start, (c, f) in self._buckets.items():
            if start + self._bucket_ms > horizon:
                calls += c
                failures += f
        return calls, failures

    def _open(self, now_ms: int) -> None:
        self.state = BreakerState.OPEN
        self.opened += 1
        self._probe_due_ms = now_ms + self.settings.cooldown_ms

    def _tripped(self, now_ms: int) -> bool:
        if self.consecutive_failures >= self.settings.failures:
            return True
        calls, failures = self.window(now_ms)
        return (
            calls >= self.settings.min_requests and failures >= self.settings.failure_ratio * calls
        )

    def _count(self, now_ms: int, *, failed: bool) -> None:
        start = now_ms - now_ms % self._bucket_ms
        bucket = self._buckets.get(start)
        if bucket is None:
            horizon = now_ms - self.settings.window_ms
            for old in [s for s in self._buckets if s + self._bucket_ms <= horizon]:
                del self._buckets[old]
            bucket = self._buckets[start] = [0, 0]
        bucket[0] += 1
        bucket[1] += failed
