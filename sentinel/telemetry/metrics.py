"""Every metric Sentinel records: its names, labels and the events that record them.

Names follow the OpenTelemetry GenAI semantic conventions where one exists
(``gen_ai.client.token.usage``, ``gen_ai.client.operation.duration``,
``gen_ai.server.time_to_first_token``) and ``sentinel.*`` otherwise. Labels are
low-cardinality by construction: routes are Sentinel's own route templates, key names come
from the configuration, upstream names too, and model names (chosen by clients) pass through
``BoundedLabel``, which keeps the first 64 it sees and calls every later one ``other``.

Per-request values are recorded once, when the request finishes, from its ``RequestContext``,
into ``instruments.Registry`` (a few dict updates; see there why not the SDK's instruments);
the state of long-lived components (the limits breaker, the usage tracker, upstream health,
estimate drift) is read at collection time only, costing the request path nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sentinel.telemetry.instruments import Reading, Registry

if TYPE_CHECKING:
    from sentinel.http.context import RequestContext
    from sentinel.identity import BearerTokens, IdentityService
    from sentinel.money.ledger import ExternalLedger
    from sentinel.upstream.board import HealthBoard
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

    def __call__(self, value: str | None, *, admit: bool = True) -> str:
        """``value`` as a label; a value not seen yet becomes one only when ``admit``."""
        if not value:
            return "none"
        if value in self._seen:
            return value
        if admit and len(self._seen) < self._limit:
            self._seen.add(value)
            return value
        return "other"


class Metrics:
    """The instruments, and one method per event that records them."""

    def __init__(self, registry: Registry) -> None:
        self.model = BoundedLabel()
        self._registry = registry
        self._requests = registry.counter(
            "sentinel.requests",
            "{request}",
            "Requests answered, by outcome.",
            ("http.route", "http.response.status_code", "error.type", "sentinel.key"),
        )
        self._overhead = registry.histogram(
            "sentinel.gateway.overhead",
            "s",
            "Time spent in Sentinel from accept to the end of the response, upstream waits "
            "excluded.",
            ("http.route",),
            _OVERHEAD_BUCKETS,
        )
        self._duration = registry.histogram(
            "gen_ai.client.operation.duration",
            "s",
            "Duration of GenAI operations through the gateway.",
            ("gen_ai.operation.name", "gen_ai.request.model", "error.type"),
            _SECONDS_BUCKETS,
        )
        self._ttft = registry.histogram(
            "gen_ai.server.time_to_first_token",
            "s",
            "Time to the first byte of a streamed response.",
            ("gen_ai.operation.name", "gen_ai.request.model"),
            _SECONDS_BUCKETS,
        )
        self._tokens = registry.histogram(
            "gen_ai.client.token.usage",
            "{token}",
            "Tokens used per request, by type (input, output).",
            (
                "gen_ai.operation.name",
                "gen_ai.request.model",
                "sentinel.key",
                "sentinel.usage.source",
                "gen_ai.token.type",
            ),
            _TOKEN_BUCKETS,
        )
        self._limit_decisions = registry.counter(
            "sentinel.limits.decisions",
            "{decision}",
            "Limit decisions: allowed, denied, degraded (allowed by the local share).",
            ("sentinel.decision", "sentinel.limit.dimension"),
        )
        self._store_duration = registry.histogram(
            "sentinel.limits.store.duration",
            "s",
            "Latency of limit store calls (Redis, or the in-memory store).",
            ("sentinel.operation",),
            _SECONDS_BUCKETS,
        )
        self._guardrail_matches = registry.counter(
            "sentinel.guardrail.matches",
            "{match}",
            "Matches of [[rules]] and [pii] detectors, by rule, action and direction (never the "
            "text).",
            ("sentinel.rule", "sentinel.rule.action", "sentinel.rule.direction"),
        )
        self._upstream = registry.counter(
            "sentinel.upstream.requests",
            "{request}",
            "Requests sent to each upstream (every attempt), by status (0: no answer).",
            ("sentinel.upstream", "http.response.status_code"),
        )
        # Spend is summed exactly in whole nano-USD and shown in USD only when read: a float
        # sum would drift, and Prometheus values are floats anyway.
        self._cost_nano: dict[tuple[str, str], int] = {}
        registry.observe(
            "sentinel.cost.usd",
            "{USD}",  # an annotation: exporters add no unit suffix to the name
            "Spend in USD (exact cost rounded up to 10^-9 per request), by key and model.",
            ("sentinel.key", "gen_ai.request.model"),
            lambda: [(labels, nano / 1e9) for labels, nano in list(self._cost_nano.items())],
            monotonic=True,
        )

    # --- per request ----------------------------------------------------------------------------

    def request_finished(self, ctx: RequestContext, finished_ns: int) -> None:
        """Record everything one finished request says about itself."""
        route = ctx.route
        key = ctx.key or "none"
        error = ctx.error_code or ""
        self._requests.add(route, ctx.status, error, key)
        duration_ns = finished_ns - ctx.started_ns
        self._overhead.record((duration_ns - ctx.upstream_wait_ns) / 1e9, route)
        for attempt in ctx.attempts:
            status = attempt["status"]
            self._upstream.add(str(attempt["upstream"]), status if isinstance(status, int) else 0)
        for (rule, action, direction), count in ctx.rule_hits.items():
            self._guardrail_matches.add(rule, action, direction, amount=count)
        if ctx.cost_nano:
            labels = (key, self.model(ctx.model, admit=ctx.status < 400))
            self._cost_nano[labels] = self._cost_nano.get(labels, 0) + ctx.cost_nano
        operation = _API_OPERATIONS.get(route)
        if operation is None:
            return
        # A model name becomes a label only once a request for it succeeded: names the
        # allow-list, the router or the provider refused never use up the label budget.
        model = self.model(ctx.model, admit=ctx.status < 400)
        self._duration.record(duration_ns / 1e9, operation, model, error)
        if ctx.stream and ctx.ttfb_ns is not None and ctx.status == 200:
            self._ttft.record((ctx.ttfb_ns - ctx.started_ns) / 1e9, operation, model)
        usage = ctx.usage
        if usage is not None:
            source = ctx.usage_source or "estimated"
            tokens = self._tokens
            tokens.record(usage.prompt_tokens, operation, model, key, source, "input")
            tokens.record(usage.completion_tokens, operation, model, key, source, "output")

    # --- limits ---------------------------------------------------------------------------------

    def limit_decision(self, decision: str, dimension: str | None) -> None:
        """One admission: ``allowed``, ``denied`` or ``degraded``; the refusing dimension."""
        self._limit_decisions.add(decision, dimension or "")

    def store_call(self, operation: str, seconds: float) -> None:
        """One limit store call and how long it took."""
        self._store_duration.record(seconds, operation)

    # --- long-lived state, read at collection time ------------------------------------------

    def observe_limits(self, degraded: Callable[[], bool], stats: object) -> None:
        """Whether the limits run on the local fallback (1) or on Redis (0), and what the
        fallback did (``GuardStats``: calls that failed, local decisions, settlements queued
        and dropped, recoveries)."""
        self._registry.observe(
            "sentinel.limits.degraded",
            "1",
            "1 while limits are answered by the fail-closed local share.",
            (),
            lambda: [((), int(degraded()))],
        )
        for name, field, description in (
            ("sentinel.limits.store.unavailable", "unavailable", "Redis calls that failed."),
            (
                "sentinel.limits.local_decisions",
                "degraded_decisions",
                "Admissions the local share answered.",
            ),
            ("sentinel.limits.unavailable_denials", "denied", "Admissions refused with 503."),
            (
                "sentinel.limits.settlements.queued",
                "settlements_queued",
                "Settlements kept for Redis's return.",
            ),
            (
                "sentinel.limits.settlements.dropped",
                "settlements_dropped",
                "Queued settlements pushed out by a full queue (their reservation stays charged).",
            ),
            ("sentinel.limits.recoveries", "recoveries", "Returns of Redis written back."),
        ):
            self._registry.observe(
                name, "1", description, (), _field_reader(stats, field), monotonic=True
            )

    def observe_drains(self, drainer: object) -> None:
        """Abandoned streams read on for their usage: drained to the end, stopped early (time
        or error), and skipped because the drain limit was reached."""
        for name, field, description in (
            ("sentinel.streams.drained", "drained", "Abandoned streams drained to the end."),
            ("sentinel.streams.drain_stopped", "stopped", "Drains stopped by time or error."),
            ("sentinel.streams.drain_skipped", "skipped", "Streams not drained: at the limit."),
        ):
            self._registry.observe(
                name, "1", description, (), _field_reader(drainer, field), monotonic=True
            )

    def observe_identity(
        self, service: IdentityService | None, tokens: BearerTokens | None
    ) -> None:
        """The identity service source (``IdentityService``: lookups, failures, stale answers,
        503s, cached keys) and bearer JWTs (``BearerTokens``: verified, refused, JWKS fetches)."""
        counts: list[tuple[str, object, str, str]] = []
        if service is not None:
            stats, cache = service.stats, service.cache
            counts += [
                ("sentinel.identity.lookups", stats, "lookups", "Lookups sent to the service."),
                ("sentinel.identity.lookup_failures", stats, "failures", "Lookups unanswered."),
                ("sentinel.identity.stale_served", stats, "stale_served", "Stale answers used."),
                ("sentinel.identity.unavailable", stats, "unavailable", "Keys refused with 503."),
            ]
            for name, field in (("known", "known_count"), ("unknown", "unknown_count")):
                self._registry.observe(
                    f"sentinel.identity.cache.{name}",
                    "{key}",
                    f"Keys the identity cache holds as {name}.",
                    (),
                    _field_reader(cache, field),
                )
        if tokens is not None:
            keys = tokens.keys
            counts += [
                ("sentinel.jwt.verified", tokens, "verifications", "JWT signatures checked."),
                ("sentinel.jwt.refused", tokens, "refused", "JWTs refused with 401."),
                ("sentinel.jwt.jwks_fetches", keys, "fetches", "JWKS fetches started."),
                ("sentinel.jwt.jwks_fetch_failures", keys, "fetch_failures", "Failed JWKS fetches"),
            ]
        for name, holder, field, description in counts:
            self._registry.observe(
                name, "1", description, (), _field_reader(holder, field), monotonic=True
            )

    def observe_ledger(self, ledger: ExternalLedger) -> None:
        """The external credits ledger (``[credits] url``): holds granted, refused (402) and
        unavailable (503), settlements waiting, batches delivered and failed, the breaker."""
        batches = ledger.batches
        observe = self._registry.observe
        for name, holder, field, description in (
            ("sentinel.ledger.holds", ledger, "held", "Holds the ledger granted."),
            ("sentinel.ledger.holds_refused", ledger, "refused", "Holds refused with 402."),
            ("sentinel.ledger.holds_unavailable", ledger, "unavailable", "Holds answered 503."),
            ("sentinel.ledger.batches", batches, "batches_sent", "Settlement batches delivered."),
            ("sentinel.ledger.batch_failures", batches, "failures", "Settlement POSTs failed."),
        ):
            observe(name, "1", description, (), _field_reader(holder, field), monotonic=True)
        observe(
            "sentinel.ledger.settlements_pending",
            "{settlement}",
            "Captures and releases not yet delivered to the ledger.",
            (),
            lambda: [((), batches.pending)],
        )
        observe(
            "sentinel.ledger.breaker_open",
            "1",
            "1 while the ledger's circuit breaker refuses holds.",
            (),
            lambda: [((), int(not ledger.breaker.is_closed))],
        )

    def observe_tracker(self, tracker: UsageTracker) -> None:
        """The usage tracker's queue, flushes, spills and failures."""
        stats = tracker.stats
        observe = self._registry.observe
        observe(
            "sentinel.usage.queue.depth",
            "{record}",
            "Usage records waiting in the tracker's queue.",
            (),
            lambda: [((), tracker.queue_depth)],
        )
        observe(
            "sentinel.usage.flush.last_duration",
            "s",
            "Wall time of the latest flush (slowest sink).",
            (),
            lambda: [((), stats.flush_seconds_last)],
        )
        for name, field, description in (
            ("sentinel.usage.records", "recorded", "Usage records handed to the tracker."),
            ("sentinel.usage.flushed", "records_flushed", "Usage records flushed to sinks."),
            ("sentinel.usage.spilled", "spilled", "Records that found the queue full: spooled."),
            ("sentinel.usage.dropped", "dropped", "Records lost (spool not writable)."),
            ("sentinel.usage.delivery_failures", "delivery_failures", "Batches a sink refused."),
            ("sentinel.usage.replayed", "replayed", "Spooled batches delivered on replay."),
        ):
            observe(name, "1", description, (), _field_reader(stats, field), monotonic=True)

    def observe_upstreams(self, board: HealthBoard) -> None:
        """Each upstream's breaker state (0 closed, 1 half-open, 2 open), calls in flight and
        moving-average latency to response headers."""
        levels = {"closed": 0, "half_open": 1, "open": 2}
        upstreams = board.upstreams.values()
        observe = self._registry.observe
        observe(
            "sentinel.upstream.breaker.state",
            "1",
            "Upstream circuit breaker: 0 closed, 1 half-open, 2 open.",
            ("sentinel.upstream",),
            lambda: [((h.name,), levels.get(h.breaker.state.value, 2)) for h in upstreams],
        )
        observe(
            "sentinel.upstream.in_flight",
            "{request}",
            "Calls to each upstream in flight.",
            ("sentinel.upstream",),
            lambda: [((h.name,), h.in_flight) for h in upstreams],
        )
        observe(
            "sentinel.upstream.latency",
            "s",
            "Moving average of each upstream's time to response headers.",
            ("sentinel.upstream",),
            lambda: [
                ((h.name,), h.latency_ms / 1000) for h in upstreams if h.latency_ms is not None
            ],
        )

    def observe_drift(self, drift: DriftStats) -> None:
        """Estimated / provider prompt tokens per model (1.0 is exact)."""

        def ratios() -> Reading:
            for model in drift.models():
                permille = drift.ratio_permille(model)
                if permille is not None:
                    yield (self.model(model),), permille / 1000

        self._registry.observe(
            "sentinel.tokens.estimate_ratio",
            "1",
            "Estimated / provider-reported prompt tokens, per model.",
            ("gen_ai.request.model",),
            ratios,
        )


def _field_reader(stats: object, field: str) -> Callable[[], Reading]:
    return lambda: [((), int(getattr(stats, field)))]
