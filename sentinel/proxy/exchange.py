"""The one request sequence every proxy endpoint shares.

    authenticate      the key, or one 401 for any bad key
    refuse early      a key its request rate refused stays refused, before any body is read
    prepare           the endpoint reads and judges the request (size, JSON, duplicate keys,
                      fields, model allow-list, endpoint policy, object ownership, prompt count)
    route             candidates whose breakers let calls through; 503 before any reservation
    price             the model's price on the first candidate (``sentinel.proxy.pricing``);
                      402 ``price_unknown`` for a key with a dollar budget and no price
    admit             one reservation: the request, its prompt and its completion cap; with
                      an external credits ledger, then a hold there (``sentinel.money.ledger``)
    fail over         candidates in turn until one answers (``Failover.open``)
    deliver           the endpoint relays the answer and notes the usage it reports
    settle            the reservation, once, with the usage of the attempt that answered,
                      priced exactly (``ctx.cost_usd``) at the answering upstream's price;
                      a ledger hold is captured for that cost, or released
    record            the usage record, when the response has ended (``ctx.on_finish``)

An endpoint supplies ``prepare`` and ``deliver``; everything else happens here, in this order,
on every way out.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson

from sentinel.auth.keys import Principal, presented_key
from sentinel.container import Services, services_of
from sentinel.deadline import LooseDeadline
from sentinel.errors import ContentBlocked, SentinelError, UpstreamTimeout
from sentinel.guardrails import Screen
from sentinel.http.asgi import Receive, Scope, Send
from sentinel.http.body import BodyStream
from sentinel.http.context import CONTEXT_KEY, RequestContext
from sentinel.http.headers import RequestHeaders, relay_headers, scan_request_headers
from sentinel.limits.decision import Reservation
from sentinel.limits.headers import rate_limit_header_pairs
from sentinel.money.ledger import CreditsRefused, ExternalLedger, LedgerHold, balance_headers
from sentinel.money.prices import Price
from sentinel.proxy.pricing import price_request, record_cost, served_price
from sentinel.streaming.relay import StreamTap, relay
from sentinel.tenancy import ObjectKind, ObjectRef
from sentinel.tokens import ModelCounter
from sentinel.upstream.failover import Served
from sentinel.upstream.routing import Candidate, UpstreamTarget
from sentinel.usage.counts import Usage
from sentinel.usage.estimate import settle_usage

__all__ = [
    "Endpoint",
    "Exchange",
    "Outcome",
    "Plan",
    "parse_reply",
    "relay_reply",
    "run_exchange",
    "send_whole",
]

Body = bytes | AsyncIterator[bytes] | None


@dataclass(slots=True)
class Outcome:
    """What the upstream produced: its usage if it said, the completion text seen, and whether
    it produced anything that counts as a request served."""

    usage: Usage | None = None
    text: str = ""
    produced: bool = False


@dataclass(slots=True)
class Plan:
    """What ``prepare`` decided: where the request may go, what to send and what to reserve."""

    candidates: list[Candidate]
    headers: dict[str, str]
    body: Callable[[Candidate], Body]
    tokens: int = 0
    replayable: bool = True
    upload: BodyStream | None = None  # a body streamed as it arrives (sent once)
    service_tier: str | None = None  # the tier the request is priced at (None: standard)
    counter: ModelCounter | None = None  # estimates the usage the upstream did not report


@dataclass(slots=True)
class Exchange:
    """One request on its way through the sequence."""

    scope: Scope
    receive: Receive
    send: Send
    ctx: RequestContext
    services: Services
    headers: RequestHeaders
    principal: Principal
    outcome: Outcome = field(default_factory=Outcome)
    strip_usage: bool = False  # the stream's usage chunk was asked for by Sentinel: hide it
    stored: ObjectKind | None = None  # what the provider keeps from this call, for the key
    claim: ObjectKind | None = None  # the kind of object a successful reply shows, claimed
    release: ObjectRef | None = None  # the object a successful DELETE removes
    meter: bool = False  # a token-spending pass-through: its JSON reply's usage is charged
    screen: Screen | None = None  # the response rules that screen the reply (sentinel.guardrails)
    price: Price | None = None  # of the model on the chosen upstream; None: unpriced
    credit_hold: LedgerHold | None = None  # held at the external ledger, settled once

    @property
    def body_deadline(self) -> float:
        """When the request body must have arrived (``loop.time()`` seconds): the request's
        start plus ``[server] body_timeout_ms``."""
        return self._after_start(self.services.config.server.body_timeout_ms / 1000)

    def reply_deadline(self, target: UpstreamTarget) -> float:
        """When the upstream's whole reply must have been relayed (``loop.time()`` seconds):
        the request's start plus the upstream's ``timeout_ms``, streams included."""
        return self._after_start(target.total_s)

    def _after_start(self, seconds: float) -> float:
        """``seconds`` after the request's start, on the loop's clock."""
        elapsed_s = (time.perf_counter_ns() - self.ctx.started_ns) / 1e9
        return asyncio.get_running_loop().time() + seconds - elapsed_s


class Endpoint(Protocol):
    """A proxy endpoint: the two steps of the sequence that differ between endpoints."""

    route: str

    async def prepare(self, exchange: Exchange) -> Plan | None:
        """Read and judge the request; None when it was answered without an upstream."""
        ...

    async def deliver(self, exchange: Exchange, served: Served) -> None:
        """Send the upstream's answer to the client, noting in ``exchange.outcome`` what it
        produced."""
        ...


async def run_exchange(endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one request through ``endpoint`` (see the module docstring)."""
    ctx: RequestContext = scope[CONTEXT_KEY]
    ctx.route = endpoint.route
    services = services_of(scope)
    headers = scan_request_headers(scope["headers"])
    principal = await services.auth.authenticate(
        presented_key(headers.authorization, headers.api_key)
    )
    ctx.key, ctx.key_id, ctx.team = principal.name, principal.id, principal.team
    ctx.on_finish = services.record_usage
    if principal.is_limited:
        services.gate.refuse_early(principal.id)
    exchange = Exchange(scope, receive, send, ctx, services, headers, principal)
    plan = await endpoint.prepare(exchange)
    if plan is None:
        return
    candidates = services.failover.usable(plan.candidates)
    ctx.upstream = candidates[0].name
    exchange.price = price_request(exchange, candidates[0], plan.service_tier)  # 402 unpriced
    reservation = await _admit(exchange, plan, candidates)
    try:
        with services.gate.holding(reservation):
            served = await _open(exchange, plan, candidates)
            exchange.price = served_price(exchange, served.candidate, plan.service_tier)
            interrupted = False
            try:
                await endpoint.deliver(exchange, served)
            except ContentBlocked:
                raise  # a rule of Sentinel's own stopped the reply: no fault of the upstream
            except SentinelError:
                interrupted = True  # the upstream failed after it answered: too late to retry
                raise
            finally:
                served.finish(interrupted=interrupted)
    finally:
        await _settle(exchange, plan, reservation)


