"""Every other ``/v1/*`` path and method, passed through with bodies streamed both ways.

JSON bodies (images, moderations, speech) are small: they are read so that a ``model`` in them
can choose the upstream. Any other body (multipart audio uploads, files) is streamed to the
first upstream as it arrives, counted against ``max_body_bytes``; responses are relayed as
they arrive, with their length and encoding untouched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from sentinel.auth.keys import presented_key
from sentinel.errors import MethodNotAllowed, SentinelError
from sentinel.http.asgi import Receive, Scope, Send
from sentinel.http.body import BodyStream, read_body
from sentinel.http.context import CONTEXT_KEY, RequestContext
from sentinel.http.headers import RequestHeaders, scan_request_headers
from sentinel.proxy.admission import admit
from sentinel.services import Services, services_of
from sentinel.streaming.relay import relay
from sentinel.upstream.routing import Candidate

__all__ = ["PassthroughEndpoint"]

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"})
_MODEL_PATH = "/v1/models/"
_NO_MODEL = ("/v1/files", "/v1/uploads")


class PassthroughEndpoint:
    """ASGI endpoint for any ``/v1/*`` request that Sentinel does not read."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope[CONTEXT_KEY]
        ctx.route = "/v1/*"
        method: str = scope["method"]
        if method not in _METHODS:
            raise MethodNotAllowed(f"The method {method} is not allowed on /v1 paths.")
        services = services_of(scope)
        headers = scan_request_headers(scope["headers"])
        principal = services.keys.authenticate(
            presented_key(headers.authorization, headers.api_key)
        )
        ctx.key = principal.name
        ctx.on_finish = services.record_usage
        candidates, data, stream, model = await _candidates_and_body(
            scope, receive, services, headers
        )
        candidates = services.failover.usable(candidates)
        ctx.upstream = candidates[0].name
        if model is not None or (method == "POST" and not scope["path"].startswith(_NO_MODEL)):
            # Fail closed: with an allow-list, a POST whose model cannot be read (a multipart
            # audio upload, a batch) is refused; file uploads run no model.
            principal.check_model(model)
        ctx.model = model
        # Counted as a request (rpm, max_parallel); these APIs report no token usage.
        reservation = await admit(ctx, services.gate, principal, 0)
        produced = False
        try:
            with services.gate.holding(reservation):
                await self._forward(
                    scope, receive, send, services, candidates, headers, data, stream
                )
            produced = True
        finally:
            if reservation is not None:
                # An upstream answer, even an error, was a request; no answer releases it.
                produced = produced or ctx.status != 0
                await services.gate.settle(reservation, 0, produced=produced)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        services: Services,
        candidates: list[Candidate],
        headers: RequestHeaders,
        data: bytes | AsyncIterator[bytes] | None,
        stream: BodyStream | None,
    ) -> None:
        ctx: RequestContext = scope[CONTEXT_KEY]
        method: str = scope["method"]
        forward = headers.forward
        forward["accept-encoding"] = headers.accept_encoding or "identity"
        forward["x-request-id"] = ctx.request_id
        if stream is not None and headers.content_length is not None:
            forward["content-length"] = str(headers.content_length)
        try:
            served = await services.failover.open(
                services.session,
                ctx,
                candidates,
                method=method,
                path=scope["path"],
                query=scope["query_string"],
                headers=forward,
                body=lambda c: data if c.model in (None, ctx.model) else _with_model(data, c),
                # A streamed upload is read once: it cannot be sent again.
                replayable=stream is None,
            )
        except SentinelError:
            failure = stream.failure() if stream is not None else None
            if failure is not None:
                raise failure from None
            raise
        if stream is not None:
            ctx.request_bytes = stream.size
        interrupted = False
        try:
            await relay(served.response, ctx, send, receive, tap=None, keep_length=True)
        except SentinelError:
            interrupted = True
            raise
        finally:
            served.response.close()
            served.finish(interrupted=interrupted)


async def _candidates_and_body(
    scope: Scope, receive: Receive, services: Services, headers: RequestHeaders
) -> tuple[list[Candidate], bytes | AsyncIterator[bytes] | None, BodyStream | None, str | None]:
    """Choose the upstreams, reading the body only when it is JSON that may name a model."""
    router = services.router
    path: str = scope["path"]
    limit = services.config.server.max_body_bytes
    if scope["method"] in ("GET", "HEAD", "DELETE") and not headers.content_length:
        model = path[len(_MODEL_PATH) :] if path.startswith(_MODEL_PATH) else None
        return router.candidates(model), None, None, None
    content_type = headers.content_type or b""
    if content_type.startswith(b"application/json") and headers.content_encoding is None:
        raw = await read_body(receive, limit, headers.content_length)
        scope[CONTEXT_KEY].request_bytes = len(raw)
        model = _model_in(raw)
        return router.candidates(model), raw, None, model
    if headers.content_length is not None and headers.content_length > limit:
        await read_body(receive, limit, headers.content_length)  # raises the 413
    stream = BodyStream(receive, limit)
    return router.default_candidates(), stream.chunks(), stream, None


def _with_model(
    data: bytes | AsyncIterator[bytes] | None, candidate: Candidate
) -> bytes | AsyncIterator[bytes] | None:
    """The body for ``candidate``: a JSON body names the model as that upstream knows it."""
    if not isinstance(data, bytes) or candidate.model is None:
        return data
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
    if not isinstance(parsed, dict) or parsed.get("model") in (None, candidate.model):
        return data
    parsed["model"] = candidate.model
    return orjson.dumps(parsed)


def _model_in(raw: bytes) -> str | None:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None  # not ours to judge: the upstream answers malformed bodies itself
    model = parsed.get("model") if isinstance(parsed, dict) else None
    return model if isinstance(model, str) and model else None
