"""Calendar periods of the quotas, in the spec's time zone, computed without floats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.limits import Dimension, current_period
from sentinel.limits.periods import Calendar


def at(text: str, zone: str = "UTC") -> int:
    """Epoch milliseconds of a local wall-clock time."""
    moment = datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def test_day_is_named_by_its_local_date_and_ends_at_local_midnight() -> None:
    """At 23:30 in Tokyo the day is the Tokyo date and ends at Tokyo midnight."""
    period = current_period(Dimension.DAY, at("2024-03-09T23:30:00", "Asia/Tokyo"), "Asia/Tokyo")
    assert period.name == "day:2024-03-09"
    assert period.end_ms == at("2024-03-10T00:00:00", "Asia/Tokyo")


def test_day_of_a_dst_change_is_23_hours_long() -> None:
    """The spring-forward day in New York ends 23 hours after it began."""
    start = at("2024-03-10T00:00:00", "America/New_York")
    period = current_period(Dimension.DAY, start, "America/New_York")
    assert period.end_ms - start == 23 * 3_600_000


def test_week_is_the_iso_week_ending_monday_midnight() -> None:
    """A Sunday belongs to the ISO week that started the Monday before."""
    period = current_period(Dimension.WEEK, at("2024-03-10T12:00:00"), "UTC")
    assert period.name == "week:2024-W10"
    assert period.end_ms == at("2024-03-11T00:00:00")


def test_iso_week_year_differs_from_the_calendar_year() -> None:
    """30 December 2024 is in ISO week 1 of 2025."""
    period = current_period(Dimension.WEEK, at("2024-12-30T08:00:00"), "UTC")
    assert period.name == "week:2025-W01"


def test_december_rolls_into_january() -> None:
    """The December period ends on 1 January of the next year."""
    period = current_period(
        Dimension.MONTH, at("2024-12-31T23:59:59", "Europe/Berlin"), "Europe/Berlin"
    )
    assert period.name == "month:2024-12"
    assert period.end_ms == at("2025-01-01T00:00:00", "Europe/Berlin")


def test_midnight_that_does_not_exist_ends_at_the_first_instant_of_the_new_day() -> None:
    """Santiago skips 00:00 on 8 Sep 2024; the day before ends at 01:00 local on the 8th."""
    zone = "America/Santiago"
    period = current_period(Dimension.DAY, at("2024-09-07T12:00:00", zone), zone)
    end = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=period.end_ms)
    assert end.astimezone(ZoneInfo(zone)).isoformat() == "2024-09-08T01:00:00-03:00"
    before = current_period(Dimension.DAY, period.end_ms - 1, zone)
    assert before.name == "day:2024-09-07"
    assert current_period(Dimension.DAY, period.end_ms, zone).name == "day:2024-09-08"


def test_rates_are_not_calendar_periods() -> None:
    """Asking for the period of a rate dimension is a programming error."""
    with pytest.raises(ValueError, match="not a calendar quota"):
        current_period(Dimension.REQUESTS, 0, "UTC")


@settings(max_examples=200, deadline=None)
@given(
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/Santiago", "Australia/Lord_Howe"]),
    steps=st.lists(st.integers(-40 * 86_400_000, 40 * 86_400_000), min_size=1, max_size=30),
)
def test_calendar_memory_never_changes_the_answer(zone: str, steps: list[int]) -> None:
    """The cached calendar gives exactly what computing each period afresh gives."""
    calendar, now = Calendar(), at("2024-03-30T12:00:00")
    for step in steps:
        now += step
        for dimension in (Dimension.DAY, Dimension.WEEK, Dimension.MONTH):
            assert calendar.period(dimension, now, zone) == current_period(dimension, now, zone)
