"""The four APIs Sentinel reads: chat, completions, embeddings and responses.

Each goes through the shared sequence (``sentinel.proxy.exchange``); what is theirs: the body
is read (within the size limit), parsed once (a repeated key is a 400), checked (fields, the
key's model allow-list, the objects it names belong to the key), routed by model, and its
prompt counted; the reservation is the prompt plus the API's own completion cap times its
choices. Streams go through a ``StreamAccumulator``; when the client did not ask for stream
usage, Sentinel asks for it and hides the extra chunk. A JSON reply is read whole, and the
object the provider stored for it (a response, a stored chat completion) is claimed for the
key before the client sees its id.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from sentinel.deadline import deadline_at
from sentinel.errors import ContentBlocked
from sentinel.guardrails import GuardedStream, screen_json_reply, screen_request_body
from sentinel.http.asgi import Receive, Scope, Send
from sentinel.http.body import parse_json_object, read_body
from sentinel.http.validation import RESERVED, Api, ApiRequest, validate
from sentinel.money.budgets import inject_cap
from sentinel.proxy.exchange import (
    Exchange,
    Plan,
    parse_reply,
    relay_reply,
    run_exchange,
    send_whole,
)
from sentinel.proxy.ownership import check_references, claim_created, claim_streamed
from sentinel.proxy.pricing import priced_tier
from sentinel.streaming.accumulator import StreamAccumulator, StreamApi
from sentinel.tenancy import ObjectKind
from sentinel.upstream.client import upstream_errors
from sentinel.upstream.failover import Served
from sentinel.upstream.routing import Candidate
from sentinel.usage.counts import Usage
from sentinel.usage.estimate import completion_text

__all__ = ["ApiEndpoint"]

_USAGE_INJECTED: frozenset[Api] = frozenset({"chat", "completions"})
_STREAM_APIS: dict[Api, StreamApi] = {
    "chat": "chat",
    "completions": "completions",
    "responses": "responses",
}


class ApiEndpoint:
    """ASGI endpoint for one of the four read APIs (POST only), through ``run_exchange``."""

    def __init__(self, api: Api, route: str) -> None:
        self.api = api
        self.route = route
        self._reserved = RESERVED[api]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await run_exchange(self, scope, receive, send)

    async def prepare(self, exchange: Exchange) -> Plan:
        """Read, parse and check the body, count its prompt, and plan the reservation."""
        ctx, services, headers = exchange.ctx, exchange.services, exchange.headers
        raw = await read_body(
            exchange.receive,
            services.config.server.max_body_bytes,
            headers.content_length,
            exchange.body_deadline,
            encoding=headers.content_encoding,
        )
        ctx.request_bytes = len(raw)
        request = validate(self.api, parse_json_object(raw, None))  # inflated if it was gzip
        ctx.model, ctx.stream = request.model, request.stream
        principal = exchange.principal
        principal.check_model(request.model)
        if request.body.get("background") is True:
            principal.check_spending("background")  # its tokens are spent after the answer
            if services.budgeting is not None:
                services.budgeting.check_spending(principal, "background")
        await check_references(exchange, raw, request.body)
        candidates = services.router.candidates(request.model or None)
        counter = services.tokens.for_model(request.model)
        rules = services.guardrails
        policy = rules.policy(principal.name, principal.team, request.model) if rules else None
        if policy is not None:  # redacted before it is counted and sent; blocked before either
            if policy.reads_requests:
                encoding = counter.content.encoding
                raw = await screen_request_body(
                    policy, self.api, request.body, raw, ctx.rule_hits, encoding
                )
            exchange.screen = policy.response
        ctx.prompt_estimate = await counter.count_prompt(self.api, request.body, size_hint=len(raw))
        caps, choices = self._reserved
        tokens = services.gate.tokens_to_reserve(ctx.prompt_estimate, request.body, caps, choices)
        money = services.budgeting
        capped = (  # the hold must bound the reply
            money is not None
            and money.is_metered(principal)
            and inject_cap(request.body, caps, services.config.limits.default_completion_reserve)
        )
        payload, strip = self._payload(request, raw, changed=capped)
        exchange.strip_usage = strip
        forward = headers.forward
        forward["accept-encoding"] = "identity"
        forward.pop("content-encoding", None)  # the body goes as read: inflated
        forward.setdefault("content-type", "application/json")

        def body(candidate: Candidate) -> bytes:
            if candidate.model is None or candidate.model == request.model:
                return payload
            # An alias names the model differently on this upstream.
            return orjson.dumps({**request.body, "model": candidate.model})

        exchange.stored = _stored_kind(self.api, request.body)
        return Plan(
            candidates,
            forward,
            body,
            tokens=tokens,
            counter=counter,
            service_tier=priced_tier(request.body),
        )

    async def deliver(self, exchange: Exchange, served: Served) -> None:
        """Relay a stream through the accumulator, or read a JSON reply whole, noting usage."""
        ctx, outcome, services = exchange.ctx, exchange.outcome, exchange.services
        response, target = served.response, served.candidate.target
        stream_api = _STREAM_APIS.get(self.api) if ctx.stream else None
        if stream_api is not None and response.content_type == "text/event-stream":
            tap = StreamAccumulator(stream_api, strip_usage_chunk=exchange.strip_usage)
            drainer = services.drainer
            stored = exchange.stored
            screen = exchange.screen
            guarded = GuardedStream(tap, stream_api, screen, ctx.rule_hits) if screen else None
            try:
                await relay_reply(
                    exchange,
                    served,
                    tap=tap if guarded is None else guarded,
                    keep_length=False,
                    after_disconnect=(
                        (lambda: drainer.drain(response, tap)) if drainer is not None else None
                    ),
                    before_start=(
                        (lambda chunk: claim_streamed(exchange, stored, chunk))
                        if stored is not None and response.status < 300
                        else None
                    ),
                )
            except ContentBlocked:
                ctx.outcome = "content_blocked"  # not the upstream's interruption
                raise
            finally:
                outcome.usage = tap.usage
                # The text is only counted when the provider sent no usage; reading it
                # decodes every chunk the accumulator has kept as bytes.
                outcome.text = tap.text if outcome.usage is None else ""
                outcome.produced = tap.has_events
            return
        await _send_whole(exchange, response, target.name, exchange.reply_deadline(target))

    def _payload(self, request: ApiRequest, raw: bytes, *, changed: bool) -> tuple[bytes, bool]:
        """The bytes to send upstream, and whether a usage chunk must be hidden from the client.
        ``changed``: the body was changed (a completion cap added), so ``raw`` is stale; it is
        serialized once, with whatever else is added (0.2 µs: cheaper than splicing bytes)."""
        if not request.stream or self.api not in _USAGE_INJECTED or request.include_usage:
            # Forwarded exactly as the client sent it, unless a cap was added.
            return (orjson.dumps(request.body) if changed else raw), False
        body = request.body
        options = body.get("stream_options")
        body["stream_options"] = {**(options or {}), "include_usage": True}
        return orjson.dumps(body), True


def _stored_kind(api: Api, body: dict[str, Any]) -> ObjectKind | None:
    """The kind of object the provider keeps for this request, owned by its key: Responses
    are stored unless ``store`` is false; chat completions only with ``store: true``."""
    if api == "responses":
        return None if body.get("store") is False else "response"
    if api == "chat":
        return "chat_completion" if body.get("store") is True else None
    return None


async def _send_whole(
    exchange: Exchange, response: aiohttp.ClientResponse, upstream: str, deadline: float
) -> None:
    """Read a (small) JSON reply whole within the call's deadline, note its usage and the
    object it stored for this key, send it."""
    outcome = exchange.outcome
    with upstream_errors(upstream, started=True), deadline_at(deadline):
        body = await response.read()
    if response.status < 300:
        parsed = parse_reply(body)
        usage = parsed.get("usage") if isinstance(parsed, dict) else None
        outcome.usage = Usage.from_openai(usage)
        outcome.produced = True
        if outcome.usage is None:
            outcome.text = completion_text(parsed)
        if exchange.screen is not None:  # a block answers 400 content_blocked instead
            body = screen_json_reply(exchange.screen, parsed, body, exchange.ctx.rule_hits)
        if exchange.stored is not None:
            await claim_created(exchange, exchange.stored, parsed, body)
    await send_whole(exchange, response, body)
