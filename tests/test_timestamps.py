"""The per-second cache of UTC timestamp text gives exactly what ``datetime`` would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sentinel.timestamps import iso_utc, utc_second
from sentinel.usage.records import format_started_at

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INSTANTS_NS = (
    0,
    1_796_000_000_000_000_000,
    1_796_000_000_000_000_999,  # less than a microsecond: truncated, shown as none
    1_796_000_000_123_456_789,
    1_796_000_000_999_999_999,
    1_796_000_001_000_001_000,
    1_767_225_599_999_999_000,  # the last microsecond of 2025
    1_767_225_600_000_000_000,
    1_700_000_000_500_000_000,  # after a later second: the cache is not one-way
    1_700_000_000_600_000_000,  # the same second again, from the cache
)


def test_iso_utc_is_the_stamp_structlog_writes() -> None:
    """The log line's stamp is datetime's ISO text with Z, microseconds truncated and left out
    when zero, across second, day and year boundaries and back in time."""
    for ns in _INSTANTS_NS:
        expected = _EPOCH + timedelta(microseconds=ns // 1000)
        assert iso_utc(ns) == expected.isoformat().replace("+00:00", "Z")


def test_utc_second_and_started_at_agree_with_datetime() -> None:
    """The cached second's text and a usage record's started_at are datetime's, whatever
    second was asked for before."""
    for ns in _INSTANTS_NS:
        second = ns // 1_000_000_000
        expected = _EPOCH + timedelta(seconds=second)
        assert utc_second(second) == expected.strftime("%Y-%m-%dT%H:%M:%S")
        epoch_s = ns / 1e9
        millis = _EPOCH + timedelta(milliseconds=int(epoch_s * 1000))
        assert format_started_at(epoch_s) == millis.isoformat(timespec="milliseconds")[:-6] + "Z"