async def _admit(exchange: Exchange, plan: Plan, candidates: list[Candidate]) -> Reservation | None:
    """Admit the request or raise its 429 (402 for money); the reservation to settle (None
    for a key with no limits and no money, which never touches the store). Every response
    then carries the rate-limit (and budget) headers, and ``x-sentinel-degraded`` when the
    local share decided."""
    principal, ctx, services = exchange.principal, exchange.ctx, exchange.services
    budgeting = services.budgeting
    spec = principal.limits if budgeting is None else budgeting.spec_of(principal)
    money = spec is not principal.limits  # spec_of adds money to a copy only
    ledger = budgeting.ledger if budgeting is not None else None
    if not principal.is_limited and not money and ledger is None:
        return None
    nano_usd = 0
    if budgeting is not None and (money or ledger is not None):  # prompt + completion cap
        prompt = ctx.prompt_estimate or 0
        nano_usd = budgeting.hold(
            services.prices,
            candidates,
            ctx.model,
            plan.service_tier,
            prompt,
            plan.tokens - prompt,
            first=exchange.price,
        )
    account = ledger.account_of(principal) if ledger is not None and nano_usd else None
    reservation = None
    if principal.is_limited or money:
        decision = await services.gate.admit(
            principal.id, spec, ctx.request_id, plan.tokens, nano_usd
        )
        ctx.degraded = decision.degraded
        ctx.response_headers = rate_limit_header_pairs(decision)
        reservation = decision.reservation
    if ledger is not None and account is not None:
        exchange.credit_hold = await _hold_credits(exchange, ledger, account, nano_usd, reservation)
    return reservation


