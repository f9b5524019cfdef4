"""Traces over OTLP: a server span per request, continuing the client's ``traceparent`` and
handing its own on to the upstream; exported to a real OTLP/HTTP receiver on loopback."""

from __future__ import annotations

import asyncio
import dataclasses

import aiohttp
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from sentinel.config import TelemetryConfig
from tests.conftest import CLIENT_KEY, Upstream, make_config, running_gateway

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


async def test_requests_continue_the_clients_trace_and_propagate_it(
    upstream: Upstream, http: aiohttp.ClientSession
) -> None:
    exports: list[ExportTraceServiceRequest] = []

    async def receive(request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        exports.append(message)
        return web.Response(body=b"", content_type="application/x-protobuf")

    metric_exports: list[ExportMetricsServiceRequest] = []

    async def accept(request: web.Request) -> web.Response:
        message = ExportMetricsServiceRequest()
        message.ParseFromString(await request.read())
        metric_exports.append(message)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", receive)
    app.router.add_post("/v1/metrics", accept)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        telemetry = TelemetryConfig(otlp_endpoint=f"http://127.0.0.1:{port}")
        config = dataclasses.replace(make_config(upstream.url), telemetry=telemetry)
        async with running_gateway(config) as gateway:  # stopped here: the exporter flushes
            async with http.post(
                f"{gateway.base_url}/chat/completions",
                json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
                headers={
                    "Authorization": f"Bearer {CLIENT_KEY}",
                    "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01",
                },
            ) as r:
                assert r.status == 200
        # The upstream saw the same trace, under Sentinel's span rather than the client's.
        seen = (await upstream.requests(limit=1))[-1]["headers"]["traceparent"]
        _, trace_id, parent_span, flags = seen.split("-")
        assert trace_id == TRACE_ID and parent_span != CLIENT_SPAN and flags == "01"
        # Sentinel's span arrived at the OTLP receiver (the exporter is flushed at shutdown).
        for _ in range(200):
            if exports:
                break
            await asyncio.sleep(0.02)
        spans = [
            span
            for export in exports
            for resource in export.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
            if span.name == "POST /v1/chat/completions"
        ]
        assert len(spans) == 1
        span = spans[0]
        assert span.trace_id.hex() == TRACE_ID and span.parent_span_id.hex() == CLIENT_SPAN
        assert span.span_id.hex() == parent_span
        attributes = {a.key: a.value for a in span.attributes}
        assert attributes["http.response.status_code"].int_value == 200
        assert attributes["sentinel.key"].string_value == "team-a"
        # The metrics were pushed too, at shutdown at the latest: one chat request counted.
        metrics = {
            metric.name: metric
            for export in metric_exports
            for resource in export.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }
        chat = [
            point
            for point in metrics["sentinel.requests"].sum.data_points
            if any(a.value.string_value == "/v1/chat/completions" for a in point.attributes)
        ]
        assert [point.as_int for point in chat] == [1]
        duration = metrics["gen_ai.client.operation.duration"].histogram.data_points
        assert sum(point.count for point in duration) == 1
    finally:
        await runner.cleanup()
