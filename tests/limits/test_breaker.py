"""The breaker: a pure state machine on an injected clock."""

from __future__ import annotations

import pytest

from sentinel.limits import Breaker, BreakerState


def test_starts_closed() -> None:
    """A new breaker lets calls through and offers no probe."""
    breaker = Breaker(1_000)
    assert breaker.is_closed and not breaker.try_probe(0)


def test_failure_opens_until_the_delay_has_passed() -> None:
    """After a failure no probe is offered for reopen_ms."""
    breaker = Breaker(1_000)
    breaker.record_failure(5_000)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.try_probe(5_999)
    assert breaker.retry_in_ms(5_400) == 600


def test_exactly_one_caller_gets_the_probe() -> None:
    """Once due, the probe goes to one caller; the others keep waiting."""
    breaker = Breaker(1_000)
    breaker.record_failure(0)
    assert breaker.try_probe(1_000)
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.try_probe(1_000)
    assert not breaker.try_probe(1_999)


def test_a_probe_that_never_reports_goes_stale() -> None:
    """A probe lost to cancellation is offered again after another reopen_ms."""
    breaker = Breaker(1_000)
    breaker.record_failure(0)
    assert breaker.try_probe(1_000)
    assert breaker.try_probe(2_000)


def test_successful_probe_closes() -> None:
    """A probe that got through closes the breaker."""
    breaker = Breaker(1_000)
    breaker.record_failure(0)
    assert breaker.try_probe(1_000)
    breaker.probe_succeeded()
    assert breaker.is_closed and breaker.retry_in_ms(1_000) == 0


def test_failed_probe_reopens_from_its_own_time() -> None:
    """A failed probe waits a full reopen_ms again."""
    breaker = Breaker(1_000)
    breaker.record_failure(0)
    assert breaker.try_probe(1_000)
    breaker.record_failure(1_050)
    assert not breaker.try_probe(2_049)
    assert breaker.try_probe(2_050)


def test_counts_each_opening_once() -> None:
    """Failures while already open do not count as new openings."""
    breaker = Breaker(1_000)
    breaker.record_failure(0)
    breaker.record_failure(10)
    assert breaker.opened == 1


def test_rejects_a_zero_delay() -> None:
    """A breaker that would probe on every call is a configuration error."""
    with pytest.raises(ValueError, match="reopen_ms"):
        Breaker(0)
