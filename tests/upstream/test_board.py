"""An upstream's breakers count failures so that no single key can open them."""

from __future__ import annotations

from sentinel.breaker import BreakerState
from sentinel.config import RoutingConfig
from sentinel.upstream.board import UpstreamHealth, breaker_settings

POLICY = breaker_settings(RoutingConfig(breaker_failures=2, breaker_cooldown_ms=1_000))


def test_one_keys_failures_open_neither_breaker() -> None:
    """However often one key's requests fail, the upstream and the model stay usable."""
    health = UpstreamHealth("u", POLICY)
    for t in range(20):
        health.record_failure("gpt-4o", t, source="cfg:team-a")
    assert health.breaker.state is BreakerState.CLOSED
    assert health.model_breaker("gpt-4o").state is BreakerState.CLOSED
    assert health.is_available("gpt-4o", 20)


def test_two_keys_failures_open_both_breakers() -> None:
    """Failures of two keys within the window open the upstream's and the model's breaker."""
    health = UpstreamHealth("u", POLICY)
    for t, key in enumerate(["cfg:team-a", "cfg:team-b", "cfg:team-a"]):
        health.record_failure("gpt-4o", t, source=key)
    assert health.breaker.state is BreakerState.OPEN
    assert health.model_breaker("gpt-4o").state is BreakerState.OPEN


def test_failures_without_a_key_count_at_once() -> None:
    """Failures no request body can cause (connection errors, timeouts) need no second key."""
    health = UpstreamHealth("u", POLICY)
    health.record_failure(None, 0)
    health.record_failure(None, 1)
    assert health.breaker.state is BreakerState.OPEN


def test_a_failure_that_is_not_upstream_wide_counts_on_the_model_only() -> None:
    """A pass-through failure reaches the model's breaker, never the upstream's."""
    health = UpstreamHealth("u", POLICY)
    for t in range(2):
        health.record_failure("tts-1", t, upstream_wide=False)
    assert health.model_breaker("tts-1").state is BreakerState.OPEN
    assert health.breaker.state is BreakerState.CLOSED and health.breaker.window(2) == (0, 0)
