"""``/healthz`` (the process answers) and ``/readyz`` (it can serve proxied requests)."""

from __future__ import annotations

import orjson

from sentinel.http.asgi import Receive, Scope, Send
from sentinel.http.context import CONTEXT_KEY, RequestContext
from sentinel.services import services_of

__all__ = ["Healthz", "Readyz"]


async def _json(send: Send, status: int, payload: object) -> None:
    body = orjson.dumps(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class Healthz:
    """Alive: the event loop runs and answers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 200."""
        ctx: RequestContext = scope[CONTEXT_KEY]
        ctx.route = "/healthz"
        await _json(send, 200, {"status": "ok"})


class Readyz:
    """Ready: the outbound session is open and some upstream is usable; no secrets."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 200 when ready, 503 otherwise."""
        ctx: RequestContext = scope[CONTEXT_KEY]
        ctx.route = "/readyz"
        services = services_of(scope)
        session_open = not services.session.closed
        upstreams = {
            entry["name"]: entry["state"]
            if entry["usable"] or entry["state"] != "half_open"
            else "open"
            for entry in services.health.snapshot()
        }
        any_usable = services.health.any_usable()
        components = {
            "upstream_client": "ok" if session_open else "closed",
            "store": "embedded" if services.config.redis is None else "redis",
            "upstreams": upstreams,
        }
        ready = session_open and any_usable
        await _json(
            send, 200 if ready else 503, {"status": "ready" if ready else "unready", **components}
        )
