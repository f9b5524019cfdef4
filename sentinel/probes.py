"""``/healthz`` (the process answers) and ``/readyz`` (Sentinel itself can serve requests).

Readiness is about Sentinel, not its upstreams: an upstream whose breaker is open is skipped
or answered with a 503 per request, and taking every replica out of the load balancer for it
(or for a breaker one tenant tripped) would turn one upstream's trouble into a full outage.
The upstreams' breakers are listed in the body for information only.
"""

from __future__ import annotations

from sentinel.container import Services, services_of
from sentinel.http.asgi import Receive, Scope, Send
from sentinel.http.context import CONTEXT_KEY, RequestContext
from sentinel.http.responses import send_json
from sentinel.limits import GuardedStore

__all__ = ["Healthz", "Readyz"]


class Healthz:
    """Alive: the event loop runs and answers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 200."""
        ctx: RequestContext = scope[CONTEXT_KEY]
        ctx.route = "/healthz"
        await send_json(send, {"status": "ok"}, store=False)


def _store_state(services: Services) -> tuple[str, bool]:
    """The limit store's state, and whether it lets this replica serve.

    Redis down with ``on_unavailable = "local"`` still serves (fail closed, on the local
    share): taking every replica out of the load balancer would turn a Redis outage into a
    full one. With ``"deny"`` every limited request would get a 503, so it is not ready.
    """
    redis = services.config.redis
    if redis is None:
        return "embedded", True
    store = services.gate.store
    if isinstance(store, GuardedStore) and store.is_degraded:
        return "redis_unreachable", redis.on_unavailable == "local"
    return "redis", True


class Readyz:
    """Ready: the outbound session is open, the limit store can decide and the usage tracker
    keeps up; the body names each component's state and, for information, each breaker's."""

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
            for entry in services.board.snapshot()
        }
        store, store_ok = _store_state(services)
        tracker = services.tracker
        saturated = tracker.queue_depth >= tracker.capacity
        components = {
            "upstream_client": "ok" if session_open else "closed",
            "store": store,
            "usage_tracker": "saturated" if saturated else "ok",
            "upstreams": upstreams,
        }
        ready = session_open and store_ok and not saturated
        await send_json(
            send,
            {"status": "ready" if ready else "unready", **components},
            status=200 if ready else 503,
            store=False,
        )
