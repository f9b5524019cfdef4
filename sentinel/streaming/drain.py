"""Reading a stream to its end after its client left, to get the provider's own usage.

With ``[usage] drain_on_disconnect = true``, a stream whose client disconnected is not dropped
at once: its upstream response is read on, through the accumulator (nothing is sent), until
the provider's final usage arrives. It is bounded twice, so that departed clients cannot pile
up work: at most ``max_drains`` streams drain at once (others are dropped and estimated, as
without draining), and each drains for at most ``timeout_ms``.
"""

from __future__ import annotations

import asyncio

import aiohttp
import structlog

from sentinel.streaming.accumulator import StreamAccumulator

__all__ = ["Drainer"]

log = structlog.get_logger("sentinel.streaming")


class Drainer:
    """Bounded draining of abandoned streams (see the module docstring)."""

    def __init__(self, max_drains: int, timeout_ms: int) -> None:
        self._free = max_drains
        self._timeout_s = timeout_ms / 1000
        self.drained = 0  # read to the stream's end
        self.stopped = 0  # stopped by the time limit or an error
        self.skipped = 0  # not read: max_drains were running

    async def drain(self, response: aiohttp.ClientResponse, tap: StreamAccumulator) -> bool:
        """Feed the rest of ``response`` to ``tap``; True when it reached the stream's end."""
        if self._free <= 0:
            self.skipped += 1
            return False
        self._free -= 1
        try:
            async with asyncio.timeout(self._timeout_s):
                read = response.content.readany
                while chunk := await read():
                    tap.feed(chunk)
            tap.finish()
            self.drained += 1
            return True
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.stopped += 1
            log.info("stream_drain_stopped", reason=type(exc).__name__)
            return False
        finally:
            self._free += 1
