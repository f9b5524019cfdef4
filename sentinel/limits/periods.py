"""Calendar periods of the token quotas: which day, ISO week or month an instant falls in.

Period names and ends are computed here, in Python with ``zoneinfo``, and handed to the Lua
scripts as arguments: Lua never does calendar arithmetic. All instants are integer
milliseconds since the Unix epoch; no float timestamp is ever taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sentinel.limits.spec import Dimension

__all__ = ["Calendar", "Period", "current_period"]

_MAX_REMEMBERED = 10_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Period:
    """One calendar period of one quota.

    ``name`` is the counter's name, unique per dimension and period (``day:2024-03-09``,
    ``week:2024-W10``, ``month:2024-03``; a dollar budget's are ``usd_day:2024-03-09`` and so
    on, the same for a key and a team, each in its own hash); ``end_ms`` is the first instant
    of the next period.
    """

    dimension: Dimension
    name: str
    end_ms: int


def current_period(dimension: Dimension, now_ms: int, timezone: str) -> Period:
    """The period of ``dimension`` containing ``now_ms``, in the calendar of ``timezone``."""
    return _period_from(dimension, now_ms, timezone)[1]


class Calendar:
    """``current_period`` with a memory: a period is recomputed only once an instant leaves it.

    Holds one entry per (dimension, time zone) in use, so its size is bounded by the config.
    """

    def __init__(self) -> None:
        self._known: dict[tuple[Dimension, str], tuple[int, Period]] = {}
        self._remembered: dict[int, tuple[object, int, int, Any]] = {}

    def recall(self, owner: object, now_ms: int) -> Any:
        """What ``keep`` stored for ``owner`` (an object, told apart by identity), while
        ``now_ms`` is within the instants it was kept for; None otherwise. The per-request
        plans of money budgets change only when a period does."""
        known = self._remembered.get(id(owner))
        if known is not None and known[0] is owner and known[1] <= now_ms < known[2]:
            return known[3]
        return None

    def keep(self, owner: object, now_ms: int, until_ms: int, value: object) -> None:
        """Remember ``value`` for ``owner`` from ``now_ms`` until ``until_ms`` (exclusive).
        The entry holds ``owner``, so its id is not reused while kept. Bounded: past 10,000
        owners it starts over."""
        if len(self._remembered) >= _MAX_REMEMBERED:
            self._remembered.clear()
        self._remembered[id(owner)] = (owner, now_ms, until_ms, value)

    def period(self, dimension: Dimension, now_ms: int, timezone: str) -> Period:
        """The period of ``dimension`` containing ``now_ms`` in ``timezone``."""
        known = self._known.get((dimension, timezone))
        if known is not None and known[0] <= now_ms < known[1].end_ms:
            return known[1]
        start_ms, period = _period_from(dimension, now_ms, timezone)
        self._known[(dimension, timezone)] = (start_ms, period)
        return period


def _period_from(dimension: Dimension, now_ms: int, timezone: str) -> tuple[int, Period]:
    """The start (ms) and the period of ``dimension`` containing ``now_ms``."""
    zone = ZoneInfo(timezone)
    today = (_EPOCH + timedelta(milliseconds=now_ms)).astimezone(zone).date()
    base = dimension.calendar
    if base is not None and base is not dimension:  # a dollar budget's calendar window
        start_ms, period = _period_from(base, now_ms, timezone)
        return start_ms, Period(dimension, "usd_" + period.name, period.end_ms)
    if dimension is Dimension.DAY:
        name = f"day:{today.isoformat()}"
        first, following = today, today + timedelta(days=1)
    elif dimension is Dimension.WEEK:
        year, week, _ = today.isocalendar()
        name = f"week:{year:04d}-W{week:02d}"
        first = today - timedelta(days=today.weekday())
        following = first + timedelta(days=7)
    elif dimension is Dimension.MONTH:
        name = f"month:{today.year:04d}-{today.month:02d}"
        first, following = today.replace(day=1), _first_of_next_month(today)
    else:
        raise ValueError(f"{dimension} is not a calendar quota")
    # A zone that turns its clocks back across midnight repeats the old date once more; the
    # end must still lie ahead so that a period never ends before the instant it contains.
    end_ms = max(_local_midnight_ms(following, zone), now_ms + 1)
    return _local_midnight_ms(first, zone), Period(dimension, name, end_ms)


def _first_of_next_month(day: date) -> date:
    if day.month == 12:
        return date(day.year + 1, 1, 1)
    return date(day.year, day.month + 1, 1)


def _local_midnight_ms(day: date, zone: ZoneInfo) -> int:
    # Where midnight does not exist (a DST jump at 00:00), fold=0 resolves it with the offset
    # in force before the jump, which lands on the first instant that is on the new date.
    return (datetime.combine(day, time(), tzinfo=zone) - _EPOCH) // _MS
