"""Operations of a Redis function, sent to Redis together: one call per batch.

Every request makes two limits operations (admit, settle) and the usage tracker one per
batch of records; each costs Redis far more as a call of its own than as part of a larger
one (a call's fixed cost, and every hash it reads and writes, are paid once per call).
``FunctionBatcher`` queues the operations, and one task sends whatever is queued as one
``FCALL`` (of up to ``_MAX_OPS`` operations, each with its own keys, in the order they were
queued) on a connection of its own, reads the replies, and goes again while operations are
waiting. A lone operation goes out at the next loop turn, without waiting; those queued
while a batch is in flight form the next one. Each operation runs as if it ran alone, so a
batch changes what Redis spends, never what it answers. A single server only: a cluster
client sends each operation to its slot's node itself (``RedisFunction.call``).

The connection is one of the client's pool (with its auth, TLS and reply parser), held
until it fails; the command is encoded here, each set of keys' encoding kept for its next use.
Each batch is bounded by ``timeout_s``. A batch whose replies are late gets a few more loop
turns to deliver replies already read, so that a busy replica does not mistake its own lag
for a dead Redis; then every operation of the batch fails with ``TimeoutError`` and the
connection is dropped (a late reply must never answer the next batch). Connection errors
fail every operation of the batch; an error reply fails the operations of its call. Calls
of a function Redis does not know (after a restart or ``FUNCTION FLUSH``) load it and are
sent again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ReadOnlyError, ResponseError

from sentinel.deadline import Deadline
from sentinel.redis_io.functions import Fields, RedisFunction, is_missing, ops_argument

__all__ = ["LATE_REPLY_TURNS", "FunctionBatcher"]

LATE_REPLY_TURNS = 3
"""Loop turns a Redis call past its deadline gets to deliver a reply already received."""
_MAX_OPS = 256
"""Operations in one call: Redis runs a call to its end before anything else."""
_MAX_KEYS = 10_000
"""Encoded sets of keys kept; past it the cache starts over."""

_Op = tuple[tuple[str, ...], Fields, "asyncio.Future[Any]"]


class FunctionBatcher:
    """Runs operations of one Redis function over one connection, batching those that wait."""

    def __init__(self, client: Redis, function: RedisFunction, timeout_s: float) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._queue: list[_Op] = []
        self._sender: asyncio.Task[None] | None = None
        self._connection: AbstractConnection | None = None
        self._bulks: dict[tuple[str, ...], bytes] = {}
        self._name = _bulk(b"FCALL") + _bulk(function.name.encode())
        self._load = _encode([b"FUNCTION", b"LOAD", function.source.encode()])

    def call(self, keys: tuple[str, ...], op: Fields) -> asyncio.Future[Any]:
        """Queue one operation on ``keys`` (its fields, from ``op_fields``); the future gets
        its reply, or the exception that stopped it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((keys, op, future))
        if self._sender is None:
            self._sender = loop.create_task(self._send_all(), name="redis-function-batches")
        return future

    def _command(self, ops: Sequence[_Op]) -> bytes:
        """One ``FCALL`` running ``ops`` in order, each set of keys named once."""
        first: dict[tuple[str, ...], int] = {}
        names: list[bytes] = []
        count = 0
        runs: list[tuple[int, int, Fields]] = []
        for keys, op, _ in ops:
            at = first.get(keys)
            if at is None:
                at = first[keys] = count + 1
                names.append(self._encoded(keys))
                count += len(keys)
            runs.append((at, len(keys), op))
        return (
            b"*%d\r\n" % (count + 4)
            + self._name
            + _bulk(b"%d" % count)
            + b"".join(names)
            + _bulk(ops_argument(runs))
        )

    def _encoded(self, keys: tuple[str, ...]) -> bytes:
        """A set of keys as consecutive bulk strings, kept for its next use."""
        bulks = self._bulks.get(keys)
        if bulks is None:
            if len(self._bulks) >= _MAX_KEYS:
                self._bulks.clear()
            bulks = self._bulks[keys] = b"".join(_bulk(key.encode()) for key in keys)
        return bulks

    async def _send_all(self) -> None:
        try:
            while self._queue:
                queued, self._queue = self._queue, []
                live = [op for op in queued if not op[2].done()]  # callers may give up
                if live:
                    await self._send(
                        [live[i : i + _MAX_OPS] for i in range(0, len(live), _MAX_OPS)]
                    )
        finally:
            self._sender = None

    async def _send(self, calls: list[list[_Op]]) -> None:
        when = asyncio.get_running_loop().time() + self._timeout_s
        try:
            # A round trip cut short by the deadline drops its connection (``_exchange``).
            with Deadline(when, late_turns=LATE_REPLY_TURNS):
                replies = await self._round_trip([self._command(ops) for ops in calls])
        except asyncio.CancelledError:  # the loop is shutting down
            for ops in calls:
                _fail(ops, TimeoutError())
            raise
        except Exception as exc:  # a timeout, or the connection failed: every call failed
            for ops in calls:
                _fail(ops, exc)
            return
        for ops, reply in zip(calls, replies, strict=True):
            if isinstance(reply, Exception):
                _fail(ops, reply)
                continue
            if not isinstance(reply, list) or len(reply) != len(ops):
                _fail(ops, ResponseError(f"expected {len(ops)} replies, got {reply!r:.80}"))
                continue
            for (_, _, future), result in zip(ops, reply, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _round_trip(self, commands: list[bytes]) -> list[Any]:
        replies = await self._exchange(commands)
        unknown = [i for i, reply in enumerate(replies) if is_missing(reply)]
        if unknown:
            (loaded,) = await self._exchange([self._load])  # on this connection, known good
            if isinstance(loaded, Exception) and "already exists" not in str(loaded):
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


def _fail(ops: Sequence[_Op], error: BaseException) -> None:
    for _, _, future in ops:
        if not future.done():
            future.set_exception(error)
