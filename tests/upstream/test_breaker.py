"""The upstream circuit breaker as a pure state machine on an injected clock."""

from __future__ import annotations

from sentinel.upstream.breaker import BreakerSettings, BreakerState, CircuitBreaker

SETTINGS = BreakerSettings(
    failures=3, failure_ratio=0.5, window_ms=10_000, min_requests=10, cooldown_ms=1_000
)


def test_opens_after_consecutive_failures() -> None:
    """N consecutive failures open the breaker; a success in between resets the count."""
    breaker = CircuitBreaker(SETTINGS)
    breaker.record_failure(0)
    breaker.record_failure(1)
    breaker.record_success(2)
    breaker.record_failure(3)
    breaker.record_failure(4)
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure(5)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.is_available(6) and not breaker.try_acquire(6)
    assert breaker.retry_in_ms(6) == 999


def test_opens_on_failure_ratio_over_the_window() -> None:
    """Half the calls failing over the window opens it once min_requests calls were seen."""
    breaker = CircuitBreaker(SETTINGS)
    for i in range(9):
        (breaker.record_failure if i % 2 else breaker.record_success)(i * 10)
    assert breaker.state is BreakerState.CLOSED  # 9 calls: under min_requests
    breaker.record_failure(100)  # 10 calls, 5 failures
    assert breaker.state is BreakerState.OPEN


def test_old_outcomes_leave_the_window() -> None:
    """Failures older than the window do not count towards the ratio."""
    breaker = CircuitBreaker(SETTINGS)
    for i in range(4):
        breaker.record_failure(i * 100)
        breaker.record_success(i * 100 + 1)
    later = 20_000
    for i in range(9):
        breaker.record_success(later + i)
    breaker.record_failure(later + 10)
    assert breaker.window(later + 10) == (10, 1)
    assert breaker.state is BreakerState.CLOSED
    for t in range(4):  # 4 of 14 fail now; with the old ones it would be 8 of 22
        breaker.record_success(later + 20 + t)
    assert breaker.state is BreakerState.CLOSED


def test_half_open_lets_exactly_one_probe_through() -> None:
    """After the cooldown one caller gets the probe; others wait until it reports back."""
    breaker = CircuitBreaker(SETTINGS)
    for t in range(3):
        breaker.record_failure(t)
    assert not breaker.try_acquire(1_001)
    assert breaker.is_available(1_002)
    assert breaker.try_acquire(1_002)
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.try_acquire(1_003)
    breaker.record_success(1_050)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.try_acquire(1_051)


def test_failed_probe_reopens_for_another_cooldown() -> None:
    """A probe's failure opens the breaker again, counting from the failure."""
    breaker = CircuitBreaker(SETTINGS)
    for t in range(3):
        breaker.record_failure(t)
    assert breaker.try_acquire(2_000)
    breaker.record_failure(2_100)
    assert breaker.state is BreakerState.OPEN
    assert breaker.opened == 2
    assert not breaker.try_acquire(3_000)
    assert breaker.try_acquire(3_100)


def test_lost_probe_goes_stale() -> None:
    """A probe that never reports back lets another caller probe after one more cooldown."""
    breaker = CircuitBreaker(SETTINGS)
    for t in range(3):
        breaker.record_failure(t)
    assert breaker.try_acquire(1_500)
    assert not breaker.try_acquire(2_000)
    assert breaker.try_acquire(2_500)


def test_closing_forgets_the_failures_that_opened_it() -> None:
    """After a successful probe, one more failure does not reopen the breaker at once."""
    breaker = CircuitBreaker(SETTINGS)
    for t in range(3):
        breaker.record_failure(t)
    breaker.try_acquire(1_100)
    breaker.record_success(1_100)
    breaker.record_failure(1_200)
    assert breaker.state is BreakerState.CLOSED


def test_open_until_keeps_a_closed_breaker_open_without_counting_a_trip() -> None:
    """Another replica's open holds a closed breaker open until then; the probe comes after."""
    breaker = CircuitBreaker(SETTINGS)
    assert breaker.open_until(5_000, 100)
    assert breaker.state is BreakerState.OPEN and breaker.opened == 0
    assert not breaker.try_acquire(4_999) and breaker.retry_in_ms(4_000) == 1_000
    assert breaker.try_acquire(5_000) and breaker.state is BreakerState.HALF_OPEN
    breaker.record_success(5_001)
    assert breaker.state is BreakerState.CLOSED


def test_open_until_never_shortens_an_open() -> None:
    """A later local reopen time wins; an earlier or past one changes nothing."""
    breaker = CircuitBreaker(SETTINGS)
    for t in range(3):
        breaker.record_failure(t)
    assert breaker.probe_due_ms == 1_002
    assert not breaker.open_until(900, 10)
    assert not breaker.open_until(5, 10)
    assert breaker.probe_due_ms == 1_002
    assert breaker.open_until(2_000, 10) and breaker.probe_due_ms == 2_000


def test_open_until_leaves_a_live_probe_alone() -> None:
    """A probe in flight decides for itself; a stale one no longer holds the breaker."""
    breaker = CircuitBreaker(SETTINGS)
    for t in range(3):
        breaker.record_failure(t)
    assert breaker.try_acquire(1_002)  # the probe, stale at 2_002
    assert not breaker.open_until(3_000, 1_500)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.open_until(3_000, 2_002)
    assert breaker.state is BreakerState.OPEN and not breaker.is_available(2_999)


def test_open_until_in_the_past_changes_nothing() -> None:
    """A reopen time already reached leaves a closed breaker closed."""
    breaker = CircuitBreaker(SETTINGS)
    assert not breaker.open_until(100, 100)
    assert breaker.state is BreakerState.CLOSED
