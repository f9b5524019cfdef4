"""OpenTelemetry providers for one Sentinel process: metrics (Prometheus pull and OTLP push)
and, when an OTLP endpoint is configured, traces.

Nothing here is global: each app owns its providers (and its own Prometheus registry), so
several apps in one process (the tests) never share or double-register instruments. Without
``otlp_endpoint`` no exporter thread runs and no span is ever created.
"""

from __future__ import annotations

import hmac
import os
import socket
from collections.abc import Mapping

from opentelemetry.context import Context
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, generate_latest

from sentinel.config import TelemetryConfig
from sentinel.telemetry.metrics import Metrics

__all__ = ["Telemetry", "Tracing", "admin_allowed"]

_PROPAGATOR = TraceContextTextMapPropagator()


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
    """The process's meter (and tracer) providers and the Prometheus registry they fill."""

    def __init__(self, config: TelemetryConfig) -> None:
        self.config = config
        resource = Resource.create(
            {
                "service.name": config.service_name,
                "service.instance.id": config.instance_id
                or f"{socket.gethostname()}-{os.getpid()}",
            }
        )
        self.registry = CollectorRegistry(auto_describe=True)
        readers: list[MetricReader] = [
            PrometheusMetricReader(registry=self.registry, scope_info_enabled=False)
        ]
        if config.otlp_endpoint:
            readers.append(
                PeriodicExportingMetricReader(
                    _metric_exporter(config), export_interval_millis=config.export_interval_ms
                )
            )
        self._meters = MeterProvider(resource=resource, metric_readers=readers)
        self.metrics = Metrics(self._meters.get_meter("sentinel"))
        self._tracer: TracerProvider | None = None
        self.tracing: Tracing | None = None
        if config.otlp_endpoint:
            self._tracer = TracerProvider(resource=resource)
            self._tracer.add_span_processor(BatchSpanProcessor(_span_exporter(config)))
            self.tracing = Tracing(self._tracer.get_tracer("sentinel"))

    def prometheus_text(self) -> bytes:
        """Every metric in Prometheus' text exposition format."""
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        """Flush and stop the exporters (blocking: run it off the event loop)."""
        if self._tracer is not None:
            self._tracer.shutdown()
        self._meters.shutdown(timeout_millis=5_000)


def admin_allowed(authorization: bytes | None, token: str | None) -> bool:
    """Whether ``Authorization: Bearer <token>`` carries the admin token (constant time)."""
    if token is None or authorization is None:
        return False
    scheme, _, presented = authorization.partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(presented.strip(), token.encode("utf-8"))


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
