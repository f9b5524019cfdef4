"""The measured window of a scenario: its clock and CPU readings at both ends.

Readings are taken by the load generator itself, on its event loop, the moment the window
opens and closes, so they bracket exactly the requests that are counted. Besides the proxy's
CPU time, the window reads the whole machine's busy time: what neither the proxy, its Redis
server, the mock nor the load generator used is *background* load, which makes a noisy run
visible.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from bench import procstat

__all__ = ["Reading", "Watched", "Window"]


@dataclass(frozen=True)
class Watched:
    """The processes whose CPU a window reads (None: not part of this scenario)."""

    proxy: int | None = None
    mock: int | None = None
    store: int | None = None


def _cpu(pid: int | None) -> float | None:
    return None if pid is None else procstat.cpu_seconds(pid)


@dataclass(frozen=True)
class Reading:
    """CPU seconds used so far by each watched party (None: not watched or unreadable)."""

    at_ns: int
    proxy: float | None
    mock: float | None
    store: float | None
    own: float | None
    machine: float | None

    @classmethod
    def take(cls, watched: Watched) -> Reading:
        """Read the clock and every counter now."""
        return cls(
            at_ns=time.perf_counter_ns(),
            proxy=_cpu(watched.proxy),
            mock=_cpu(watched.mock),
            store=_cpu(watched.store),
            own=procstat.cpu_seconds(os.getpid()),
            machine=procstat.machine_busy_seconds(),
        )


def _delta(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else max(end - start, 0.0)


class Window:
    """Opened after the warm-up, closed after the measured duration."""

    def __init__(self, watched: Watched) -> None:
        self._watched = watched
        self.start: Reading | None = None
        self.end: Reading | None = None
        self.proxy_rss: int | None = None

    def open(self) -> None:
        """Take the opening reading."""
        self.start = Reading.take(self._watched)

    def close(self) -> None:
        """Take the closing reading (and open the window there if it never opened)."""
        self.end = Reading.take(self._watched)
        if self.start is None:
            self.start = self.end
        if self._watched.proxy is not None:
            self.proxy_rss = procstat.rss_bytes(self._watched.proxy)

    @property
    def bounds_ns(self) -> tuple[int, int]:
        """The window's start and end on the ``perf_counter_ns`` clock."""
        assert self.start is not None and self.end is not None
        return self.start.at_ns, self.end.at_ns

    def _used(self, name: str) -> float | None:
        assert self.start is not None and self.end is not None
        return _delta(getattr(self.start, name), getattr(self.end, name))

    @property
    def proxy_cpu(self) -> float | None:
        """CPU seconds the proxy used inside the window."""
        return self._used("proxy")

    @property
    def mock_cpu(self) -> float | None:
        """CPU seconds the mock upstream used inside the window."""
        return self._used("mock")

    @property
    def store_cpu(self) -> float | None:
        """CPU seconds the proxy's Redis server used inside the window."""
        return self._used("store")

    @property
    def own_cpu(self) -> float | None:
        """CPU seconds the load generator itself used inside the window."""
        return self._used("own")

    @property
    def background_cpu(self) -> float | None:
        """CPU seconds used inside the window by every process not taking part in it."""
        machine = self._used("machine")
        own = self.own_cpu
        if machine is None or own is None:
            return None
        parties = (self.proxy_cpu, self.mock_cpu, self.store_cpu)
        return max(machine - own - sum(used or 0.0 for used in parties), 0.0)
