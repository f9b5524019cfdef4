"""The circuit breaker: one pure state machine, the same contract under every user's policy."""

from __future__ import annotations

from typing import Any

import pytest

from sentinel.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from sentinel.config import RoutingConfig
from sentinel.limits import REDIS_BREAKER
from sentinel.upstream.board import breaker_settings
from sentinel.usage.sinks.webhook import WEBHOOK_BREAKER

POLICIES = {
    "redis": REDIS_BREAKER,
    "upstream": breaker_settings(RoutingConfig()),
    "webhook": WEBHOOK_BREAKER,
}
RATIO = BreakerPolicy(
    failures=3, cooldown_ms=1_000, failure_ratio=0.5, min_requests=10, window_ms=10_000
)
TWO_KEYS = BreakerPolicy(failures=2, cooldown_ms=1_000, window_ms=10_000, min_sources=2)


@pytest.fixture(params=sorted(POLICIES))
def policy(request: pytest.FixtureRequest) -> BreakerPolicy:
    """Each user's own policy in turn: the contract holds under all of them."""
    return POLICIES[request.param]


def tripped(policy: BreakerPolicy, at_ms: int = 0) -> CircuitBreaker:
    """A breaker opened by ``policy.failures`` failures in a row at ``at_ms``."""
    breaker = CircuitBreaker(policy)
    for _ in range(policy.failures):
        breaker.record_failure(at_ms)
    return breaker


# --- the contract, under every policy ------------------------------------------------------


def test_starts_closed(policy: BreakerPolicy) -> None:
    """A new breaker lets calls through, with nothing to wait for."""
    breaker = CircuitBreaker(policy)
    assert breaker.is_closed and breaker.try_acquire(0) and breaker.retry_in_ms(0) == 0


def test_consecutive_failures_open_it(policy: BreakerPolicy) -> None:
    """``failures`` failures in a row open it for ``cooldown_ms``; one fewer does not."""
    breaker = CircuitBreaker(policy)
    for _ in range(policy.failures - 1):
        breaker.record_failure(0)
    assert breaker.is_closed
    breaker.record_failure(0)
    assert breaker.state is BreakerState.OPEN and breaker.opened == 1
    assert not breaker.is_available(1) and not breaker.try_acquire(1)
    assert breaker.retry_in_ms(1) == policy.cooldown_ms - 1


def test_exactly_one_caller_gets_the_probe(policy: BreakerPolicy) -> None:
    """Once the cooldown has passed one caller becomes the probe; the others keep waiting."""
    breaker = tripped(policy)
    assert not breaker.try_acquire(policy.cooldown_ms - 1)
    assert breaker.is_available(policy.cooldown_ms)  # asking claims nothing
    assert breaker.try_acquire(policy.cooldown_ms)
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.try_acquire(policy.cooldown_ms)


def test_a_successful_probe_closes(policy: BreakerPolicy) -> None:
    """The probe's success closes the breaker and calls flow again."""
    breaker = tripped(policy)
    assert breaker.try_acquire(policy.cooldown_ms)
    breaker.record_success(policy.cooldown_ms + 1)
    assert breaker.is_closed and breaker.try_acquire(policy.cooldown_ms + 2)


def test_a_failed_probe_reopens_from_its_own_time(policy: BreakerPolicy) -> None:
    """A probe's failure opens the breaker for a full cooldown again, and counts as a trip."""
    breaker = tripped(policy)
    assert breaker.try_acquire(policy.cooldown_ms)
    failed_at = policy.cooldown_ms + 50
    breaker.record_failure(failed_at)
    assert breaker.state is BreakerState.OPEN and breaker.opened == 2
    assert not breaker.try_acquire(failed_at + policy.cooldown_ms - 1)
    assert breaker.try_acquire(failed_at + policy.cooldown_ms)


def test_a_lost_probe_goes_stale(policy: BreakerPolicy) -> None:
    """A probe that never reports back lets another caller probe one cooldown later."""
    breaker = tripped(policy)
    assert breaker.try_acquire(policy.cooldown_ms)
    assert breaker.try_acquire(2 * policy.cooldown_ms)


