"""The circuit breaker state machine, driven by a hand-moved clock."""

from __future__ import annotations

import pytest

from sentinel.usage.sinks.breaker import BreakerState, CircuitBreaker


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, reset_after_s=10.0, clock=clock)


def test_opens_after_threshold_consecutive_failures(breaker: CircuitBreaker) -> None:
    """Failures below the threshold keep it closed; reaching it opens the circuit."""
    for _ in range(2):
        breaker.record_failure()
        assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()


def test_success_resets_the_failure_count(breaker: CircuitBreaker) -> None:
    """Failures must be consecutive to open the circuit."""
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_half_open_allows_a_single_probe(breaker: CircuitBreaker, clock: Clock) -> None:
    """After the reset time exactly one probe goes out; its success closes the circuit."""
    for _ in range(3):
        breaker.record_failure()
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow()
    breaker.record_success()
    assert breaker.state.value == "closed"
    assert breaker.allow()


def test_failed_probe_reopens_for_a_full_period(breaker: CircuitBreaker, clock: Clock) -> None:
    """A failing probe opens the circuit again, counted from the probe's failure."""
    for _ in range(3):
        breaker.record_failure()
    clock.now += 10
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now += 9
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_trip_holds_open_for_at_least_the_given_time(breaker: CircuitBreaker, clock: Clock) -> None:
    """trip() opens the circuit for a Retry-After and never shortens a longer opening."""
    breaker.trip(60)
    breaker.trip(5)
    clock.now += 59
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_invalid_settings_are_refused(clock: Clock) -> None:
    """A threshold below one is a ValueError."""
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0, clock=clock)
