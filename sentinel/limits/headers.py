"""A decision as OpenAI's rate-limit headers, and a refusal as OpenAI's 429.

``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` go on every response whose key has
that limit, successes included; resets use OpenAI's duration format (``"1s"``, ``"6m0s"``,
``"120ms"``). A refusal adds ``retry-after`` (whole seconds, rounded up) and
``retry-after-ms``; a quota refusal, or a request larger than a limit, is OpenAI's
``insufficient_quota`` with ``x-should-retry: false``. A degraded decision adds
``x-sentinel-degraded: limits``.

A key with money (dollar budgets, its team's, or prepaid credits) also gets
``x-sentinel-budget-remaining-usd`` (the nano-USD left on its tightest money dimension after
this request's hold, as an exact decimal) and ``x-sentinel-budget-reset`` (when that dimension
renews, in the same duration format in whole seconds rounded up, as a window hours or days
away needs: its text then changes once a second, and is made once a second; ``never`` for
``usd_total`` and credits). A refusal on
money is the 402 ``PaymentRequired``: ``budget_exceeded`` or ``insufficient_credits``.
"""

from __future__ import annotations

from functools import lru_cache

from sentinel.config.budgets import NANO, format_usd
from sentinel.errors import PaymentRequired, RateLimited
from sentinel.limits.decision import Decision, Refusal
from sentinel.limits.spec import Dimension

__all__ = [
    "BUDGET_REMAINING_HEADER",
    "BUDGET_RESET_HEADER",
    "DEGRADED_HEADER",
    "duration",
    "rate_limit_header_pairs",
    "rate_limit_headers",
    "refusal_error",
]

_KINDS = ("limit", "remaining", "reset")
DEGRADED_HEADER = "x-sentinel-degraded"
BUDGET_REMAINING_HEADER = "x-sentinel-budget-remaining-usd"
BUDGET_RESET_HEADER = "x-sentinel-budget-reset"
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
_MONEY = {
    Dimension.USD_DAY: "this key's daily budget",
    Dimension.USD_WEEK: "this key's weekly budget",
    Dimension.USD_MONTH: "this key's monthly budget",
    Dimension.USD_TOTAL: "this key's total budget",
    Dimension.TEAM_USD_DAY: "its team's daily budget",
    Dimension.TEAM_USD_WEEK: "its team's weekly budget",
    Dimension.TEAM_USD_MONTH: "its team's monthly budget",
    Dimension.TEAM_USD_TOTAL: "its team's total budget",
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
            pairs.append((reset, _duration_text(window.reset_ms)))
    refusal = decision.refusal
    if refusal is not None:
        if refusal.is_quota:
            pairs.append((b"x-should-retry", b"false"))
        if not refusal.exceeds_limit:
            pairs.append((b"retry-after", b"%d" % -(-refusal.retry_after_ms // 1000)))
            pairs.append((b"retry-after-ms", b"%d" % refusal.retry_after_ms))
    if decision.degraded:
        pairs.append((DEGRADED_HEADER.encode("ascii"), b"limits"))
    budget = decision.budget
    if budget is not None:
        # format_usd as bytes, inline: every response of a key with money carries it
        left = budget.remaining
        usd = b"%d.%09d" % divmod(left, NANO) if left >= 0 else format_usd(left).encode("ascii")
        pairs.append((_REMAINING, usd.rstrip(b"0").rstrip(b".")))
        ms = budget.reset_ms
        pairs.append((_RESET, b"never" if ms is None else _duration_text(-(-ms // 1000) * 1000)))
    return pairs


def _budget_reset(ms: int) -> str:
    """When a money dimension renews, ``ms`` from now, as ``x-sentinel-budget-reset`` has it:
    OpenAI's duration format, in whole seconds rounded up."""
    return _duration_text(-(-ms // 1000) * 1000).decode("ascii")


@lru_cache(maxsize=4096)
def _duration_text(ms: int) -> bytes:
    """``duration(ms)`` as header bytes, remembered. A busy window's reset is when its newest
    bucket expires: it falls a millisecond at a time and jumps back a bucket at each new one,
    so the same values come round every bucket; a budget's changes once a second. Nearly
    every response finds its text made."""
    return duration(ms).encode("ascii")


_REMAINING = BUDGET_REMAINING_HEADER.encode("ascii")
_RESET = BUDGET_RESET_HEADER.encode("ascii")


def refusal_error(
    decision: Decision, requested_tokens: int, nano_usd: int = 0
) -> RateLimited | PaymentRequired:
    """The 429 for a refused ``decision``, with every header and OpenAI's code; the 402 when
    money refused it."""
    refusal = decision.refusal
    if refusal is None:
        raise ValueError("the decision admitted the request")
    if refusal.dimension.is_money:
        return _payment_error(decision, refusal, nano_usd)
    return RateLimited(
        _message(refusal, requested_tokens),
        code=refusal.code,
        headers=rate_limit_headers(decision),
        dimension=str(refusal.dimension),
        degraded=decision.degraded,
    )


def _payment_error(decision: Decision, refusal: Refusal, nano_usd: int) -> PaymentRequired:
    headers = rate_limit_headers(decision)
    headers.pop("retry-after", None)  # money is not a rate: the SDKs must not retry it
    headers.pop("retry-after-ms", None)
    headers["x-should-retry"] = "false"
    budget = decision.budget
    left = dict(budget.left) if budget is not None else {}
    remaining = left.get(refusal.dimension, 0)
    if decision.budget is not None:  # the headers name the dimension that refused
        headers[BUDGET_REMAINING_HEADER] = format_usd(remaining)
        headers[BUDGET_RESET_HEADER] = (
            "never" if refusal.exceeds_limit else _budget_reset(refusal.retry_after_ms)
        )
    need = format_usd(nano_usd)
    if refusal.dimension is Dimension.CREDITS:
        return PaymentRequired(
            f"This key's prepaid credits cannot cover this request: it holds up to ${need} "
            f"and ${format_usd(remaining)} is available. Ask an administrator to add credits.",
            code="insufficient_credits",
            headers=headers,
            dimension=str(refusal.dimension),
            degraded=decision.degraded,
        )
    renews = (
        "It does not renew."
        if refusal.exceeds_limit
        else f"It renews in {duration(refusal.retry_after_ms)}."
    )
    return PaymentRequired(
        f"This request would exceed {_MONEY[refusal.dimension]} of "
        f"${format_usd(refusal.limit)}: it holds up to ${need} and ${format_usd(remaining)} "
        f"is left. {renews}",
        code="budget_exceeded",
        headers=headers,
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
