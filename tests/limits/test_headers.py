"""Decisions rendered as OpenAI's rate-limit headers and 429 errors."""

from __future__ import annotations

import pytest

from sentinel.config.budgets import format_usd
from sentinel.limits import (
    Decision,
    Dimension,
    RateWindow,
    Refusal,
    duration,
    rate_limit_headers,
    refusal_error,
)
from sentinel.limits.decision import Budget


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (20, "20ms"),
        (1_000, "1s"),
        (1_500, "1.5s"),
        (61_000, "1m1s"),
        (360_000, "6m0s"),
        (3_723_450, "1h2m3.45s"),
    ],
)
def test_duration_is_written_like_openai(ms: int, text: str) -> None:
    """Resets use Go's duration format, as OpenAI's headers do."""
    assert duration(ms) == text


def refused(dimension: Dimension, *, exceeds: bool = False, degraded: bool = False) -> Decision:
    """A refusal on ``dimension`` with a request window at its limit."""
    return Decision(
        reservation=None,
        refusal=Refusal(dimension, 100, 1_250, exceeds),
        requests=RateWindow(100, 0, 59_000),
        tokens=None,
        degraded=degraded,
    )


def test_allowed_decision_carries_the_window_headers() -> None:
    """A success reports limit, remaining and reset for every configured window."""
    decision = Decision(None, None, RateWindow(60, 59, 61_000), RateWindow(1000, 600, 500))
    assert rate_limit_headers(decision) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1m1s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "600",
        "x-ratelimit-reset-tokens": "500ms",
    }


def test_rate_refusal_says_when_to_retry() -> None:
    """A rate refusal adds retry-after in whole seconds, rounded up, and in milliseconds."""
    headers = rate_limit_headers(refused(Dimension.REQUESTS))
    assert headers["retry-after"] == "2"
    assert headers["retry-after-ms"] == "1250"
    assert "x-should-retry" not in headers


def test_quota_refusal_says_not_to_retry() -> None:
    """An exhausted quota is insufficient_quota with x-should-retry: false."""
    decision = refused(Dimension.DAY)
    assert rate_limit_headers(decision)["x-should-retry"] == "false"
    error = refusal_error(decision, 10)
    assert (error.status, error.code) == (429, "insufficient_quota")
    assert "tokens per day" in error.message


def test_oversized_request_gets_no_retry_after() -> None:
    """A request that can never fit carries no retry-after."""
    headers = rate_limit_headers(refused(Dimension.TOKENS, exceeds=True))
    assert "retry-after" not in headers and headers["x-should-retry"] == "false"


def test_rate_refusal_error_is_rate_limit_exceeded() -> None:
    """A window refusal is a 429 rate_limit_exceeded with every header attached."""
    error = refusal_error(refused(Dimension.TOKENS), 500)
    assert error.code == "rate_limit_exceeded"
    assert error.headers["retry-after-ms"] == "1250"
    assert error.message == (
        "Rate limit reached: 100 tokens per minute (TPM). Please try again in 1.25s."
    )


def test_degraded_decision_is_marked() -> None:
    """A decision of the local fallback carries x-sentinel-degraded: limits."""
    headers = rate_limit_headers(refused(Dimension.REQUESTS, degraded=True))
    assert headers["x-sentinel-degraded"] == "limits"


def test_refusal_error_needs_a_refusal() -> None:
    """Asking for the error of an admitted decision is a programming error."""
    with pytest.raises(ValueError, match="admitted"):
        refusal_error(Decision(None, None, None, None), 1)


@pytest.mark.parametrize(
    ("remaining", "reset_ms", "usd", "reset"),
    [
        (1_500_000_000, 3_600_000, "1.5", "1h0m0s"),
        (1_500_000_000, 3_600_001, "1.5", "1h0m1s"),  # rounded up: never earlier than it is
        (10_000_000_000, 1, "10", "1s"),
        (0, 0, "0", "0s"),
        (1, 86_399_999, "0.000000001", "24h0m0s"),
        (-500_000_000, None, "-0.5", "never"),  # overspent (a charge past its hold)
    ],
)
def test_budget_headers_are_exact_dollars_and_whole_seconds(
    remaining: int, reset_ms: int | None, usd: str, reset: str
) -> None:
    """The budget headers: the nano-USD left as the shortest exact decimal, and when the
    window renews in whole seconds rounded up (``never`` for a window that does not)."""
    budget = Budget(remaining, reset_ms, (Dimension.USD_DAY,), (remaining,))
    headers = rate_limit_headers(Decision(None, None, None, None, budget=budget))
    assert headers == {
        "x-sentinel-budget-remaining-usd": usd,
        "x-sentinel-budget-reset": reset,
    }
    assert usd == format_usd(remaining)