def test_failures_while_open_are_not_new_trips(policy: BreakerPolicy) -> None:
    """Late failures of calls started before it opened neither count as trips nor extend it."""
    breaker = tripped(policy)
    breaker.record_failure(10)
    assert breaker.opened == 1 and breaker.probe_due_ms == policy.cooldown_ms


def test_an_ordinary_success_never_closes_an_open_breaker(policy: BreakerPolicy) -> None:
    """Only a success while half open closes: an open breaker waits for its probe."""
    breaker = tripped(policy)
    breaker.record_success(1)
    assert breaker.state is BreakerState.OPEN


def test_closing_forgets_the_failures_that_opened_it(policy: BreakerPolicy) -> None:
    """After a successful probe it takes a full run of failures to open it again."""
    breaker = tripped(policy)
    assert breaker.try_acquire(policy.cooldown_ms)
    breaker.record_success(policy.cooldown_ms)
    assert breaker.window(policy.cooldown_ms) == (1, 0)
    for t in range(1, policy.failures):
        breaker.record_failure(policy.cooldown_ms + t)
    assert breaker.is_closed


# --- open_until: an open decided elsewhere (another replica, a long Retry-After) -----------


def test_open_until_holds_a_closed_breaker_open_without_counting_a_trip() -> None:
    """Another replica's open holds this breaker open until then; the probe comes after."""
    breaker = CircuitBreaker(RATIO)
    assert breaker.open_until(5_000, 100)
    assert breaker.state is BreakerState.OPEN and breaker.opened == 0
    assert not breaker.try_acquire(4_999) and breaker.retry_in_ms(4_000) == 1_000
    assert breaker.try_acquire(5_000) and not breaker.try_acquire(5_000)  # one probe
    breaker.record_success(5_001)
    assert breaker.is_closed


def test_open_until_never_shortens_an_open() -> None:
    """A later reopen time wins; an earlier or past one changes nothing."""
    breaker = tripped(RATIO, at_ms=2)
    assert breaker.probe_due_ms == 1_002
    assert not breaker.open_until(900, 10)
    assert not breaker.open_until(5, 10)
    assert breaker.probe_due_ms == 1_002
    assert breaker.open_until(2_000, 10) and breaker.probe_due_ms == 2_000


def test_open_until_leaves_a_live_probe_alone() -> None:
    """A probe in flight decides for itself; a stale one no longer holds the breaker."""
    breaker = tripped(RATIO, at_ms=2)
    assert breaker.try_acquire(1_002)  # the probe, stale at 2_002
    assert not breaker.open_until(3_000, 1_500)
    assert breaker.probe_due_ms == 2_002
    assert breaker.open_until(3_000, 2_002)
    assert breaker.state is BreakerState.OPEN and not breaker.is_available(2_999)


def test_open_until_in_the_past_changes_nothing() -> None:
    """A reopen time already reached leaves a closed breaker closed."""
    breaker = CircuitBreaker(RATIO)
    assert not breaker.open_until(100, 100)
    assert breaker.is_closed


# --- the failure ratio over the rolling window ----------------------------------------------


def test_a_success_resets_the_consecutive_count() -> None:
    """Failures must be consecutive to open it by count."""
    breaker = CircuitBreaker(RATIO)
    for t, failed in enumerate([True, True, False, True, True]):
        (breaker.record_failure if failed else breaker.record_success)(t)
    assert breaker.is_closed and breaker.consecutive_failures == 2


def test_the_failure_ratio_opens_it_once_min_requests_were_seen() -> None:
    """Half the calls failing over the window opens it, from ``min_requests`` calls on."""
    breaker = CircuitBreaker(RATIO)
    for i in range(9):
        (breaker.record_failure if i % 2 else breaker.record_success)(i * 10)
    assert breaker.is_closed  # 9 calls: under min_requests
    breaker.record_failure(100)  # 10 calls, 5 failures
    assert breaker.state is BreakerState.OPEN


