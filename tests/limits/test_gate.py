"""The gate's lease renewal: one background task renews every lease held, and stops after."""

from __future__ import annotations

import asyncio
from collections import Counter

from sentinel.config.limits import LimitDefaults
from sentinel.limits import LimitSpec, MemoryStore, Reservation
from sentinel.limits.gate import Gate
from sentinel.limits.window import Timing

DEFAULTS = LimitDefaults(lease_ttl_ms=60)  # renewed every 20 ms
SPEC = LimitSpec(max_parallel=5)


class CountingStore(MemoryStore):
    """A MemoryStore that counts the renewals of each reservation."""

    def __init__(self) -> None:
        super().__init__(Timing(lease_ttl_ms=DEFAULTS.lease_ttl_ms))
        self.renewals: Counter[str] = Counter()

    async def renew(self, reservation: Reservation, now_ms: int) -> bool:
        self.renewals[reservation.reservation_id] += 1
        return await super().renew(reservation, now_ms)


async def _admitted(gate: Gate, request_id: str) -> Reservation:
    decision = await gate.admit("team", SPEC, request_id, 10)
    assert decision.reservation is not None and decision.reservation.has_lease
    return decision.reservation


async def test_every_held_lease_is_renewed_until_released() -> None:
    """Two requests hold leases: both are renewed while held, neither after its release, and
    the renewal task ends once no lease is held."""
    store = CountingStore()
    gate = Gate(store, DEFAULTS)
    first, second = await _admitted(gate, "a"), await _admitted(gate, "b")
    with gate.holding(first):
        with gate.holding(second):
            await asyncio.sleep(0.09)
        renewed_while_held = store.renewals[second.reservation_id]
        await asyncio.sleep(0.09)
    assert renewed_while_held >= 2 and store.renewals[first.reservation_id] >= 5
    assert store.renewals[second.reservation_id] <= renewed_while_held + 1  # one in flight
    counts = dict(store.renewals)
    await asyncio.sleep(0.06)
    assert dict(store.renewals) == counts  # nothing held: nothing renewed


async def test_a_request_without_a_lease_renews_nothing() -> None:
    """A key with no parallel limit takes no lease, so holding its reservation renews nothing."""
    store = CountingStore()
    gate = Gate(store, DEFAULTS)
    decision = await gate.admit("team", LimitSpec(rpm=10), "a", 10)
    assert decision.reservation is not None and not decision.reservation.has_lease
    with gate.holding(decision.reservation), gate.holding(None):
        await asyncio.sleep(0.05)
    assert not store.renewals
