"""What Sentinel knows about each upstream's health: breakers, latency, calls in flight.

One ``UpstreamHealth`` per upstream holds the upstream's breaker and one breaker per model
called on it (a deployment can fail while its siblings work). A candidate is usable when both
breakers let calls through. State lives in the process; with ``[redis]``, ``SharedBreakers``
(``shared.py``) mirrors it across replicas. Readiness and the admin API read it through
``snapshot``.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from sentinel.config import RoutingConfig
from sentinel.upstream.breaker import BreakerSettings, BreakerState, CircuitBreaker

__all__ = ["Clock", "HealthBoard", "MonotonicClock", "UpstreamHealth", "breaker_settings"]

_MODEL_BREAKERS = 256  # per upstream; client-chosen names must not grow memory without bound
_EWMA_ALPHA = 0.2


class Clock(Protocol):
    """Milliseconds from any fixed origin; injected so tests never sleep."""

    def now_ms(self) -> int: ...


class MonotonicClock:
    """The process's monotonic clock: breakers measure durations, not dates."""

    def now_ms(self) -> int:
        """The current monotonic time in integer milliseconds."""
        return time.monotonic_ns() // 1_000_000


def breaker_settings(routing: RoutingConfig) -> BreakerSettings:
    """The breaker settings of ``[routing]``."""
    return BreakerSettings(
        failures=routing.breaker_failures,
        failure_ratio=routing.breaker_failure_ratio,
        window_ms=routing.breaker_window_s * 1000,
        min_requests=routing.breaker_min_requests,
        cooldown_ms=routing.breaker_cooldown_ms,
    )


class UpstreamHealth:
    """One upstream's breakers, latency and in-flight calls."""

    def __init__(self, name: str, settings: BreakerSettings) -> None:
        self.name = name
        self.settings = settings
        self.breaker = CircuitBreaker(settings)
        self.models: dict[str, CircuitBreaker] = {}
        self.in_flight = 0
        self.latency_ms: float | None = None  # EWMA of the time to response headers

    def model_breaker(self, model: str) -> CircuitBreaker:
        """The breaker of ``model`` on this upstream, created closed when it is new."""
        breaker = self.models.get(model)
        if breaker is None:
            if len(self.models) >= _MODEL_BREAKERS:
                for name in [n for n, b in self.models.items() if b.state is BreakerState.CLOSED]:
                    del self.models[name]
            breaker = self.models[model] = CircuitBreaker(self.settings)
        return breaker

    def _model(self, model: str | None) -> CircuitBreaker | None:
        return None if model is None else self.model_breaker(model)

    def is_available(self, model: str | None, now_ms: int) -> bool:
        """Whether a call for ``model`` could go through now; claims no probe."""
        if not self.breaker.is_available(now_ms):
            return False
        breaker = self.models.get(model) if model is not None else None
        return breaker is None or breaker.is_available(now_ms)

    def try_acquire(self, model: str | None, now_ms: int) -> bool:
        """Whether this caller may call now (becoming the probe of a breaker that is due)."""
        if not self.is_available(model, now_ms):
            return False
        model_breaker = self._model(model)
        acquired = self.breaker.try_acquire(now_ms)
        return acquired and (model_breaker is None or model_breaker.try_acquire(now_ms))

    def retry_in_ms(self, model: str | None, now_ms: int) -> int:
        """How long until a call for ``model`` may go through."""
        wait = self.breaker.retry_in_ms(now_ms)
        breaker = self.models.get(model) if model is not None else None
        return max(wait, breaker.retry_in_ms(now_ms)) if breaker is not None else wait

    def record(self, model: str | None, *, failed: bool, now_ms: int) -> None:
        """Count one call's outcome on the upstream's breaker and on the model's."""
        for breaker in (self.breaker, self._model(model)):
            if breaker is None:
                continue
            if failed:
                breaker.record_failure(now_ms)
            else:
                breaker.record_success(now_ms)

    def observe_latency(self, ms: float) -> None:
        """Fold one time-to-headers into the moving average."""
        last = self.latency_ms
        self.latency_ms = ms if last is None else last + _EWMA_ALPHA * (ms - last)

    def snapshot(self, now_ms: int) -> dict[str, Any]:
        """This upstream's state for readiness and the admin API (no secrets)."""
        calls, failures = self.breaker.window(now_ms)
        open_models = {
            name: b.state.value
            for name, b in self.models.items()
            if b.state is not BreakerState.CLOSED
        }
        return {
            "name": self.name,
            "state": self.breaker.state.value,
            "usable": self.breaker.is_available(now_ms),
            "retry_in_ms": self.breaker.retry_in_ms(now_ms),
            "consecutive_failures": self.breaker.consecutive_failures,
            "times_opened": self.breaker.opened,
            "recent_calls": calls,
            "recent_failures": failures,
            "error_rate": round(failures / calls, 4) if calls else 0.0,
            "latency_ms": round(self.latency_ms, 3) if self.latency_ms is not None else None,
            "in_flight": self.in_flight,
            "models": open_models,
        }


class HealthBoard:
    """Every upstream's ``UpstreamHealth``, on one clock."""

    def __init__(
        self, names: tuple[str, ...], settings: BreakerSettings, clock: Clock | None = None
    ) -> None:
        self.clock: Clock = clock or MonotonicClock()
        self.upstreams = {name: UpstreamHealth(name, settings) for name in names}

    def __getitem__(self, name: str) -> UpstreamHealth:
        return self.upstreams[name]

    def any_usable(self) -> bool:
        """Whether at least one upstream's breaker lets calls through."""
        now = self.clock.now_ms()
        return any(h.breaker.is_available(now) for h in self.upstreams.values())

    def snapshot(self) -> list[dict[str, Any]]:
        """Every upstream's state, in configuration order."""
        now = self.clock.now_ms()
        return [h.snapshot(now) for h in self.upstreams.values()]