async def _hold_credits(
    exchange: Exchange,
    ledger: ExternalLedger,
    account: str,
    nano_usd: int,
    reservation: Reservation | None,
) -> LedgerHold:
    """Hold at the external ledger, under the reservation's id (its idempotency key); a
    refusal (402) or an unreachable ledger (503) gives the reservation back first."""
    ctx = exchange.ctx
    hold_id = reservation.reservation_id if reservation is not None else secrets.token_hex(12)
    try:
        hold = await ledger.hold(account, nano_usd, hold_id, ctx.request_id)
    except BaseException as error:
        if isinstance(error, CreditsRefused) and error.balance is not None:
            ctx.response_headers = balance_headers(ctx.response_headers, error.balance)
        if reservation is not None:
            await exchange.services.gate.settle(reservation, 0, produced=False)
        raise
    ctx.response_headers = balance_headers(ctx.response_headers, hold.balance)
    return hold


async def _open(exchange: Exchange, plan: Plan, candidates: list[Candidate]) -> Served:
    """Fail over until an upstream answers; an upload that stopped early says why itself."""
    ctx, services, scope = exchange.ctx, exchange.services, exchange.scope
    plan.headers["x-request-id"] = ctx.request_id
    try:
        served = await services.failover.open(
            services.session,
            ctx,
            candidates,
            method=scope["method"],
            path=scope["path"],
            query=scope["query_string"],
            headers=plan.headers,
            body=plan.body,
            replayable=plan.replayable and plan.upload is None,
            key=exchange.principal.id,
            passthrough=exchange.ctx.route == "/v1/*",
        )
    except SentinelError:
        failure = plan.upload.failure() if plan.upload is not None else None
        if failure is not None:
            raise failure from None
        raise
    if plan.upload is not None:
        ctx.request_bytes = plan.upload.size
    return served


async def _settle(exchange: Exchange, plan: Plan, reservation: Reservation | None) -> None:
    """Decide the request's usage (the provider's, else an estimate when anything was
    produced and the endpoint can count), then settle the reservation with it."""
    ctx, outcome, services = exchange.ctx, exchange.outcome, exchange.services
    counter = plan.counter
    if counter is not None and (outcome.usage is not None or outcome.produced):
        ctx.usage, ctx.usage_source = await settle_usage(
            outcome.usage, ctx.prompt_estimate or 0, outcome.text, counter
        )
        if outcome.usage is not None and ctx.prompt_estimate is not None and ctx.model:
            services.drift.observe(ctx.model, ctx.prompt_estimate, outcome.usage.prompt_tokens)
    elif outcome.usage is not None:
        ctx.usage, ctx.usage_source = outcome.usage, "provider"
    record_cost(exchange)
    budgeting = services.budgeting
    if exchange.credit_hold is not None and budgeting is not None and budgeting.ledger is not None:
        budgeting.ledger.settle(exchange.credit_hold, ctx.cost_nano, ctx.request_id)
    if reservation is not None:
        usage = ctx.usage
        await services.gate.settle(
            reservation,
            usage.total_tokens if usage is not None else 0,
            produced=usage is not None or outcome.produced,
            nano_usd=ctx.cost_nano,
        )


def parse_reply(body: bytes) -> Any:
    """An upstream's JSON reply, or None when it is not JSON (never raises)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


async def send_whole(exchange: Exchange, response: aiohttp.ClientResponse, body: bytes) -> None:
    """Send an upstream reply that was read whole, with its relayable headers."""
    headers, exchange.ctx.dropped_headers = relay_headers(response.raw_headers, keep_length=False)
    headers.append((b"content-length", str(len(body)).encode("ascii")))
    await exchange.send(
        {"type": "http.response.start", "status": response.status, "headers": headers}
    )
    await exchange.send({"type": "http.response.body", "body": body, "more_body": False})


async def relay_reply(
    exchange: Exchange,
    served: Served,
    *,
    tap: StreamTap | None,
    keep_length: bool,
    after_disconnect: Callable[[], Awaitable[object]] | None = None,
    before_start: Callable[[bytes], Awaitable[object]] | None = None,
) -> None:
    """Relay the upstream's reply as it arrives, within the request's deadline (``timeout_ms``,
    streams included: a stream still running then ends with an in-band error event) and the
    client's ``write_timeout_ms``."""
    target = served.candidate.target
    try:
        with LooseDeadline(exchange.reply_deadline(target)):
            await relay(
                served.response,
                exchange.ctx,
                exchange.send,
                exchange.receive,
                tap=tap,
                keep_length=keep_length,
                after_disconnect=after_disconnect,
                before_start=before_start,
                write_timeout_s=exchange.services.config.server.write_timeout_ms / 1000,
            )
    except TimeoutError:
        raise UpstreamTimeout(
            "The upstream provider did not finish its reply within the request's time limit.",
            upstream=target.name,
        ) from None
