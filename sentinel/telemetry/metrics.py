"""Every metric Sentinel records, on one OpenTelemetry ``MeterProvider``.

Names follow the OpenTelemetry GenAI semantic conventions where one exists
(``gen_ai.client.token.usage``, ``gen_ai.client.operation.duration``,
``gen_ai.server.time_to_first_token``) and ``sentinel.*`` otherwise. Labels are
low-cardinality by construction: routes are Sentinel's own route templates, key names come
from the configuration, upstream names too, and model names (chosen by clients) pass through
``BoundedLabel``, which keeps the first 64 it sees and calls every later one ``other``.

Per-request values are recorded once, when the request finishes, from its ``RequestContext``;
the state of long-lived components (the limits breaker, the usage tracker, estimate drift)
is read by observable instruments at collection time only, costing the request path nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from opentelemetry.metrics import CallbackOptions, Meter, Observation

if TYPE_CHECKING:
    from sentinel.http.context import RequestContext
    from sentinel.upstream.health import HealthBoard
    from sentinel.usage.estimate import DriftStats
    from sentinel.usage.tracker import UsageTracker

__all__ = ["BoundedLabel", "Metrics"]

_API_OPERATIONS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "text_completion",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "responses",
}
_SECONDS_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
)  # fmt: skip
_OVERHEAD_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip
_TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
)  # fmt: skip


class BoundedLabel:
    """Keeps the first ``limit`` distinct values of a client-chosen label; the rest are
    ``other``, so no client can grow the number of time series."""

    def __init__(self, limit: int = 64) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if not value:
            return "none"
        if value in self._seen:
            return value
        if len(self._seen) < self._limit:
            self._seen.add(value)
            return value
        return "other"


class Metrics:
    """The instruments, and one method per event that records them."""

    def __init__(self, meter: Meter) -> None:
        self.model = BoundedLabel()
        self._requests = meter.create_counter(
            "sentinel.requests", unit="{request}", description="Requests answered, by outcome."
        )
        self._overhead = meter.create_histogram(
            "sentinel.gateway.overhead",
            unit="s",
            description="Time spent in Sentinel from accept to the end of the response, "
            "upstream waits excluded.",
            explicit_bucket_boundaries_advisory=_OVERHEAD_BUCKETS,
        )
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="Duration of GenAI operations through the gateway.",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self._ttft = meter.create_histogram(
            "gen_ai.server.time_to_first_token",
            unit="s",
            description="Time to the first byte of a streamed response.",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens used per request, by type (input, output).",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self._limit_decisions = meter.create_counter(
            "sentinel.limits.decisions",
            unit="{decision}",
            description="Limit decisions: allowed, denied, degraded (allowed by the local share).",
        )
        self._store_duration = meter.create_histogram(
            "sentinel.limits.store.duration",
            unit="s",
            description="Latency of limit store calls (Redis, or the in-memory store).",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self._upstream = meter.create_counter(
            "sentinel.upstream.requests",
            unit="{request}",
            description="Requests sent to each upstream (every attempt), by status (0: no answer).",
        )
        self._meter = meter

    # --- per request ----------------------------------------------------------------------------

    def request_finished(self, ctx: RequestContext, finished_ns: int) -> None:
        """Record everything one finished request says about itself."""
        route = ctx.route
        key = ctx.key or "none"
        self._requests.add(
            1,
            {
                "http.route": route,
                "http.response.status_code": ctx.status,
                "error.type": ctx.error_code or "",
                "sentinel.key": key,
            },
        )
        duration_ns = finished_ns - ctx.started_ns
        self._overhead.record((duration_ns - ctx.upstream_wait_ns) / 1e9, {"http.route": route})
        for attempt in ctx.attempts:
            status = attempt["status"]
            self._upstream.add(
                1,
                {
                    "sentinel.upstream": str(attempt["upstream"]),
                    "http.response.status_code": status if isinstance(status, int) else 0,
                },
            )
        operation = _API_OPERATIONS.get(route)
        if operation is None:
            return
        model = self.model(ctx.model)
        labels = {"gen_ai.operation.name": operation, "gen_ai.request.model": model}
        if ctx.error_code:
            labels["error.type"] = ctx.error_code
        self._duration.record(duration_ns / 1e9, labels)
        if ctx.stream and ctx.ttfb_ns is not None and ctx.status == 200:
            self._ttft.record(
                (ctx.ttfb_ns - ctx.started_ns) / 1e9,
                {"gen_ai.operation.name": operation, "gen_ai.request.model": model},
            )
        usage = ctx.usage
        if usage is not None:
            common = {
                "gen_ai.operation.name": operation,
                "gen_ai.request.model": model,
                "sentinel.key": key,
                "sentinel.usage.source": ctx.usage_source or "estimated",
            }
            self._tokens.record(usage.prompt_tokens, {**common, "gen_ai.token.type": "input"})
            self._tokens.record(usage.completion_tokens, {**common, "gen_ai.token.type": "output"})

    # --- limits ---------------------------------------------------------------------------------

    def limit_decision(self, decision: str, dimension: str | None) -> None:
        """One admission: ``allowed``, ``denied`` or ``degraded``; the refusing dimension."""
        self._limit_decisions.add(
            1, {"sentinel.decision": decision, "sentinel.limit.dimension": dimension or ""}
        )

    def store_call(self, operation: str, seconds: float) -> None:
        """One limit store call (admit or settle) and how long it took."""
        self._store_duration.record(seconds, {"sentinel.operation": operation})

    # --- long-lived state, read at collection time ------------------------------------------

    def observe_limits(self, degraded: Callable[[], bool]) -> None:
        """Whether the limits run on the local fallback (1) or on Redis (0)."""
        self._gauge(
            "sentinel.limits.degraded",
            "1 while limits are answered by the fail-closed local share.",
            lambda: [Observation(int(degraded()))],
        )

    def observe_tracker(self, tracker: UsageTracker) -> None:
        """The usage tracker's queue, flushes, spills and failures."""
        stats = tracker.stats
        self._gauge(
            "sentinel.usage.queue.depth",
            "Usage records waiting in the tracker's queue.",
            lambda: [Observation(tracker.queue_depth)],
        )
        self._gauge(
            "sentinel.usage.flush.last_duration",
            "Wall time of the latest flush (slowest sink), in seconds.",
            lambda: [Observation(stats.flush_seconds_last)],
            unit="s",
        )
        for name, field, description in (
            ("sentinel.usage.records", "recorded", "Usage records handed to the tracker."),
            ("sentinel.usage.flushed", "records_flushed", "Usage records flushed to sinks."),
            ("sentinel.usage.spilled", "spilled", "Records that found the queue full: spooled."),
            ("sentinel.usage.dropped", "dropped", "Records lost (spool not writable)."),
            ("sentinel.usage.delivery_failures", "delivery_failures", "Batches a sink refused."),
            ("sentinel.usage.replayed", "replayed", "Spooled batches delivered on replay."),
        ):
            self._meter.create_observable_counter(
                name,
                callbacks=[_field_reader(stats, field)],
                unit="{record}" if "batch" not in description.lower() else "{batch}",
                description=description,
            )

    def observe_upstreams(self, board: HealthBoard) -> None:
        """Each upstream's breaker state (0 closed, 1 half-open, 2 open), calls in flight and
        moving-average latency to response headers."""
        levels = {"closed": 0, "half_open": 1, "open": 2}

        def states(_: CallbackOptions) -> Iterable[Observation]:
            for health in board.upstreams.values():
                level = levels.get(health.breaker.state.value, 2)
                yield Observation(level, {"sentinel.upstream": health.name})

        def in_flight(_: CallbackOptions) -> Iterable[Observation]:
            for health in board.upstreams.values():
                yield Observation(health.in_flight, {"sentinel.upstream": health.name})

        def latency(_: CallbackOptions) -> Iterable[Observation]:
            for health in board.upstreams.values():
                if health.latency_ms is not None:
                    yield Observation(health.latency_ms / 1000, {"sentinel.upstream": health.name})

        meter = self._meter
        meter.create_observable_gauge(
            "sentinel.upstream.breaker.state",
            callbacks=[states],
            description="Upstream circuit breaker: 0 closed, 1 half-open, 2 open.",
        )
        meter.create_observable_up_down_counter(
            "sentinel.upstream.in_flight",
            callbacks=[in_flight],
            unit="{request}",
            description="Calls to each upstream in flight.",
        )
        meter.create_observable_gauge(
            "sentinel.upstream.latency",
            callbacks=[latency],
            unit="s",
            description="Moving average of each upstream's time to response headers.",
        )

    def observe_drift(self, drift: DriftStats) -> None:
        """Estimated / provider prompt tokens per model (1.0 is exact)."""

        def ratios(_: CallbackOptions) -> Iterable[Observation]:
            for model in drift.models():
                permille = drift.ratio_permille(model)
                if permille is not None:
                    yield Observation(permille / 1000, {"gen_ai.request.model": self.model(model)})

        self._meter.create_observable_gauge(
            "sentinel.tokens.estimate_ratio",
            callbacks=[ratios],
            unit="1",
            description="Estimated / provider-reported prompt tokens, per model.",
        )

    def _gauge(
        self, name: str, description: str, read: Callable[[], list[Observation]], unit: str = "1"
    ) -> None:
        self._meter.create_observable_gauge(
            name, callbacks=[lambda _: read()], unit=unit, description=description
        )


def _field_reader(stats: object, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    return lambda _: [Observation(int(getattr(stats, field)))]
