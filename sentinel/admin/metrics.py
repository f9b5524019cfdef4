"""``GET /metrics``: the Prometheus scrape endpoint, behind the admin token unless public."""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST

from sentinel.admin.token import require_admin
from sentinel.config import AdminConfig
from sentinel.http.asgi import Receive, Scope, Send
from sentinel.http.context import CONTEXT_KEY, RequestContext
from sentinel.telemetry.otel import Telemetry

__all__ = ["MetricsEndpoint"]


class MetricsEndpoint:
    """Renders every instrument in Prometheus' text format."""

    def __init__(self, telemetry: Telemetry, admin: AdminConfig) -> None:
        self._telemetry = telemetry
        self._admin = admin
        self._public = telemetry.config.metrics_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope[CONTEXT_KEY]
        ctx.route = "/metrics"
        if not self._public:
            require_admin(scope["headers"], self._admin, scope["path"])
        # Collecting every instrument takes milliseconds: keep it off the event loop.
        body = await asyncio.to_thread(self._telemetry.prometheus_text)
        headers = [
            (b"content-type", CONTENT_TYPE_LATEST.encode("ascii")),
            (b"content-length", str(len(body)).encode("ascii")),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
