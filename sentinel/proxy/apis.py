"""The four APIs Sentinel reads: chat, completions, embeddings and responses.

Each request is authenticated, its body read (within the size limit), parsed once, checked
(including the key's model allow-list), its prompt counted, routed by model to its
candidates (all breakers open: 503 before anything is reserved), admitted by the key's limits
(prompt tokens plus the completion cap are reserved once for the whole request) and sent
upstream through ``Failover``, which tries the next candidate until one answers. The
reservation is settled once, with the usage of the attempt that answered, on every way out.
Streams go through a ``StreamAccumulator``; when the client did not ask for stream usage,
Sentinel asks for it and hides the extra chunk. Every request ends with its usage settled:
the provider's numbers, or an estimate from the prompt and the completion text seen.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from sentinel.auth.keys import presented_key
from sentinel.deadline import Deadline
from sentinel.errors import SentinelError
from sentinel.http.asgi import Receive, Scope, Send
from sentinel.http.body import parse_json_object, read_body
from sentinel.http.context import CONTEXT_KEY, RequestContext
from sentinel.http.headers import (
    RequestHeaders,
    relay_headers,
    scan_request_headers,
)
from sentinel.http.validation import Api, ApiRequest, validate
from sentinel.proxy.admission import admit
from sentinel.services import Services, services_of
from sentinel.streaming.accumulator import StreamAccumulator, StreamApi
from sentinel.streaming.relay import relay
from sentinel.tokens import ModelCounter
from sentinel.upstream.client import upstream_errors
from sentinel.upstream.routing import Candidate
from sentinel.usage.counts import Usage
from sentinel.usage.estimate import completion_text, settle_usage

__all__ = ["ApiEndpoint"]

_USAGE_INJECTED: frozenset[Api] = frozenset({"chat", "completions"})
_STREAM_APIS: dict[Api, StreamApi] = {
    "chat": "chat",
    "completions": "completions",
    "responses": "responses",
}


@dataclass(slots=True)
class _Outcome:
    """What the upstream produced: its usage if it said, and the completion text seen."""

    usage: Usage | None = None
    text: str = ""
    produced: bool = False


class ApiEndpoint:
    """ASGI endpoint for one of the four read APIs (POST only)."""

    def __init__(self, api: Api, route: str) -> None:
        self.api = api
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope[CONTEXT_KEY]
        ctx.route = self.route
        services = services_of(scope)
        headers = scan_request_headers(scope["headers"])
        principal = services.keys.authenticate(
            presented_key(headers.authorization, headers.api_key)
        )
        ctx.key = principal.name
        ctx.on_finish = services.record_usage
        raw = await read_body(
            receive, services.config.server.max_body_bytes, headers.content_length
        )
        ctx.request_bytes = len(raw)
        request = validate(self.api, parse_json_object(raw, headers.content_encoding))
        ctx.model, ctx.stream = request.model, request.stream
        principal.check_model(request.model)
        counter = services.tokens.for_model(request.model)
        ctx.prompt_estimate = await counter.count_prompt(self.api, request.body, size_hint=len(raw))
        # Open breakers answer 503 here, before anything is reserved.
        candidates = services.failover.usable(services.router.candidates(request.model or None))
        ctx.upstream = candidates[0].name
        completion = request.body if self.api != "embeddings" else None  # embeddings: none
        tokens = services.gate.tokens_to_reserve(ctx.prompt_estimate, completion)
        reservation = await admit(ctx, services.gate, principal, tokens)
        outcome = _Outcome()
        try:
            with services.gate.holding(reservation):
                await self._forward(
                    scope, receive, send, services, candidates, headers, request, raw, outcome
                )
        finally:
            await _settle(ctx, services, counter, outcome)
            if reservation is not None:
                usage = ctx.usage
                await services.gate.settle(
                    reservation,
                    usage.total_tokens if usage is not None else 0,
                    produced=usage is not None,
                )

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        services: Services,
        candidates: list[Candidate],
        headers: RequestHeaders,
        request: ApiRequest,
        raw: bytes,
        outcome: _Outcome,
    ) -> None:
        ctx: RequestContext = scope[CONTEXT_KEY]
        payload, strip = self._payload(request, raw)
        forward = headers.forward
        forward["accept-encoding"] = "identity"
        forward["x-request-id"] = ctx.request_id
        forward.setdefault("content-type", "application/json")

        def body(candidate: Candidate) -> bytes:
            if candidate.model is None or candidate.model == request.model:
                return payload
            # An alias names the model differently on this upstream.
            return orjson.dumps({**request.body, "model": candidate.model})

        served = await services.failover.open(
            services.session,
            ctx,
            candidates,
            method="POST",
            path=scope["path"],
            query=scope["query_string"],
            headers=forward,
            body=body,
            replayable=True,
        )
        target, response = served.candidate.target, served.response
        deadline = asyncio.get_running_loop().time() + target.total_s
        interrupted = False
        try:
            stream_api = _STREAM_APIS.get(self.api) if request.stream else None
            if stream_api is not None and response.content_type == "text/event-stream":
                tap = StreamAccumulator(stream_api, strip_usage_chunk=strip)
                drainer = services.drainer
                try:
                    await relay(
                        response,
                        ctx,
                        send,
                        receive,
                        tap=tap,
                        keep_length=False,
                        after_disconnect=(
                            (lambda: drainer.drain(response, tap)) if drainer is not None else None
                        ),
                    )
                finally:
                    outcome.usage = tap.usage
                    # The text is only counted when the provider sent no usage; reading it
                    # decodes every chunk the accumulator has kept as bytes.
                    outcome.text = tap.text if outcome.usage is None else ""
                    outcome.produced = tap.has_events
            else:
                await _send_whole(response, ctx, send, target.name, deadline, outcome)
        except SentinelError:
            interrupted = True  # the upstream failed after it answered: too late to fail over
            raise
        finally:
            response.close()
            served.finish(interrupted=interrupted)

    def _payload(self, request: ApiRequest, raw: bytes) -> tuple[bytes, bool]:
        """The bytes to send upstream, and whether a usage chunk must be hidden from the client."""
        if not request.stream or self.api not in _USAGE_INJECTED or request.include_usage:
            return raw, False  # forwarded exactly as the client sent it
        body = request.body
        options = body.get("stream_options")
        body["stream_options"] = {**(options or {}), "include_usage": True}
        return orjson.dumps(body), True


async def _send_whole(
    response: aiohttp.ClientResponse,
    ctx: RequestContext,
    send: Send,
    upstream: str,
    deadline: float,
    outcome: _Outcome,
) -> None:
    """Read a (small) JSON reply whole within the call's deadline, note its usage, send it."""
    with upstream_errors(upstream, started=True), Deadline(deadline):
        body = await response.read()
    headers, ctx.dropped_headers = relay_headers(response.raw_headers, keep_length=False)
    headers.append((b"content-length", str(len(body)).encode("ascii")))
    if response.status < 300:
        parsed = _parse(body)
        usage = parsed.get("usage") if isinstance(parsed, dict) else None
        outcome.usage = Usage.from_openai(usage)
        outcome.produced = True
        if outcome.usage is None:
            outcome.text = completion_text(parsed)
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _parse(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


async def _settle(
    ctx: RequestContext, services: Services, counter: ModelCounter, outcome: _Outcome
) -> None:
    """Decide the request's usage: provider's if given, else estimated if anything was produced."""
    if outcome.usage is None and not outcome.produced:
        return  # the upstream produced nothing: no tokens were spent
    ctx.usage, ctx.usage_source = await settle_usage(
        outcome.usage, ctx.prompt_estimate or 0, outcome.text, counter
    )
    if outcome.usage is not None and ctx.prompt_estimate is not None and ctx.model:
        services.drift.observe(ctx.model, ctx.prompt_estimate, outcome.usage.prompt_tokens)
