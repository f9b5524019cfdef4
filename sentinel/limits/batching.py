"""Concurrent calls of the limits script, sent to Redis together: one round trip per loop turn.

Every request makes two or three calls of ``limits.lua`` (admit, settle, lease renewals), and
with many requests in flight most of a call's cost is the client's own work per round trip.
``ScriptBatcher`` queues the calls made during one turn of the event loop and sends them in
one pipeline (not a transaction: each call is atomic on its own, as it is when sent alone),
so their cost is shared. A lone call still goes out at the next loop turn, without waiting.

Each batch is bounded by ``timeout_s`` from the moment it is sent. A batch whose replies
are late gets a few more loop turns to deliver replies already read, so that a busy replica
does not mistake its own lag for a dead Redis; then every call still waiting fails with
``TimeoutError`` and the batch is cancelled (redis-py drops its connection). Connection errors
fail every call of the batch; an error reply fails only its own call. A script Redis does not
know (after a restart or ``SCRIPT FLUSH``) is loaded and those calls are sent again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

__all__ = ["ScriptBatcher"]

_LATE_REPLY_TURNS = 3
"""Loop turns a batch past its deadline gets to deliver replies already received."""

Call = tuple[Sequence[str], Sequence[int | str], "asyncio.Future[Any]"]


class ScriptBatcher:
    """Runs calls of one Lua script, batching those made in the same loop turn."""

    def __init__(self, client: Redis, source: str, timeout_s: float) -> None:
        self._client = client
        self._script = client.register_script(source)  # knows the SHA and how to load it
        self._timeout_s = timeout_s
        self._queue: list[Call] = []
        self._batches: set[asyncio.Task[None]] = set()  # strong references while in flight

    def call(self, keys: Sequence[str], args: Sequence[int | str]) -> asyncio.Future[Any]:
        """Queue one call; the future gets its reply, or the exception that stopped it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._send)
        self._queue.append((keys, args, future))
        return future

    def _send(self) -> None:
        batch, self._queue = self._queue, []
        live = [call for call in batch if not call[2].done()]  # a caller may have given up
        if not live:
            return
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._run(live), name="limits-batch")
        self._batches.add(task)
        timer = loop.call_later(self._timeout_s, self._expire, task, live, _LATE_REPLY_TURNS)

        def finished(done: asyncio.Task[None]) -> None:
            self._batches.discard(done)
            timer.cancel()

        task.add_done_callback(finished)

    def _expire(self, task: asyncio.Task[None], batch: list[Call], turns: int) -> None:
        if task.done():
            return
        if turns > 0:  # let the loop run the callbacks of replies that already arrived
            asyncio.get_running_loop().call_soon(self._expire, task, batch, turns - 1)
            return
        _fail(batch, TimeoutError())
        task.cancel()

    async def _run(self, batch: list[Call]) -> None:
        try:
            replies = await self._execute(batch)
            unknown = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if unknown:
                await self._client.script_load(self._script.script)
                again = await self._execute([batch[i] for i in unknown])
                for i, reply in zip(unknown, again, strict=True):
                    replies[i] = reply
        except asyncio.CancelledError:
            _fail(batch, TimeoutError())
            raise
        except Exception as exc:  # the connection failed: every call of the batch failed
            _fail(batch, exc)
            return
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _execute(self, batch: list[Call]) -> list[Any]:
        sha = self._script.sha
        async with self._client.pipeline(transaction=False) as pipe:
            for keys, args, _ in batch:
                # A pipeline only queues the call; execute() sends them all and awaits.
                _ = pipe.evalsha(sha, len(keys), *keys, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


def _fail(batch: list[Call], exc: BaseException) -> None:
    for _, _, future in batch:
        if not future.done():
            future.set_exception(exc)
