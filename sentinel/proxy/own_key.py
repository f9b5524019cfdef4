"""``GET /v1/key``: the calling key's own view — its limits, what remains, its budgets.

Authenticated like any ``/v1`` call (config keys, runtime keys, identity principals alike).
What remains comes from the limit store; when the store cannot say, ``used`` and
``remaining`` are null rather than the request failing.
"""

from __future__ import annotations

import time

import structlog

from sentinel.auth.keys import presented_key
from sentinel.container import services_of
from sentinel.errors import SentinelError
from sentinel.http.asgi import Receive, Scope, Send
from sentinel.http.context import CONTEXT_KEY, RequestContext
from sentinel.http.headers import scan_request_headers
from sentinel.http.responses import send_json
from sentinel.keys import own_key_view
from sentinel.keys.records import KEY_ID_PREFIX
from sentinel.limits.store import StoreUnavailable
from sentinel.limits.window import WindowUsage

__all__ = ["OwnKeyEndpoint"]

log = structlog.get_logger("sentinel.keys")


class OwnKeyEndpoint:
    """Answers the caller's own key view as JSON."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope[CONTEXT_KEY]
        ctx.route = "/v1/key"
        services = services_of(scope)
        headers = scan_request_headers(scope["headers"])
        principal = await services.auth.authenticate(
            presented_key(headers.authorization, headers.api_key)
        )
        ctx.key, ctx.key_id, ctx.team = principal.name, principal.id, principal.team
        usage: WindowUsage | None = None
        if principal.is_limited:
            try:
                usage = await services.gate.store.usage(
                    principal.id, principal.limits, time.time_ns() // 1_000_000
                )
            except (SentinelError, StoreUnavailable) as error:
                log.warning("key_usage_unavailable", error=type(error).__name__)
        runtime = principal.id.startswith(KEY_ID_PREFIX)
        expires_at = None
        if runtime and services.keys is not None:
            expires_at = services.keys.runtime.expires_at(principal.id)
        source = "api" if runtime else principal.id.partition(":")[0]
        view = own_key_view(
            principal, usage, source="config" if source == "cfg" else source, expires_at=expires_at
        )
        if services.budgeting is not None:  # spent and left of each budget, the credits
            try:
                view["spending"] = await services.budgeting.view(principal, services.gate.store)
            except (SentinelError, StoreUnavailable) as error:
                log.warning("key_spending_unavailable", error=type(error).__name__)
                view["spending"] = None
        await send_json(send, view, store=False)
