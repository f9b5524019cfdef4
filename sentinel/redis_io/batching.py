"""Calls of a Lua script, sent to Redis together: one round trip per batch.

Every request makes two calls of ``limits.lua`` (admit, settle), and the usage tracker one
call of ``usage_counters.lua`` per batch and minute; with many requests in flight most of a
call's cost is the client's own work per round trip. ``ScriptBatcher`` queues the calls,
and one task sends whatever is queued as one pipelined write on a connection of its own
(not a transaction: each call is atomic on its own, as when sent alone), reads the replies
in order, and goes again while calls are waiting. A lone call goes out at the next loop
turn, without waiting; calls made while a batch is in flight form the next one.

The connection is one of the client's pool (with its auth, TLS and reply parser), held
until it fails; only the one command is encoded here, and a caller whose keys repeat (the
limits: one set per API key) has the command's head encoded once. Each batch is bounded by
``timeout_s``. A batch whose replies are late gets a few more loop turns to deliver replies
already read, so that a busy replica does not mistake its own lag for a dead Redis; then
every call of the batch fails with ``TimeoutError`` and the connection is dropped (a late
reply must never answer the next batch). Connection errors fail every call of the batch; an
error reply fails its own call. Calls of a script Redis does not know (after a restart or
``SCRIPT FLUSH``) load it and are sent again. A single server only: a cluster client sends
each call to its slot's node itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError

from sentinel.deadline import Deadline

__all__ = ["LATE_REPLY_TURNS", "ScriptBatcher"]

LATE_REPLY_TURNS = 3
"""Loop turns a Redis call past its deadline gets to deliver a reply already received."""
_MAX_HEADS = 10_000
"""Encoded command heads kept (one per set of keys); past it the cache starts over."""

_Call = tuple[bytes, "asyncio.Future[Any]"]


class ScriptBatcher:
    """Runs calls of one Lua script over one connection, batching those that wait."""

    def __init__(self, client: Redis, source: str, timeout_s: float) -> None:
        self._client = client
        self._script = client.register_script(source)  # for its SHA
        self._timeout_s = timeout_s
        self._queue: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None
        self._connection: AbstractConnection | None = None
        self._heads: dict[tuple[str, ...], bytes] = {}
        self._starts: dict[int, bytes] = {}  # key count -> "*N EVALSHA <sha> <count>"
        self._load = _encode([b"SCRIPT", b"LOAD", source.encode()])

    def call(
        self, keys: tuple[str, ...], arg: str, *, keys_repeat: bool = True
    ) -> asyncio.Future[Any]:
        """Queue one call with ``keys`` and one argument; the future gets its reply, or the
        exception that stopped it. ``keys_repeat``: keep the encoded head for the next call
        with the same keys (not for keys used once, like a request's dedupe marker)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((self._command(keys, arg, keys_repeat), future))
        if self._sender is None:
            self._sender = loop.create_task(self._send_all(), name="redis-script-batches")
        return future

    def _command(self, keys: tuple[str, ...], arg: str, keep: bool) -> bytes:
        head = self._heads.get(keys) if keep else None
        if head is None:
            start = self._starts.get(len(keys))
            if start is None:
                fields = [b"EVALSHA", self._script.sha.encode(), b"%d" % len(keys)]
                start = b"*%d\r\n" % (len(keys) + 4) + b"".join(map(_bulk, fields))  # + arg
                self._starts[len(keys)] = start
            head = start + b"".join([_bulk(key.encode()) for key in keys])
            if keep:
                if len(self._heads) >= _MAX_HEADS:
                    self._heads.clear()
                self._heads[keys] = head
        return head + _bulk(arg.encode())

    async def _send_all(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                live = [call for call in batch if not call[1].done()]  # callers may give up
                if live:
                    await self._send(live)
        finally:
            self._sender = None

    async def _send(self, batch: list[_Call]) -> None:
        when = asyncio.get_running_loop().time() + self._timeout_s
        try:
            # A round trip cut short by the deadline drops its connection (``_exchange``).
            with Deadline(when, late_turns=LATE_REPLY_TURNS):
                replies = await self._round_trip([command for command, _ in batch])
        except asyncio.CancelledError:  # the loop is shutting down
            _fail(batch, TimeoutError())
            raise
        except Exception as exc:  # a timeout, or the connection failed: every call failed
            _fail(batch, exc)
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _round_trip(self, commands: list[bytes]) -> list[Any]:
        replies = await self._exchange(commands)
        unknown = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if unknown:
            (loaded,) = await self._exchange([self._load])  # on this connection, known good
            if isinstance(loaded, Exception):
                raise loaded
            again = await self._exchange([commands[i] for i in unknown])
            for i, reply in zip(unknown, again, strict=True):
                replies[i] = reply
        return replies

    async def _acquire(self) -> AbstractConnection:
        """A connection from the client's pool, kept until it fails (closing the client
        closes it too)."""
        pool = self._client.connection_pool
        connection: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
        self._connection = connection
        return connection

    async def _exchange(self, commands: list[bytes]) -> list[Any]:
        """Write ``commands`` at once, then read one reply for each, in order."""
        connection = self._connection or await self._acquire()
        try:
            await connection.send_packed_command(commands, check_health=False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except ReadOnlyError:
                    raise  # a primary demoted to a replica: drop it, the next one finds the new
                except ResponseError as exc:  # read whole: the connection stays in step
                    replies.append(exc)
            return replies
        except BaseException:
            if self._connection is connection:
                self._connection = None
            await connection.disconnect(nowait=True)
            await self._client.connection_pool.release(connection)
            raise


def _encode(fields: list[bytes]) -> bytes:
    """One command in Redis's protocol (RESP): an array of bulk strings."""
    return b"*%d\r\n" % len(fields) + b"".join(map(_bulk, fields))


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def _fail(batch: Sequence[_Call], error: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
