"""``Deadline`` keeps ``asyncio.timeout``'s contract: expiry is TimeoutError, any other
cancellation stays a cancellation, and nothing is left behind when the block ends in time."""

from __future__ import annotations

import asyncio

import pytest

from sentinel.deadline import LOOSE_FROM_S, Deadline, LooseDeadline, deadline_at


def _in(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_a_block_past_its_deadline_raises_timeout_error() -> None:
    with pytest.raises(TimeoutError):
        with Deadline(_in(0.01)):
            await asyncio.Event().wait()  # never set: only the deadline ends it
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the cancellation was taken back


async def test_a_block_in_time_is_untouched_and_later_awaits_run() -> None:
    with Deadline(_in(0.05)):
        await asyncio.sleep(0)
    await asyncio.sleep(0.08)  # past the deadline: nothing fires any more


@pytest.mark.parametrize(
    ("deadline_s", "cancel_after_s"),
    [
        pytest.param(10, 0.01, id="well-before-the-deadline"),
        # Expiry and an outside cancel in the same loop turn: the outside one wins, as with
        # asyncio.timeout, so a shutdown is never mistaken for a slow upstream.
        pytest.param(0.02, 0.02, id="racing-the-deadline"),
    ],
)
async def test_another_cancellation_stays_a_cancellation(
    deadline_s: float, cancel_after_s: float
) -> None:
    """A client that leaves cancels the task: that must stay a CancelledError, never become
    a TimeoutError."""

    async def waits() -> None:
        with Deadline(_in(deadline_s)):
            await asyncio.Event().wait()  # never set

    task = asyncio.create_task(waits())
    await asyncio.sleep(cancel_after_s)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_outside_a_task_it_refuses() -> None:
    """A plain callback has no task to cancel: entering there is a RuntimeError."""
    loop = asyncio.get_running_loop()
    refused: asyncio.Future[RuntimeError] = loop.create_future()

    def enter() -> None:
        try:
            Deadline(loop.time() + 1).__enter__()
        except RuntimeError as exc:
            refused.set_result(exc)

    loop.call_soon(enter)
    assert "inside a task" in str(await asyncio.wait_for(refused, 1))


async def _reply_after_two_turns(late_turns: int) -> int:
    """A block past its deadline whose reply arrives two loop turns later."""
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[int] = loop.create_future()
    loop.call_soon(loop.call_soon, reply.set_result, 1)
    with Deadline(loop.time() - 1, late_turns=late_turns):
        return await reply


async def test_late_turns_let_a_reply_already_on_its_way_end_the_block() -> None:
    """With late turns, a reply the loop is about to deliver is not called a timeout; without
    them, the same block times out."""
    assert await _reply_after_two_turns(late_turns=3) == 1
    with pytest.raises(TimeoutError):
        await _reply_after_two_turns(late_turns=0)


async def test_deadline_at_keeps_near_bounds_with_a_timer_and_far_ones_with_the_watchdog() -> None:
    near, far = deadline_at(_in(LOOSE_FROM_S / 2)), deadline_at(_in(LOOSE_FROM_S * 2))
    assert isinstance(near, Deadline)
    assert isinstance(far, LooseDeadline)
    with pytest.raises(TimeoutError):  # a near bound still fires on time
        with deadline_at(_in(0.01)):
            await asyncio.Event().wait()
    with far:  # a far one ends with its block, leaving nothing armed
        await asyncio.sleep(0)