def test_old_outcomes_leave_the_window() -> None:
    """Failures older than the window no longer count towards the ratio."""
    breaker = CircuitBreaker(RATIO)
    for i in range(4):
        breaker.record_failure(i * 100)
        breaker.record_success(i * 100 + 1)
    later = 20_000
    for i in range(9):
        breaker.record_success(later + i)
    breaker.record_failure(later + 10)
    assert breaker.window(later + 10) == (10, 1)
    for t in range(4):  # 4 of 14 fail now; with the old ones it would be 8 of 22
        breaker.record_success(later + 20 + t)
    assert breaker.is_closed


def test_without_a_ratio_only_consecutive_failures_open_it() -> None:
    """A policy with no failure_ratio ignores the window's share of failures."""
    policy = BreakerPolicy(failures=3, min_requests=2)
    breaker = CircuitBreaker(policy)
    for t in range(10):
        (breaker.record_failure if t % 3 else breaker.record_success)(t)
    assert breaker.is_closed and breaker.window(10) == (10, 6)


# --- sources: no single one can open it -----------------------------------------------------


def test_failures_of_one_source_alone_never_count() -> None:
    """With min_sources = 2, any number of one source's failures leaves it as it was."""
    breaker = CircuitBreaker(TWO_KEYS)
    assert not any(breaker.record_failure(t, "key-a") for t in range(50))
    assert breaker.is_closed and breaker.consecutive_failures == 0
    assert breaker.window(50) == (0, 0)


def test_failures_of_two_sources_within_the_window_count() -> None:
    """Once a second source failed within the window, both sources' failures count."""
    breaker = CircuitBreaker(TWO_KEYS)
    breaker.record_failure(0, "key-a")
    assert breaker.record_failure(100, "key-b")
    assert breaker.record_failure(200, "key-a")
    assert breaker.state is BreakerState.OPEN


def test_a_second_source_outside_the_window_does_not_count() -> None:
    """Two sources count together only when both failed within ``window_ms``."""
    breaker = CircuitBreaker(TWO_KEYS)
    breaker.record_failure(0, "key-a")
    assert not breaker.record_failure(10_000, "key-b")
    assert breaker.record_failure(10_001, "key-a")  # key-b's failure is recent now


def test_failures_without_a_source_always_count() -> None:
    """A failure that names no source (the upstream is down for everyone) counts at once."""
    breaker = CircuitBreaker(TWO_KEYS)
    assert breaker.record_failure(0) and breaker.record_failure(1)
    assert breaker.state is BreakerState.OPEN


# --- policies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"failures": 0},
        {"cooldown_ms": -1},
        {"window_ms": 0},
        {"min_requests": 0},
        {"min_sources": 0},
        {"failure_ratio": 0.0},
        {"failure_ratio": 1.5},
    ],
)
def test_a_policy_that_cannot_work_is_refused(fields: dict[str, Any]) -> None:
    """Thresholds below one, negative times and ratios outside (0, 1] are a ValueError."""
    with pytest.raises(ValueError, match="must be"):
        BreakerPolicy(**fields)


def test_each_user_keeps_its_own_policy() -> None:
    """Redis opens on the first failure and probes each second; upstreams take [routing] and
    need two keys; the webhook sink opens after five failed attempts."""
    assert (REDIS_BREAKER.failures, REDIS_BREAKER.cooldown_ms) == (1, 1_000)
    routing = RoutingConfig()
    upstream = POLICIES["upstream"]
    assert upstream.failures == routing.breaker_failures
    assert upstream.failure_ratio == routing.breaker_failure_ratio
    assert upstream.window_ms == routing.breaker_window_s * 1000
    assert upstream.cooldown_ms == routing.breaker_cooldown_ms and upstream.min_sources == 2
    assert (WEBHOOK_BREAKER.failures, WEBHOOK_BREAKER.cooldown_ms) == (5, 30_000)
