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
from sentinel.limits.decision import Decision, RateWindow, Refusal
from sentinel.limits.spec import Dimension

__all__ = ["DEGRADED_HEADER", "duration", "rate_limit_headers", "refusal_error"]

DEGRADED_HEADER = "x-sentinel-degraded"

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
    headers: dict[str, str] = {}
    for name, window in (("requests", decision.requests), ("tokens", decision.tokens)):
        if window is not None:
            headers.update(_window_headers(name, window))
    refusal = decision.refusal
    if refusal is not None:
        if refusal.is_quota:
            headers["x-should-retry"] = "false"
        if not refusal.exceeds_limit:
            headers["retry-after"] = str(-(-refusal.retry_after_ms // 1000))
            headers["retry-after-ms"] = str(refusal.retry_after_ms)
    if decision.degraded:
        headers[DEGRADED_HEADER] = "limits"
    return headers


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


def _window_headers(name: str, window: RateWindow) -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{name}": str(window.limit),
        f"x-ratelimit-remaining-{name}": str(window.remaining),
        f"x-ratelimit-reset-{name}": duration(window.reset_ms),
    }


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
