"""The ``/v1`` endpoints Sentinel forwards without reading the API: explicit policy, metered.

Only the families of ``sentinel.config.families`` are forwarded, with the methods
``[passthrough]`` enables; any other path is 404. Each request goes through the shared
sequence (``sentinel.proxy.exchange``): it counts as a request (``rpm``, ``max_parallel``);
token-spending families are refused to keys with token limits unless the key allows them,
and their JSON replies' ``usage`` is charged. An object a path names must belong to the
caller (404 otherwise, as if it did not exist), and so must every object id in a JSON body;
lists of objects are answered from Sentinel's owner index, so a key sees only its own.
Objects created here are claimed for the key before the reply reaches the client.

JSON bodies are read (within ``max_body_bytes``), parsed strictly (a repeated key is a 400)
and judged: their ``model`` chooses the upstream and meets the key's allow-list. Any other
body (multipart uploads) is streamed to the first upstream as it arrives, counted against
``max_body_bytes``; replies are relayed as they arrive, with length and encoding untouched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson

from sentinel.config.families import match_route
from sentinel.deadline import deadline_at
from sentinel.errors import MethodNotAllowed, NotFound, PermissionDenied, UpstreamError
from sentinel.http.asgi import Receive, Scope, Send
from sentinel.http.body import BodyStream, parse_json_object, read_body
from sentinel.proxy.exchange import (
    Exchange,
    Plan,
    parse_reply,
    relay_reply,
    run_exchange,
    send_whole,
)
from sentinel.proxy.ownership import (
    answer_list,
    check_references,
    claim_created,
    release_deleted,
    require_owner,
)
from sentinel.tenancy import ObjectKind, ObjectRef, collection_kind, path_object
from sentinel.upstream.client import upstream_errors
from sentinel.upstream.failover import Served
from sentinel.upstream.routing import Candidate
from sentinel.usage.counts import Usage

__all__ = ["PassthroughEndpoint"]

# Families whose requests run no model: the rest must name one the key may use.
_MODEL_FREE = frozenset({"files", "uploads", "vector_stores", "chat_completions", "responses"})
_ACTIONS = frozenset({"cancel", "complete"})
_MAX_METERED_BYTES = 16 * 1024 * 1024  # a reply larger than this is relayed but not metered
_MAX_CLAIMED_BYTES = 1024 * 1024  # an object reply read whole to claim what it shows


class PassthroughEndpoint:
    """ASGI endpoint for every ``/v1`` path that is not one of the four read APIs."""

    route = "/v1/*"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await run_exchange(self, scope, receive, send)

    async def prepare(self, exchange: Exchange) -> Plan | None:
        """Apply the pass-through policy and ownership, then read or stream the body."""
        scope, services, principal = exchange.scope, exchange.services, exchange.principal
        method: str = scope["method"]
        path: str = scope["path"]
        segments = tuple(path.split("/")[2:])  # canonical: "", "v1", then the segments
        match = match_route(segments)
        if match is None:
            raise NotFound(f"Unknown request URL: {method} {path[:200]}.")
        family = match.family
        enabled = services.config.passthrough.methods(family.name)
        if not enabled:
            raise NotFound(
                f"The '{family.name}' endpoints are not enabled on this gateway.",
                code="endpoint_not_enabled",
            )
        if method not in match.methods or method not in enabled:
            raise MethodNotAllowed(f"The method {method} is not allowed on {path[:200]}.")
        if family.spends_tokens:
            principal.check_spending(family.name)
            if services.budgeting is not None:  # its cost cannot be held before the call
                services.budgeting.check_spending(principal, family.name)
        _refuse_unscreened(exchange, method)
        ref = path_object(segments)
        if ref is not None:
            await require_owner(exchange, ref)
        kind = collection_kind(segments)
        if kind is not None and method == "GET" and not principal.is_admin:
            await answer_list(exchange, kind)
            return None
        exchange.claim = _claim_kind(method, segments, ref, kind)
        exchange.release = ref if method == "DELETE" and _is_object_path(segments, ref) else None
        exchange.meter = family.spends_tokens
        candidates, data, upload, model = await _read(exchange, family.name)
        forward = exchange.headers.forward
        reads_reply = exchange.claim is not None or exchange.meter
        # A reply Sentinel reads (to claim what it shows, or to charge its usage) must come
        # uncompressed; any other goes back in the encoding the client accepts.
        forward["accept-encoding"] = (
            "identity" if reads_reply else exchange.headers.accept_encoding or "identity"
        )
        if upload is not None and exchange.headers.content_length is not None:
            forward["content-length"] = str(exchange.headers.content_length)
        exchange.ctx.model = model
        return Plan(
            candidates,
            forward,
            lambda c: data if c.model in (None, model) else _with_model(data, c),
            upload=upload,
        )

    async def deliver(self, exchange: Exchange, served: Served) -> None:
        """Relay the reply as it arrives (metering a token-spending family's JSON usage), or
        read an object reply whole to claim what it shows before the client sees it."""
        outcome, response = exchange.outcome, served.response
        outcome.produced = True  # any answer, even an error, was a request served
        succeeded = response.status < 300
        is_json = response.content_type == "application/json"
        if exchange.claim is not None and succeeded and is_json:
            body = await _read_object(exchange, response, served)
            await claim_created(exchange, exchange.claim, parse_reply(body), body)
            await send_whole(exchange, response, body)
            return
        tap = _UsageTap() if exchange.meter and succeeded and is_json else None
        await relay_reply(exchange, served, tap=tap, keep_length=True)
        if tap is not None:
            outcome.usage = tap.usage()
        if exchange.release is not None and succeeded:
            await release_deleted(exchange, exchange.release)


def _is_object_path(segments: tuple[str, ...], ref: ObjectRef | None) -> bool:
    """Whether ``segments`` address the object ``ref`` itself (``files/{id}``)."""
    return ref is not None and collection_kind(segments[:-1]) == ref.kind


def _claim_kind(
    method: str, segments: tuple[str, ...], ref: ObjectRef | None, kind: ObjectKind | None
) -> ObjectKind | None:
    """The kind of object a successful reply shows and the caller then owns: a create on a
    collection, a retrieval of the object itself, or an action on it (``cancel``,
    ``complete``) — never a reply body the caller wrote (``files/{id}/content``)."""
    if method == "POST" and kind is not None:
        return kind
    if ref is None:
        return None
    if method == "GET" and _is_object_path(segments, ref):
        return ref.kind
    if method == "POST" and segments[-1] in _ACTIONS and collection_kind(segments[:-2]) == ref.kind:
        return ref.kind
    return None


def _refuse_unscreened(exchange: Exchange, method: str) -> None:
    """403 ``content_unscreened`` for a body the content rules cannot read (a file, a batch,
    an image prompt...) when rules apply to this key: it would reach a model unscreened."""
    rules, principal = exchange.services.guardrails, exchange.principal
    length = exchange.headers.content_length
    has_body = bool(length) if length is not None else method in ("POST", "PUT", "PATCH")
    if has_body and rules is not None and rules.reads_requests(principal.name, principal.team):
        raise PermissionDenied(
            "Content rules apply to this key, and they cannot read the body of this endpoint; "
            "it is not forwarded.",
            code="content_unscreened",
        )


async def _read(
    exchange: Exchange, family: str
) -> tuple[list[Candidate], bytes | AsyncIterator[bytes] | None, BodyStream | None, str | None]:
    """Choose the upstreams and judge the body: a JSON body is read and checked whole, any
    other is streamed to the first upstream as it arrives."""
    scope, services, headers = exchange.scope, exchange.services, exchange.headers
    router, principal = services.router, exchange.principal
    method: str = scope["method"]
    path: str = scope["path"]
    limit = services.config.server.max_body_bytes
    if method in ("GET", "DELETE") and not headers.content_length:
        named = path.removeprefix("/v1/models/") if family == "models" else None
        return router.candidates(named), None, None, None
    content_type = headers.content_type or b""
    if content_type.startswith(b"application/json"):
        raw = await read_body(
            exchange.receive,
            limit,
            headers.content_length,
            exchange.body_deadline,
            encoding=headers.content_encoding,
        )
        headers.forward.pop("content-encoding", None)  # the body goes as read: inflated
        exchange.ctx.request_bytes = len(raw)
        body = parse_json_object(raw, None)
        found = body.get("model")
        model = found if isinstance(found, str) and found else None
        if family not in _MODEL_FREE or model is not None:
            principal.check_model(model)
        await check_references(exchange, raw, body)
        return router.candidates(model), raw, None, model
    if family not in _MODEL_FREE:
        # Fail closed: with an allow-list, a body whose model cannot be read (a multipart
        # audio upload) is refused.
        principal.check_model(None)
    if headers.content_length is not None and headers.content_length > limit:
        await read_body(exchange.receive, limit, headers.content_length)  # raises the 413
    upload = BodyStream(exchange.receive, limit, deadline=exchange.body_deadline)
    return router.default_candidates(), upload.chunks(), upload, None


def _with_model(
    data: bytes | AsyncIterator[bytes] | None, candidate: Candidate
) -> bytes | AsyncIterator[bytes] | None:
    """The body for ``candidate``: a JSON body names the model as that upstream knows it."""
    if not isinstance(data, bytes) or candidate.model is None:
        return data
    parsed = orjson.loads(data)  # parsed and checked already in _read
    if not isinstance(parsed, dict) or parsed.get("model") in (None, candidate.model):
        return data
    parsed["model"] = candidate.model
    return orjson.dumps(parsed)


async def _read_object(
    exchange: Exchange, response: aiohttp.ClientResponse, served: Served
) -> bytes:
    """An object reply, read whole within the call's deadline; one too large to be an object
    is a 502 (it cannot be claimed, and the caller must not lose what it created unseen)."""
    target = served.candidate.target
    deadline = exchange.reply_deadline(target)
    parts: list[bytes] = []
    size = 0
    with upstream_errors(target.name, started=True), deadline_at(deadline):
        if response.content_length is None or response.content_length <= _MAX_CLAIMED_BYTES:
            while chunk := await response.content.readany():
                size += len(chunk)
                if size > _MAX_CLAIMED_BYTES:
                    break
                parts.append(chunk)
            else:
                return b"".join(parts)
    raise UpstreamError(
        "The upstream provider answered with an object too large to relay.",
        code="upstream_reply_too_large",
        upstream=target.name,
    )


class _UsageTap:
    """Keeps a JSON reply's bytes (up to a bound) as they are relayed, to read its usage."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> bytes:
        self._size += len(chunk)
        if self._size <= _MAX_METERED_BYTES:
            self._parts.append(chunk)
        return chunk

    def finish(self) -> bytes:
        return b""

    @property
    def is_complete(self) -> bool:
        return True

    def usage(self) -> Usage | None:
        """The reply's ``usage`` (images, transcriptions), None when it has none."""
        if self._size > _MAX_METERED_BYTES:
            return None
        parsed = parse_reply(b"".join(self._parts))
        return Usage.from_openai(parsed.get("usage")) if isinstance(parsed, dict) else None
