"""UTC timestamps as ISO-8601 text, written on every request: one ``strftime`` a second.

The request's log line and its usage record each carry one; ``datetime.isoformat`` costs
several times what slicing a cached second's text does.
"""

from __future__ import annotations

import time

__all__ = ["iso_utc", "utc_second"]


class _LastSecond:
    """The text of the last whole second asked for."""

    second = -1
    text = ""


def utc_second(second: int) -> str:
    """Epoch ``second`` as ``YYYY-MM-DDTHH:MM:SS`` (UTC), worked out once per second."""
    if second != _LastSecond.second:
        _LastSecond.text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _LastSecond.second = second
    return _LastSecond.text


def iso_utc(ns: int) -> str:
    """``ns`` since the epoch as structlog's ISO UTC stamp: ``datetime.isoformat`` with ``Z``,
    microseconds truncated and shown only when not zero."""
    second, micros = divmod(ns // 1000, 1_000_000)
    text = utc_second(second)
    return f"{text}.{micros:06d}Z" if micros else text + "Z"
