"""An upstream's connection slots: counted, handed on in order, never lost to a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from sentinel.upstream.slots import ConnectionSlots


def test_free_slots_are_taken_without_waiting() -> None:
    """Up to the pool's size a call takes a slot at once; then none is free."""
    slots = ConnectionSlots(2)
    assert slots.try_take() and slots.try_take()
    assert not slots.try_take() and slots.free == 0
    slots.give()
    assert slots.free == 1


async def test_a_freed_slot_goes_to_the_first_waiter() -> None:
    """Waiters get freed slots in the order they came, before any newcomer."""
    slots = ConnectionSlots(1)
    assert slots.try_take()
    order: list[str] = []

    async def call(name: str) -> None:
        await slots.wait()
        order.append(name)

    first = asyncio.create_task(call("first"))
    second = asyncio.create_task(call("second"))
    await asyncio.sleep(0)
    assert not slots.try_take()  # others wait: no jumping the queue
    slots.give()
    await first
    slots.give()
    await second
    assert order == ["first", "second"]


async def test_a_cancelled_waiter_passes_its_slot_on() -> None:
    """A waiter cancelled after it was handed a slot gives it to the next; one cancelled
    before leaves the queue."""
    slots = ConnectionSlots(1)
    assert slots.try_take()
    gone = asyncio.create_task(slots.wait())
    after = asyncio.create_task(slots.wait())
    await asyncio.sleep(0)
    slots.give()  # handed to ``gone``...
    gone.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await gone
    await after  # got the slot ``gone`` passed on
    early = asyncio.create_task(slots.wait())
    await asyncio.sleep(0)
    early.cancel()
    with pytest.raises(asyncio.CancelledError):
        await early
    slots.give()
    assert slots.free == 1


def test_a_pool_has_a_slot() -> None:
    """A pool of no slots is refused."""
    with pytest.raises(ValueError):
        ConnectionSlots(0)
