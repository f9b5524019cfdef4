"""Test doubles for the fail-closed wrapper: a primary store that can go down on command."""

from __future__ import annotations

import asyncio

from sentinel.limits import (
    Admission,
    Decision,
    KeyState,
    LimitSpec,
    MemoryStore,
    Reservation,
    StoreUnavailable,
    WindowUsage,
)
from sentinel.limits.spending import Spending
from tests.limits.conftest import TIMING


class FlakyPrimary:
    """A stand-in for Redis: a MemoryStore that raises ``StoreUnavailable`` while ``down``.

    ``calls`` counts every call that reached it; ``merge_gate``, when set, holds each merge
    until the test opens it (``merge_entered`` tells that one is waiting), to interleave other
    work with a write-back.
    """

    def __init__(self) -> None:
        self.inner = MemoryStore(TIMING)
        self.timing = TIMING
        self.down = False
        self.calls = 0
        self.merge_gate: asyncio.Event | None = None
        self.merge_entered = asyncio.Event()

    def _reach(self) -> None:
        self.calls += 1
        if self.down:
            raise StoreUnavailable("redis: ConnectionError")

    async def admit(self, spec: LimitSpec, admission: Admission, now_ms: int) -> Decision:
        self._reach()
        return await self.inner.admit(spec, admission, now_ms)

    async def settle(
        self,
        reservation: Reservation,
        actual_tokens: int,
        now_ms: int,
        *,
        release_request: bool = False,
        nano_usd: int = 0,
    ) -> Spending | None:
        self._reach()
        return await self.inner.settle(
            reservation, actual_tokens, now_ms, release_request=release_request, nano_usd=nano_usd
        )

    async def renew(self, reservation: Reservation, now_ms: int) -> bool:
        self._reach()
        return await self.inner.renew(reservation, now_ms)

    async def usage(self, key_name: str, spec: LimitSpec, now_ms: int) -> WindowUsage:
        self._reach()
        return await self.inner.usage(key_name, spec, now_ms)

    async def state(self, key_name: str) -> KeyState:
        self._reach()
        return await self.inner.state(key_name)

    async def merge(self, key_name: str, state: KeyState, now_ms: int) -> None:
        self._reach()
        if self.merge_gate is not None:
            self.merge_entered.set()
            await self.merge_gate.wait()
            self._reach()
        await self.inner.merge(key_name, state, now_ms)
