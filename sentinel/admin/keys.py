"""The keys API under ``/admin/v1/``: runtime keys and the audit log (DESIGN.md, "Runtime keys").

Explicit routes, each a small ASGI endpoint over ``KeyAdmin``::

    POST  /admin/v1/keys                create (Idempotency-Key honoured)      201
    GET   /admin/v1/keys                list: config keys, then runtime keys    ?limit=&after=
    GET   /admin/v1/keys/{id}           one key
    PATCH /admin/v1/keys/{id}           change limits, models, budgets, metadata, expiry
    POST  /admin/v1/keys/{id}/revoke    refused by every replica from then on
    POST  /admin/v1/keys/{id}/rotate    a new secret; the old one works ``grace_s`` more
    GET   /admin/v1/audit               every change, newest first              ?limit=&after=

In a path, a config key's id ``cfg:<name>`` is written ``cfg.<name>`` (Sentinel's paths have
no colon). Every endpoint requires an admin token; its name is the audit's ``actor``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.routing import Route

from sentinel.admin.token import require_admin
from sentinel.container import Services, services_of
from sentinel.errors import InvalidRequest, NotFound
from sentinel.http.asgi import Receive, Scope, Send
from sentinel.http.body import parse_json_object, read_body
from sentinel.http.context import CONTEXT_KEY, RequestContext
from sentinel.http.headers import scan_request_headers
from sentinel.http.responses import send_json
from sentinel.keys import KeyAdmin

__all__ = ["key_routes"]

_MAX_BODY = 64 * 1024
_DEFAULT_PAGE = 20
_MAX_PAGE = 100


def key_routes() -> list[Route]:
    """The keys API's routes, to sit beside the other ``/admin/v1/`` routes."""
    return [
        Route("/admin/v1/keys", _Keys(), methods=["GET", "POST"]),
        Route("/admin/v1/keys/{key_id}", _Key(), methods=["GET", "PATCH"]),
        Route("/admin/v1/keys/{key_id}/revoke", _Revoke(), methods=["POST"]),
        Route("/admin/v1/keys/{key_id}/rotate", _Rotate(), methods=["POST"]),
        Route("/admin/v1/audit", _Audit(), methods=["GET"]),
    ]


def _admin(scope: Scope, route: str) -> tuple[Services, KeyAdmin, str]:
    """The services, the keys' admin and the name of the admin token presented."""
    ctx: RequestContext = scope[CONTEXT_KEY]
    ctx.route = route
    services = services_of(scope)
    actor = require_admin(scope["headers"], services.config.admin, scope["path"])
    if services.keys is None:
        raise NotFound(f"Unknown request URL: {scope['method']} {scope['path'][:200]}.")
    return services, services.keys, actor


def _key_id(scope: Scope) -> str:
    key_id: str = scope["path_params"]["key_id"]
    return "cfg:" + key_id[4:] if key_id.startswith("cfg.") else key_id


async def _body(scope: Scope, receive: Receive, *, optional: bool = False) -> dict[str, Any]:
    headers = scan_request_headers(scope["headers"])
    raw = await read_body(receive, _MAX_BODY, headers.content_length)
    if optional and not raw.strip():
        return {}
    return parse_json_object(raw, headers.content_encoding)


def _page_args(scope: Scope) -> tuple[int, str | None]:
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    limit = _DEFAULT_PAGE
    if "limit" in query:
        text = query["limit"]
        if not text.isdigit() or not 1 <= int(text) <= _MAX_PAGE:
            raise InvalidRequest(
                f"limit: expected a whole number from 1 to {_MAX_PAGE}.", param="limit"
            )
        limit = int(text)
    after = query.get("after") or None
    if after is not None and len(after) > 200:
        raise InvalidRequest("after: expected an id.", param="after")
    return limit, after


class _Keys:
    """``GET`` lists keys; ``POST`` creates one."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        _, admin, actor = _admin(scope, "/admin/v1/keys")
        if scope["method"] == "GET":
            limit, after = _page_args(scope)
            await send_json(send, await admin.page(limit, after), store=False)
            return
        body = await _body(scope, receive)
        idempotency_key = None
        for name, value in scope["headers"]:
            if name == b"idempotency-key":
                idempotency_key = value.decode("latin-1")
        reply, replayed = await admin.create(body, actor, idempotency_key)
        await send_json(send, reply, status=200 if replayed else 201, store=False)


class _Key:
    """``GET`` shows one key; ``PATCH`` changes it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        _, admin, actor = _admin(scope, "/admin/v1/keys/{id}")
        key_id = _key_id(scope)
        if scope["method"] == "GET":
            await send_json(send, await admin.view(key_id), store=False)
            return
        body = await _body(scope, receive)
        await send_json(send, await admin.patch(key_id, body, actor), store=False)


class _Revoke:
    """``POST .../revoke``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        _, admin, actor = _admin(scope, "/admin/v1/keys/{id}/revoke")
        await _body(scope, receive, optional=True)
        await send_json(send, await admin.revoke(_key_id(scope), actor), store=False)


class _Rotate:
    """``POST .../rotate`` with an optional ``{"grace_s": N}``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        _, admin, actor = _admin(scope, "/admin/v1/keys/{id}/rotate")
        body = await _body(scope, receive, optional=True)
        await send_json(send, await admin.rotate(_key_id(scope), body, actor), store=False)


class _Audit:
    """``GET /admin/v1/audit``: a page of the audit log, newest first."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        _, admin, _actor = _admin(scope, "/admin/v1/audit")
        limit, after = _page_args(scope)
        await send_json(send, await admin.audit(limit, after), store=False)
