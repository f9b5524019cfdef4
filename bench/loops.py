"""The event loop every benchmark process runs: uvloop when it is installed."""

from __future__ import annotations

import asyncio

__all__ = ["loop_runner"]


def loop_runner() -> asyncio.Runner:
    """An ``asyncio.Runner`` on uvloop, or on the default loop where uvloop is missing."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)
