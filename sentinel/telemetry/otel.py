"""Telemetry for one Sentinel process: metrics (Prometheus pull and OTLP push) and, when an
OTLP endpoint is configured, traces through the OpenTelemetry SDK.

Nothing here is global: each app owns its registry, its Prometheus collector registry and
its tracer provider, so several apps in one process (the tests) never share or
double-register anything. Without ``otlp_endpoint`` no exporter thread runs and no span is
ever created.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping

import structlog
from opentelemetry.context import Context
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, generate_latest

from sentinel.config import TelemetryConfig
from sentinel.telemetry.instruments import Registry
from sentinel.telemetry.metrics import Metrics

__all__ = ["Telemetry", "Tracing"]

_PROPAGATOR = TraceContextTextMapPropagator()
log = structlog.get_logger("sentinel.telemetry")


class Tracing:
    """Server spans that continue a client's W3C ``traceparent`` and hand on their own."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def start(self, headers: list[tuple[bytes, bytes]], name: str) -> tuple[Span, str]:
        """A server span (child of the client's trace, if any) and its ``traceparent``."""
        carrier = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in headers
            if k in (b"traceparent", b"tracestate")
        }
        parent: Context = _PROPAGATOR.extract(carrier)
        span = self._tracer.start_span(name, context=parent, kind=SpanKind.SERVER)
        out: dict[str, str] = {}
        _PROPAGATOR.inject(out, context=set_span_in_context(span))
        return span, out.get("traceparent", "")

    @staticmethod
    def end(span: Span, attributes: Mapping[str, str | int | float | bool], failed: bool) -> None:
        """Finish ``span`` with the request's outcome."""
        span.set_attributes(dict(attributes))
        if failed:
            span.set_status(StatusCode.ERROR)
        span.end()


class Telemetry:
    """The process's metrics registry (scraped, and pushed over OTLP) and tracer provider."""

    def __init__(self, config: TelemetryConfig) -> None:
        self.config = config
        instance = config.instance_id or f"{socket.gethostname()}-{os.getpid()}"
        resource = Resource.create(
            {"service.name": config.service_name, "service.instance.id": instance}
        )
        self.instruments = Registry(resource)
        self.metrics = Metrics(self.instruments)
        self._scrape = CollectorRegistry(auto_describe=False)
        self._scrape.register(self.instruments)
        self._pusher: _Pusher | None = None
        self._tracer: TracerProvider | None = None
        self.tracing: Tracing | None = None
        if config.otlp_endpoint:
            self._pusher = _Pusher(
                self.instruments, _metric_exporter(config), config.export_interval_ms / 1000
            )
            self._tracer = TracerProvider(resource=resource)
            self._tracer.add_span_processor(BatchSpanProcessor(_span_exporter(config)))
            self.tracing = Tracing(self._tracer.get_tracer("sentinel"))

    def prometheus_text(self) -> bytes:
        """Every metric in Prometheus' text exposition format."""
        return generate_latest(self._scrape)

    def shutdown(self) -> None:
        """Flush and stop the exporters (blocking: run it off the event loop)."""
        if self._tracer is not None:
            self._tracer.shutdown()
        if self._pusher is not None:
            self._pusher.stop()


class _Pusher:
    """Exports the registry over OTLP every ``interval_s`` from a daemon thread, and once more
    when stopped (so a shutdown loses nothing recorded before it)."""

    def __init__(self, registry: Registry, exporter: MetricExporter, interval_s: float) -> None:
        self._registry = registry
        self._exporter = exporter
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otlp-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self._export()

    def _export(self) -> None:
        try:
            self._exporter.export(self._registry.metrics_data(), timeout_millis=10_000)
        except Exception as exc:  # an unreachable collector must not kill the thread
            log.warning("otlp_metrics_export_failed", error=type(exc).__name__)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=15)
        self._export()
        self._exporter.shutdown()


def _signal_url(endpoint: str, signal: str) -> str:
    """OTLP/HTTP wants one URL per signal: ``<endpoint>/v1/<signal>`` unless already given."""
    base = endpoint.rstrip("/")
    return base if base.endswith(f"/v1/{signal}") else f"{base}/v1/{signal}"


def _metric_exporter(config: TelemetryConfig) -> MetricExporter:
    endpoint = config.otlp_endpoint or ""
    if config.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter(endpoint=_signal_url(endpoint, "metrics"))


def _span_exporter(config: TelemetryConfig) -> SpanExporter:
    endpoint = config.otlp_endpoint or ""
    if config.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(endpoint=_signal_url(endpoint, "traces"))
