"""A request's admission by its key's limits, as both proxies do it."""

from __future__ import annotations

from sentinel.auth.keys import Principal
from sentinel.http.context import RequestContext
from sentinel.limits.decision import Reservation
from sentinel.limits.gate import Gate
from sentinel.limits.headers import rate_limit_header_pairs

__all__ = ["admit"]


async def admit(
    ctx: RequestContext, gate: Gate, principal: Principal, tokens: int
) -> Reservation | None:
    """Admit the request or raise its 429; the reservation to settle (None for a key with no
    limits, which never touches the store). Every response then carries the rate-limit
    headers, and ``x-sentinel-degraded`` when the local share decided."""
    if not principal.is_limited:
        return None
    decision = await gate.admit(principal.name, principal.limits, ctx.request_id, tokens)
    ctx.degraded = decision.degraded
    ctx.response_headers = rate_limit_header_pairs(decision)
    return decision.reservation
