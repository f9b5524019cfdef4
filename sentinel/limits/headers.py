"""A decision as OpenAI's rate-limit headers, and a refusal as OpenAI's 429.

``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` go on every response whose key has
that limit, successes included; resets use OpenAI's duration format (``"1s"``, ``"6m0s"``,
``"120ms"``). A refusal adds ``retry-after`` (whole seconds, rounded up) and
``retry-after-ms``; a quota refusal, or a request larger than a limit, is OpenAI's
``insufficient_quota`` with ``x-should-retry: false``. A degraded decision adds
``x-sentinel-degraded: limits``.
"""

from __future__ import annotations

from sentinel.errors import RateLimited
from sentinel.limits.decision import Decision, Refusal
from sentinel.limits.spec import Dimension

__all__ = [
    "DEGRADED_HEADER",
    "duration",
    "rate_limit_header_pairs",
    "rate_limit_headers",
    "refusal_error",
]

_KINDS = ("limit", "remaining", "reset")
DEGRADED_HEADER = "x-sentinel-degraded"
_REQUEST_NAMES = tuple(f"x-ratelimit-{kind}-requests".encode() for kind in _KINDS)
_TOKEN_NAMES = tuple(f"x-ratelimit-{kind}-tokens".encode() for kind in _KINDS)

_RATES = {
    Dimension.REQUESTS: "requests per minute (RPM)",
    Dimension.TOKENS: "tokens per minute (TPM)",
    Dimension.PARALLEL: "concurrent requests",
    Dimension.DAY: "tokens per day",
    Dimension.WEEK: "tokens per week",
    Dimension.MONTH: "tokens per month",
}


def duration(ms: int) -> str:
    """``ms`` the way OpenAI (Go's ``time.Duration``) writes it: ``1h2m3.5s``, ``250ms``, ``0s``."""
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    text = f"{seconds}.{millis:03d}".rstrip("0").rstrip(".") + "s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return text


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    """Every header ``decision`` puts on the response, whether it was allowed or not."""
    return {name.decode(): value.decode() for name, value in rate_limit_header_pairs(decision)}


def rate_limit_header_pairs(decision: Decision) -> list[tuple[bytes, bytes]]:
    """``rate_limit_headers`` as ASGI header pairs, built as bytes: this runs for every
    request of a limited key."""
    pairs: list[tuple[bytes, bytes]] = []
    for (limit, remaining, reset), window in (
        (_REQUEST_NAMES, decision.requests),
        (_TOKEN_NAMES, decision.tokens),
    ):
        if window is not None:
            pairs.append((limit, b"%d" % window.limit))
            pairs.append((remaining, b"%d" % window.remaining))
            pairs.append((reset, duration(window.reset_ms).encode("ascii")))
    refusal = decision.refusal
    if refusal is not None:
        if refusal.is_quota:
            pairs.append((b"x-should-retry", b"false"))
        if not refusal.exceeds_limit:
            pairs.append((b"retry-after", b"%d" % -(-refusal.retry_after_ms // 1000)))
            pairs.append((b"retry-after-ms", b"%d" % refusal.retry_after_ms))
    if decision.degraded:
        pairs.append((DEGRADED_HEADER.encode("ascii"), b"limits"))
    return pairs


def refusal_error(decision: Decision, requested_tokens: int) -> RateLimited:
    """The 429 for a refused ``decision``, with every header and OpenAI's code."""
    refusal = decision.refusal
    if refusal is None:
        raise ValueError("the decision admitted the request")
    return RateLimited(
        _message(refusal, requested_tokens),
        code=refusal.code,
        headers=rate_limit_headers(decision),
        dimension=str(refusal.dimension),
        degraded=decision.degraded,
    )


def _message(refusal: Refusal, requested_tokens: int) -> str:
    rate = _RATES[refusal.dimension]
    counted = "tokens" if refusal.dimension not in (Dimension.REQUESTS, Dimension.PARALLEL) else ""
    if refusal.exceeds_limit:
        need = f"{requested_tokens} tokens" if counted else "1 request"
        return (
            f"Request too large: it needs {need}, and this key's limit is {refusal.limit} {rate}."
        )
    wait = duration(refusal.retry_after_ms)
    if refusal.dimension.is_quota:
        return f"You exceeded this key's quota of {refusal.limit} {rate}. It renews in {wait}."
    return f"Rate limit reached: {refusal.limit} {rate}. Please try again in {wait}."
