"""The admin API under ``/admin/v1/``, behind ``[admin] token`` (a bearer token).

Without a configured token the admin API does not exist (404); a missing or wrong token is a
401. ``GET /admin/v1/upstreams`` shows each upstream's breaker state, recent error rate,
latency and in-flight calls — never its keys or headers.
"""

from __future__ import annotations

from sentinel.admin.token import require_admin
from sentinel.container import services_of
from sentinel.http.asgi import Receive, Scope, Send
from sentinel.http.context import CONTEXT_KEY, RequestContext
from sentinel.http.responses import send_json

__all__ = ["AdminUpstreams"]


class AdminUpstreams:
    """``GET /admin/v1/upstreams``: every upstream's health, in configuration order."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the upstreams' state as JSON."""
        ctx: RequestContext = scope[CONTEXT_KEY]
        ctx.route = "/admin/v1/upstreams"
        services = services_of(scope)
        require_admin(scope["headers"], services.config.admin, scope["path"])
        kinds = {t.name: t.config for t in services.router.targets}
        upstreams = []
        for entry in services.board.snapshot():
            config = kinds[entry["name"]]
            upstreams.append(
                {
                    **entry,
                    "kind": config.kind,
                    "priority": config.priority,
                    "weight": config.weight,
                    "models": config.models,
                    "open_models": entry["models"],
                }
            )
        await send_json(send, {"object": "list", "data": upstreams}, store=False)
