"""The measured window of a scenario: its clock and CPU readings at both ends.

Readings are taken by the load generator itself, on its event loop, the moment the window
opens and closes, so they bracket exactly the requests that are counted. Besides the proxy's
CPU time, the window reads the whole machine's busy time: what neither the proxy, the mock
nor the load generator used is *background* load, which makes a noisy run visible.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from bench import procstat

__all__ = ["Reading", "Window"]


@dataclass(frozen=True)
class Reading:
    """CPU seconds used so far by each watched party (None: not watched or unreadable)."""

    at_ns: int
    proxy: float | None
    mock: float | None
    own: float | None
    machine: float | None

    @classmethod
    def take(cls, proxy_pid: int | None, mock_pid: int | None) -> Reading:
        """Read the clock and every counter now."""
        return cls(
            at_ns=time.perf_counter_ns(),
            proxy=None if proxy_pid is None else procstat.cpu_seconds(proxy_pid),
            mock=None if mock_pid is None else procstat.cpu_seconds(mock_pid),
            own=procstat.cpu_seconds(os.getpid()),
            machine=procstat.machine_busy_seconds(),
        )


def _delta(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else max(end - start, 0.0)


class Window:
    """Opened after the warm-up, closed after the measured duration."""

    def __init__(self, proxy_pid: int | None, mock_pid: int | None) -> None:
        self._proxy_pid = proxy_pid
        self._mock_pid = mock_pid
        self.start: Reading | None = None
        self.end: Reading | None = None
        self.proxy_rss: int | None = None

    def open(self) -> None:
        """Take the opening reading."""
        self.start = Reading.take(self._proxy_pid, self._mock_pid)

    def close(self) -> None:
        """Take the closing reading (and open the window there if it never opened)."""
        self.end = Reading.take(self._proxy_pid, self._mock_pid)
        if self.start is None:
            self.start = self.end
        if self._proxy_pid is not None:
            self.proxy_rss = procstat.rss_bytes(self._proxy_pid)

    @property
    def bounds_ns(self) -> tuple[int, int]:
        """The window's start and end on the ``perf_counter_ns`` clock."""
        assert self.start is not None and self.end is not None
        return self.start.at_ns, self.end.at_ns

    @property
    def proxy_cpu(self) -> float | None:
        """CPU seconds the proxy used inside the window."""
        assert self.start is not None and self.end is not None
        return _delta(self.start.proxy, self.end.proxy)

    @property
    def mock_cpu(self) -> float | None:
        """CPU seconds the mock upstream used inside the window."""
        assert self.start is not None and self.end is not None
        return _delta(self.start.mock, self.end.mock)

    @property
    def own_cpu(self) -> float | None:
        """CPU seconds the load generator itself used inside the window."""
        assert self.start is not None and self.end is not None
        return _delta(self.start.own, self.end.own)

    @property
    def background_cpu(self) -> float | None:
        """CPU seconds used inside the window by every process not taking part in it."""
        assert self.start is not None and self.end is not None
        machine = _delta(self.start.machine, self.end.machine)
        own = self.own_cpu
        if machine is None or own is None:
            return None
        return max(machine - own - (self.proxy_cpu or 0.0) - (self.mock_cpu or 0.0), 0.0)
