"""The circuit breaker: one pure state machine, no I/O and no clock of its own.

::

    closed ──policy trips──► open ──cooldown_ms, one caller──► half_open ──success──► closed
                              ▲                                    │
                              └──────────────failure───────────────┘

Every call takes ``now_ms`` (integer milliseconds from the caller's clock). The policy trips
on ``failures`` consecutive failures, or on a ``failure_ratio`` of the calls in the rolling
``window_ms`` once it holds ``min_requests`` calls. While open, callers stay away; once
``cooldown_ms`` has passed exactly one caller gets the probe (``try_acquire``), and a probe
that never reports back goes stale after another ``cooldown_ms``. A success closes a
half-open breaker: a user for whom only its own probe may close (the Redis guard, which must
write back first) reports no other success. ``open_until`` holds the breaker open for a
decision made elsewhere: another replica's breaker, or a receiver's long ``Retry-After``.

A failure may name its source (the key whose request failed). With ``min_sources > 1`` such a
failure counts only while that many distinct sources failed within ``window_ms``, so no
single source can open the breaker; a failure without a source always counts. A failure that
does not count leaves the breaker exactly as it was.

Each user keeps its own ``BreakerPolicy``: the Redis guard opens on the first failure and
probes every second, upstreams take ``[routing]``, the webhook sink its ``breaker_*`` fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["BreakerPolicy", "BreakerState", "CircuitBreaker"]

_BUCKETS = 10


class BreakerState(StrEnum):
    """Where a breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a breaker opens and how long it stays open (see the module docstring)."""

    failures: int = 5
    """Consecutive failures that open it."""
    cooldown_ms: int = 10_000
    """How long it stays open before one probe goes through."""
    failure_ratio: float | None = None
    """Or this share of failed calls over the window opens it; None: no ratio rule."""
    min_requests: int = 20
    """The ratio applies once the window holds this many calls."""
    window_ms: int = 30_000
    """The rolling window of the ratio, of ``window`` and of the sources rule."""
    min_sources: int = 1
    """Distinct sources that must fail within the window before a sourced failure counts."""

    def __post_init__(self) -> None:
        if self.failures < 1 or self.min_requests < 1 or self.min_sources < 1:
            raise ValueError("failures, min_requests and min_sources must be >= 1")
        if self.cooldown_ms < 0 or self.window_ms < 1:
            raise ValueError("cooldown_ms must be >= 0 and window_ms >= 1")
        if self.failure_ratio is not None and not 0 < self.failure_ratio <= 1:
            raise ValueError("failure_ratio must be in (0, 1]")


class CircuitBreaker:
    """Counts outcomes and decides whether calls may go through (see the module docstring)."""

    __slots__ = (
        "_bucket_ms",
        "_buckets",
        "_probe_due_ms",
        "_sources",
        "consecutive_failures",
        "opened",
        "policy",
        "state",
    )

    def __init__(self, policy: BreakerPolicy) -> None:
        self.policy = policy
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self.opened = 0  # how many times it tripped (an adopted open does not count)
        self._probe_due_ms = 0
        self._bucket_ms = max(1, policy.window_ms // _BUCKETS)
        # bucket start (ms) -> [calls, failures]; at most _BUCKETS + 1 entries.
        self._buckets: dict[int, list[int]] = {}
        # The latest distinct failing sources, newest first, with their last failure (ms);
        # ``min_sources`` entries are all it takes to know whether that many failed lately.
        self._sources: list[tuple[str, int]] = []

    @property
    def is_closed(self) -> bool:
        """Whether calls go through without a probe."""
        return self.state is BreakerState.CLOSED

    @property
    def probe_due_ms(self) -> int:
        """When an open breaker lets its probe through (meaningless while closed)."""
        return self._probe_due_ms

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
        self._probe_due_ms = now_ms + self.policy.cooldown_ms  # a lost probe goes stale
        return True

    def record_success(self, now_ms: int) -> None:
        """A call succeeded: a half-open breaker closes; it is counted either way."""
        if self.state is BreakerState.HALF_OPEN:
            self.state = BreakerState.CLOSED
            self._buckets.clear()  # the failures that opened it must not reopen it at once
            self._sources.clear()
        self._count(now_ms, failed=False)
        self.consecutive_failures = 0

    def record_failure(self, now_ms: int, source: str | None = None) -> bool:
        """A call failed: a probe's failure reopens; a closed breaker opens when the policy
        trips. False when the failure did not count (see ``min_sources``)."""
        if source is not None and not self._enough_sources(source, now_ms):
            return False
        self._count(now_ms, failed=True)
        self.consecutive_failures += 1
        if self.state is BreakerState.HALF_OPEN or (
            self.state is BreakerState.CLOSED and self._tripped(now_ms)
        ):
            self._open(now_ms)
        return True

    def open_until(self, until_ms: int, now_ms: int) -> bool:
        """Stay open, with no probe, until ``until_ms``: the decision was made elsewhere.

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
        """Calls and failures counted in the rolling window ending at ``now_ms``."""
        horizon = now_ms - self.policy.window_ms
        calls = failures = 0
        for start, (c, f) in self._buckets.items():
            if start + self._bucket_ms > horizon:
                calls += c
                failures += f
        return calls, failures

    def _open(self, now_ms: int) -> None:
        self.state = BreakerState.OPEN
        self.opened += 1
        self._probe_due_ms = now_ms + self.policy.cooldown_ms

    def _tripped(self, now_ms: int) -> bool:
        policy = self.policy
        if self.consecutive_failures >= policy.failures:
            return True
        if policy.failure_ratio is None:
            return False
        calls, failures = self.window(now_ms)
        return calls >= policy.min_requests and failures >= policy.failure_ratio * calls

    def _enough_sources(self, source: str, now_ms: int) -> bool:
        """Note ``source``'s failure; whether ``min_sources`` distinct ones failed lately."""
        need = self.policy.min_sources
        if need == 1:
            return True
        recent = [(source, now_ms), *(entry for entry in self._sources if entry[0] != source)]
        del recent[need:]
        self._sources = recent
        return len(recent) == need and recent[-1][1] > now_ms - self.policy.window_ms

    def _count(self, now_ms: int, *, failed: bool) -> None:
        start = now_ms - now_ms % self._bucket_ms
        bucket = self._buckets.get(start)
        if bucket is None:
            horizon = now_ms - self.policy.window_ms
            for old in [s for s in self._buckets if s + self._bucket_ms <= horizon]:
                del self._buckets[old]
            bucket = self._buckets[start] = [0, 0]
        bucket[0] += 1
        bucket[1] += failed
