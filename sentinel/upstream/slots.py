"""An upstream's own connection pool: at most ``max_connections`` calls at once.

One aiohttp session serves every upstream; each upstream's calls take one of its slots
first, so upstreams on one host keep separate pools and a busy one cannot take another's
connections. Taking a free slot is a counter update (the request path does it for every
call); a full pool queues callers in order and hands each freed slot straight to the next.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["ConnectionSlots"]


class ConnectionSlots:
    """``size`` slots: ``try_take`` when one is free, else ``wait``; ``give`` frees one."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one slot")
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def free(self) -> int:
        """Slots no call holds."""
        return self._free

    def try_take(self) -> bool:
        """Take a free slot now, unless none is free or others are already waiting."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def wait(self) -> None:
        """Wait for a slot (in turn); the caller owns it when this returns."""
        if self.try_take():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a slot, then cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def give(self) -> None:
        """Free a slot: the next waiter gets it, or it goes back to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
