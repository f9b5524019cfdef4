"""The proxy's side of tenant isolation: only an object's owner reaches it.

Every object id a request names — in its path or anywhere in its JSON body — must be owned by
the calling key, or the request is a 404 as if the object did not exist (an id nobody owns,
existing or not, gets the same answer). Objects a reply shows as created are claimed for the
key before the client sees them; a successful DELETE releases them; a list is answered from
the owner index. Admin keys (``admin = true``) reach every object and their lists pass
through. The index failing is a 503, never a pass (``OwnershipUnavailable``).
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qsl

import orjson
import structlog

from sentinel.errors import InvalidRequest, NotFound
from sentinel.http.responses import send_json
from sentinel.proxy.exchange import Exchange
from sentinel.tenancy import (
    ObjectKind,
    ObjectRef,
    body_object_ids,
    created_objects,
    may_refer,
)

__all__ = [
    "answer_list",
    "check_references",
    "claim_created",
    "claim_streamed",
    "release_deleted",
    "require_owner",
]

log = structlog.get_logger("sentinel.ownership")

_DEFAULT_PAGE = 20
_MAX_PAGE = 100


def _not_found(ref: ObjectRef, param: str | None = None) -> NotFound:
    return NotFound(
        f"No such {ref.kind} object: {ref.id[:200]}.", code="object_not_found", param=param
    )


async def require_owner(exchange: Exchange, ref: ObjectRef, param: str | None = None) -> None:
    """Raise the 404 unless the calling key owns ``ref`` (or is an admin key)."""
    principal = exchange.principal
    if principal.is_admin:
        return
    owner = await exchange.services.owners.owner_of(ref)
    if owner != principal.id:
        raise _not_found(ref, param)


async def check_references(exchange: Exchange, raw: bytes, body: dict[str, Any]) -> None:
    """Every object a JSON body names must be the caller's: files, vector stores, previous
    responses, fine-tuned models; a Responses ``conversation`` is never one of them, since
    conversations cannot be created through Sentinel."""
    if exchange.principal.is_admin:
        return
    conversation = body.get("conversation")
    if conversation is not None:
        shown = conversation if isinstance(conversation, str) else "the given conversation"
        raise NotFound(
            f"No such conversation object: {str(shown)[:200]}.",
            code="object_not_found",
            param="conversation",
        )
    if not may_refer(raw):
        return  # the raw bytes name no id: the common case costs a few memchr
    try:
        refs = body_object_ids(body)
    except ValueError:
        raise InvalidRequest(
            "The JSON body is nested too deeply.", code="invalid_value", param="body"
        ) from None
    for ref in refs:
        await require_owner(exchange, ref)


async def claim_created(exchange: Exchange, kind: ObjectKind, reply: object, raw: bytes) -> None:
    """Claim for the calling key every object a successful reply of ``kind`` shows (the first
    owner keeps an object: a reply cannot move another key's object to this one)."""
    owners, owner = exchange.services.owners, exchange.principal.id
    shown_id = reply.get("id") if isinstance(reply, dict) else None
    for ref, created_at in created_objects(kind, reply):
        snapshot = raw if ref.kind == kind and ref.id == shown_id else None
        await owners.claim(ref, owner, created_at, snapshot)


_STREAM_ID = re.compile(rb'"id"\s*:\s*"([A-Za-z0-9._:~-]{1,256})"')


async def claim_streamed(exchange: Exchange, kind: ObjectKind, first_chunk: bytes) -> None:
    """Claim the object a stream's first event names (a chat chunk's ``id``, the response of
    ``response.created``) before the client sees it; listed without a snapshot."""
    found = _STREAM_ID.search(first_chunk)
    if found is None:
        log.warning("stored_object_unclaimed", kind=kind, request_id=exchange.ctx.request_id)
        return
    ref = ObjectRef(kind, found.group(1).decode("ascii"))
    await exchange.services.owners.claim(ref, exchange.principal.id, int(time.time()), None)


async def release_deleted(exchange: Exchange, ref: ObjectRef) -> None:
    """Forget an object its owner deleted."""
    await exchange.services.owners.release(ref)


async def answer_list(exchange: Exchange, kind: ObjectKind) -> None:
    """Answer a list of ``kind`` with the caller's own objects, OpenAI's list shape and its
    ``limit`` (1-100, default 20), ``after`` and ``order`` (``desc`` by default); each entry is
    the object as its last create or retrieval through Sentinel showed it."""
    query = dict(parse_qsl(exchange.scope["query_string"].decode("ascii")))
    limit = _limit(query.get("limit"))
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest(
            "Invalid 'order': expected 'asc' or 'desc'.", code="invalid_value", param="order"
        )
    snapshots, has_more = await exchange.services.owners.page(
        exchange.principal.id,
        kind,
        after=query.get("after") or None,
        limit=limit,
        ascending=order == "asc",
    )
    data = [orjson.loads(snapshot) for snapshot in snapshots]
    await send_json(
        exchange.send,
        {
            "object": "list",
            "data": data,
            "first_id": data[0].get("id") if data else None,
            "last_id": data[-1].get("id") if data else None,
            "has_more": has_more,
        },
    )


def _limit(value: str | None) -> int:
    if value is None:
        return _DEFAULT_PAGE
    if not value.isdigit() or not 1 <= int(value) <= _MAX_PAGE:
        raise InvalidRequest(
            f"Invalid 'limit': expected an integer from 1 to {_MAX_PAGE}.",
            code="invalid_value",
            param="limit",
        )
    return int(value)
