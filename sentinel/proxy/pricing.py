"""A request's price, looked up once it is routed, and its exact cost, once its usage is settled.

The price is that of the model as the chosen upstream knows it (an alias's target), on that
upstream, at the ``service_tier`` the request asked for (``auto`` and ``default`` are the
standard tier). A key with a dollar budget never spends on a model without a price: it is
refused with 402 ``price_unknown`` before anything is reserved or sent. A request that names no
model (a pass-through such as ``GET /v1/batches/{id}``) is not priced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sentinel.errors import PaymentRequired
from sentinel.money.prices import Price, cost_nano, cost_of, format_cost
from sentinel.usage.counts import Usage

if TYPE_CHECKING:
    from sentinel.proxy.exchange import Exchange
    from sentinel.upstream.routing import Candidate

__all__ = ["price_request", "priced_tier", "record_cost", "served_price"]

_STANDARD_TIERS = frozenset({"auto", "default"})
_NOTHING = Usage(0, 0, 0)


def priced_tier(body: dict[str, object]) -> str | None:
    """The ``service_tier`` a request body asks for, as the price book names it: None for the
    standard tier (absent, ``auto``, ``default`` or not a short string)."""
    tier = body.get("service_tier")
    if not isinstance(tier, str) or tier in _STANDARD_TIERS or len(tier) > 32:
        return None
    return tier


def price_request(exchange: Exchange, candidate: Candidate, tier: str | None) -> Price | None:
    """The price of sending the request to ``candidate``; 402 ``price_unknown`` when there is
    none and the key has a dollar budget. Sets the request's cost to 0 (or null, unpriced)
    until its usage is known."""
    ctx = exchange.ctx
    model = candidate.model or ctx.model
    if not model:
        return None
    price = exchange.services.prices.price_of(model, candidate.name, tier)
    if price is None and exchange.principal.budgets.any:
        raise PaymentRequired(
            f"The model '{model[:100]}' has no price on this gateway, and this key's spending "
            "is limited in dollars. Ask the gateway's operator to add a [prices] entry for it.",
            code="price_unknown",
            param="model",
        )
    ctx.cost_usd, ctx.cost_nano = (None, 0) if price is None else ("0", 0)
    return price


def served_price(exchange: Exchange, candidate: Candidate, tier: str | None) -> Price | None:
    """The price on the upstream that answered (after failover); the price admitted with when
    that upstream has none of its own."""
    model = candidate.model or exchange.ctx.model
    if not model:
        return exchange.price
    return exchange.services.prices.price_of(model, candidate.name, tier) or exchange.price


def record_cost(exchange: Exchange) -> None:
    """The request's exact cost from its settled usage, on the context for the record, the
    log line and the metric (unpriced: ``cost_usd`` stays None)."""
    price, ctx = exchange.price, exchange.ctx
    if price is None:
        return
    usage = ctx.usage or _NOTHING
    ctx.cost_usd = format_cost(cost_of(price, usage))
    ctx.cost_nano = cost_nano(price, usage)
