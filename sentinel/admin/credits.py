"""Prepaid credits under ``/admin/v1/keys/{id}/``: top-ups and the ledger (admin token)::

    POST /admin/v1/keys/{id}/credits   {"amount_usd": "10.00"} + Idempotency-Key    201 | 200
    GET  /admin/v1/keys/{id}/ledger    every top-up and charge, oldest first   ?limit=&after=

A top-up needs an ``Idempotency-Key``: sent again with the same amount it answers what the
first one did (200), with another amount it is a 409. The amount is a decimal string above
zero (at most 9 decimals); anything else is a 400. The key is a config key (``cfg.<name>`` in
the path, as in the keys API) or a runtime key; an unknown id is a 404. With an external
ledger (``[credits] url``) the balance lives there: both routes answer 409 ``credits_external``.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.routing import Route

from sentinel.admin.token import require_admin
from sentinel.config.budgets import format_usd, parse_usd
from sentinel.container import Services, services_of
from sentinel.errors import InvalidRequest, NotFound, SentinelError
from sentinel.http.asgi import Receive, Scope, Send
from sentinel.http.body import parse_json_object, read_body
from sentinel.http.context import CONTEXT_KEY, RequestContext
from sentinel.http.headers import scan_request_headers
from sentinel.http.responses import send_json
from sentinel.money.credits import CreditAccounts

__all__ = ["CreditsExternal", "credit_routes"]

_MAX_BODY = 16 * 1024
_DEFAULT_PAGE = 20
_MAX_PAGE = 100
_IDEMPOTENCY_KEY = re.compile(r"[!-~]{1,200}")  # printable ASCII, no spaces
_ENTRY_ID = re.compile(r"cle_([0-9]{1,15})")


class CreditsExternal(SentinelError):
    """Top-ups and the ledger belong to the external ledger of ``[credits] url``."""

    status = 409
    error_type = "invalid_request_error"
    default_code = "credits_external"
    default_message = (
        "Credits on this gateway are kept by an external ledger ([credits] url): top up and "
        "read the ledger there."
    )


def credit_routes() -> list[Route]:
    """The credits routes, beside the keys API's."""
    return [
        Route("/admin/v1/keys/{key_id}/credits", _TopUp(), methods=["POST"]),
        Route("/admin/v1/keys/{key_id}/ledger", _Ledger(), methods=["GET"]),
    ]


async def _account(scope: Scope, route: str) -> tuple[CreditAccounts, str]:
    """The credits backend and the key id of the path, once the admin token and the key are
    known good."""
    ctx: RequestContext = scope[CONTEXT_KEY]
    ctx.route = route
    services = services_of(scope)
    require_admin(scope["headers"], services.config.admin, scope["path"])
    budgeting = services.budgeting
    if budgeting is not None and budgeting.ledger is not None:
        raise CreditsExternal()
    if budgeting is None or budgeting.credits is None:
        raise NotFound(f"Unknown request URL: {scope['method']} {scope['path'][:200]}.")
    raw_id: str = scope["path_params"]["key_id"]
    key_id = "cfg:" + raw_id[4:] if raw_id.startswith("cfg.") else raw_id
    await _check_key(services, key_id)
    return budgeting.credits, key_id


async def _check_key(services: Services, key_id: str) -> None:
    if key_id.startswith("cfg:"):
        if any(k.name == key_id[4:] for k in services.config.keys):
            return
    elif services.keys is not None:
        await services.keys.view(key_id)  # 404 for an unknown id
        return
    raise NotFound(f"No key with id {key_id[:80]!r}.", code="key_not_found")


class _TopUp:
    """``POST .../credits``: add to the key's prepaid balance."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        credits, key_id = await _account(scope, "/admin/v1/keys/{id}/credits")
        headers = scan_request_headers(scope["headers"])
        raw = await read_body(receive, _MAX_BODY, headers.content_length)
        body = parse_json_object(raw, headers.content_encoding)
        idempotency_key = _idempotency_key(scope)
        nano_usd = _amount(body)
        entry, replayed = await credits.top_up(
            key_id, nano_usd, idempotency_key, int(time.time() * 1000)
        )
        reply: dict[str, Any] = {
            "object": "credit_top_up",
            "key_id": key_id,
            "amount_usd": format_usd(entry.nano_usd),
            "balance_usd": format_usd(entry.balance),
            "entry": entry.view(key_id),
        }
        await send_json(send, reply, status=200 if replayed else 201, store=False)


class _Ledger:
    """``GET .../ledger``: a page of the key's top-ups and charges, oldest first."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        credits, key_id = await _account(scope, "/admin/v1/keys/{id}/ledger")
        limit, after = _page_args(scope)
        entries, more = await credits.ledger(key_id, limit, after)
        data = [entry.view(key_id) for entry in entries]
        await send_json(
            send,
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": more,
            },
            store=False,
        )


def _idempotency_key(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"idempotency-key":
            text: str = bytes(value).decode("latin-1").strip()
            if not _IDEMPOTENCY_KEY.fullmatch(text):
                raise InvalidRequest(
                    "Idempotency-Key: expected 1 to 200 printable characters without spaces.",
                    param="Idempotency-Key",
                )
            return text
    raise InvalidRequest(
        "A top-up needs an Idempotency-Key header, so that a retry cannot add twice.",
        code="idempotency_key_required",
        param="Idempotency-Key",
    )


def _amount(body: dict[str, Any]) -> int:
    unknown = sorted(set(body) - {"amount_usd"})
    if unknown:
        raise InvalidRequest(f"{unknown[0][:60]}: unknown field.", param=unknown[0][:60])
    value = body.get("amount_usd")
    if value is None:
        raise InvalidRequest(
            "amount_usd: required, a decimal string such as '10.00'.",
            code="missing_required_parameter",
            param="amount_usd",
        )
    try:
        nano_usd = parse_usd(value)
    except ValueError as error:
        raise InvalidRequest(f"amount_usd: {error}", param="amount_usd") from None
    if nano_usd <= 0:
        raise InvalidRequest("amount_usd: a top-up must be above zero.", param="amount_usd")
    return nano_usd


def _page_args(scope: Scope) -> tuple[int, int | None]:
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    limit = _DEFAULT_PAGE
    if "limit" in query:
        text = query["limit"]
        if not text.isdigit() or not 1 <= int(text) <= _MAX_PAGE:
            raise InvalidRequest(
                f"limit: expected a whole number from 1 to {_MAX_PAGE}.", param="limit"
            )
        limit = int(text)
    after = query.get("after")
    if after is None:
        return limit, None
    match = _ENTRY_ID.fullmatch(after)
    if match is None:
        raise InvalidRequest("after: expected a ledger entry id such as cle_12.", param="after")
    return limit, int(match.group(1))
