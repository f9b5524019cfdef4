"""``GET /v1/models``: the models of every upstream that this gateway routes to them."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import structlog

from sentinel.auth.keys import presented_key
from sentinel.container import Services, services_of
from sentinel.errors import SentinelError, UpstreamError
from sentinel.http.asgi import Receive, Scope, Send
from sentinel.http.context import CONTEXT_KEY, RequestContext
from sentinel.http.headers import scan_request_headers
from sentinel.http.responses import send_json
from sentinel.tenancy import ObjectRef
from sentinel.upstream.call import open_upstream, upstream_url
from sentinel.upstream.client import upstream_errors
from sentinel.upstream.routing import UpstreamTarget

__all__ = ["ModelsEndpoint"]

log = structlog.get_logger("sentinel.models")


class ModelsEndpoint:
    """Merges each upstream's model list, keeping only the models routed to that upstream."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope[CONTEXT_KEY]
        ctx.route = "/v1/models"
        services = services_of(scope)
        headers = scan_request_headers(scope["headers"])
        principal = await services.auth.authenticate(
            presented_key(headers.authorization, headers.api_key)
        )
        ctx.key, ctx.key_id, ctx.team = principal.name, principal.id, principal.team
        targets = services.router.targets
        results = await asyncio.gather(
            *(_list_models(services, t, ctx, dict(headers.forward)) for t in targets),
            return_exceptions=True,
        )
        seen: dict[str, dict[str, Any]] = {}
        failures: list[SentinelError] = []
        for target, result in zip(targets, results, strict=True):
            if isinstance(result, SentinelError):
                failures.append(result)
                log.warning("models_unavailable", upstream=target.name, code=result.code)
                continue
            if isinstance(result, BaseException):
                raise result
            for entry in result:
                if principal.may_use(entry["id"]):  # only what this key may call
                    seen.setdefault(entry["id"], entry)
        if failures and len(failures) == len(targets):
            raise failures[0]
        if not principal.is_admin:
            # A fine-tuned model belongs to the key whose job made it, like any other object.
            for name in [name for name in seen if name.startswith("ft:")]:
                if await services.owners.owner_of(ObjectRef("model", name)) != principal.id:
                    del seen[name]
        for alias in services.router.aliases:
            if principal.may_use(alias):
                seen.setdefault(
                    alias, {"id": alias, "object": "model", "created": 0, "owned_by": "sentinel"}
                )
        await send_json(send, {"object": "list", "data": list(seen.values())})


async def _list_models(
    services: Services, target: UpstreamTarget, ctx: RequestContext, headers: dict[str, str]
) -> list[dict[str, Any]]:
    headers["accept-encoding"] = "identity"
    headers["x-request-id"] = ctx.request_id
    url = upstream_url(target, "/v1/models", b"")
    response = await open_upstream(services.session, target, ctx, "GET", url, headers, None)
    try:
        with upstream_errors(target.name, started=True):
            async with asyncio.timeout(target.total_s):
                body = await response.read()
    finally:
        response.close()
    try:
        parsed = orjson.loads(body)
        entries = parsed["data"] if response.status == 200 else None
    except (orjson.JSONDecodeError, KeyError, TypeError):
        entries = None
    if not isinstance(entries, list):
        raise UpstreamError(
            "The upstream provider sent an invalid model list.",
            code="upstream_protocol_error",
            upstream=target.name,
            status=response.status,
        )
    return [
        e
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("id"), str) and target.matches(e["id"])
    ]
