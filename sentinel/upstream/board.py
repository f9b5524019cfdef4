"""What Sentinel knows about each upstream's health: breakers, latency, calls in flight.

One ``UpstreamHealth`` per upstream holds the upstream's breaker and one breaker per model
called on it (a deployment can fail while its siblings work). A candidate is usable when both
breakers let calls through. A failure may name the key whose request failed: then it counts
only once two keys failed within the breaker window (``UPSTREAM_SOURCES``), so no tenant can
open a breaker that every tenant shares. State lives in the process; with ``[redis]``,
``SharedBreakers`` (``shared.py``) mirrors it across replicas. The admin API and ``/readyz``
read it through ``snapshot``.
"""

from __future__ import annotations

from typing import Any

from sentinel.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from sentinel.clock import Clock, MonotonicClock
from sentinel.config import RoutingConfig

__all__ = ["UPSTREAM_SOURCES", "HealthBoard", "UpstreamHealth", "breaker_settings"]

UPSTREAM_SOURCES = 2
"""Distinct keys whose requests must fail within the window before a keyed failure counts."""
_MODEL_BREAKERS = 256  # per upstream; client-chosen names must not grow memory without bound
_EWMA_ALPHA = 0.2


def breaker_settings(routing: RoutingConfig) -> BreakerPolicy:
    """The upstreams' breaker policy: ``[routing]``, and failures from two keys at least."""
    return BreakerPolicy(
        failures=routing.breaker_failures,
        cooldown_ms=routing.breaker_cooldown_ms,
        failure_ratio=routing.breaker_failure_ratio,
        min_requests=routing.breaker_min_requests,
        window_ms=routing.breaker_window_s * 1000,
        min_sources=UPSTREAM_SOURCES,
    )


class UpstreamHealth:
    """One upstream's breakers, latency and in-flight calls."""

    def __init__(self, name: str, policy: BreakerPolicy) -> None:
        self.name = name
        self.policy = policy
        self.breaker = CircuitBreaker(policy)
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
            breaker = self.models[model] = CircuitBreaker(self.policy)
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

    def record_success(self, model: str | None, now_ms: int) -> None:
        """Count a call that succeeded on the upstream's breaker and on the model's."""
        self.breaker.record_success(now_ms)
        model_breaker = self._model(model)
        if model_breaker is not None:
            model_breaker.record_success(now_ms)

    def record_failure(
        self,
        model: str | None,
        now_ms: int,
        *,
        source: str | None = None,
        upstream_wide: bool = True,
    ) -> None:
        """Count a failed call on the model's breaker and, when ``upstream_wide``, on the
        upstream's; ``source`` (the caller's key) subjects it to the two-keys rule."""
        if upstream_wide:
            self.breaker.record_failure(now_ms, source)
        model_breaker = self._model(model)
        if model_breaker is not None:
            model_breaker.record_failure(now_ms, source)

    def observe_latency(self, ms: float) -> None:
        """Fold one time-to-headers into the moving average."""
        last = self.latency_ms
        self.latency_ms = ms if last is None else last + _EWMA_ALPHA * (ms - last)

    def snapshot(self, now_ms: int) -> dict[str, Any]:
        """This upstream's state for the admin API and ``/readyz`` (no secrets)."""
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
        self, names: tuple[str, ...], policy: BreakerPolicy, clock: Clock | None = None
    ) -> None:
        self.clock: Clock = clock or MonotonicClock()  # breakers time durations, not dates
        self.upstreams = {name: UpstreamHealth(name, policy) for name in names}

    def __getitem__(self, name: str) -> UpstreamHealth:
        return self.upstreams[name]

    def snapshot(self) -> list[dict[str, Any]]:
        """Every upstream's state, in configuration order."""
        now = self.clock.now_ms()
        return [h.snapshot(now) for h in self.upstreams.values()]
