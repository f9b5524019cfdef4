"""Lua code loaded into Redis as a function library (``FUNCTION LOAD``, called by ``FCALL``).

A library's code runs once, when it is loaded; each call then only runs the function. A
script sent by ``EVALSHA`` instead runs its whole body on every call, defining each of its
local functions again, which cost the limits script about half of each call's Redis CPU.

Every call carries a batch of operations: ``ARGV[1]`` is a JSON array whose items are
``[the operation's fields..., its first key's index, its number of keys]``, so one call runs the
queued operations of many keys at once (one server), or one operation (a cluster node); it
replies with an array, one reply per operation. ``ops_argument`` builds that argument.

The library and its function are named after the source's digest (``@NAME@`` in the file,
which starts without the ``#!lua`` line: it is written here):
two releases of Sentinel sharing one Redis never call each other's code, and a library
already there is the same code. A server that restarted empty, a ``FUNCTION FLUSH`` or a
failover to a replica that never saw the load answer "Function not found"; the caller loads
the library and sends the call again (``is_missing``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError

__all__ = ["RedisFunction", "is_missing", "ops_argument"]


class RedisFunction:
    """One Lua function library of a package, named after its source.

    With ``views``, the write-back views of hashes and zsets (``views.lua``, next to this
    module) come first, so the library's operations can read and write through them."""

    def __init__(self, package: str, filename: str, stem: str, *, views: bool = False) -> None:
        parts = [files(package).joinpath(filename).read_text(encoding="utf-8")]
        if views:
            parts.insert(0, files("sentinel.redis_io").joinpath("views.lua").read_text("utf-8"))
        code = "\n".join(parts)
        digest = hashlib.sha256(code.encode()).hexdigest()[:16]
        self.name = f"{stem}_{digest}"
        """The library's and its one function's name."""
        self.source = f"#!lua name={self.name}\n" + code.replace("@NAME@", self.name)
        """The code ``FUNCTION LOAD`` gets."""

    async def load(self, client: Redis | RedisCluster) -> None:
        """Load the library (on every primary of a cluster); one already there is kept."""
        try:
            await client.function_load(self.source)
        except ResponseError as exc:
            if "already exists" not in str(exc):
                raise

    async def call(
        self, client: Redis | RedisCluster, keys: Sequence[str], ops: Sequence[bytes]
    ) -> list[Any]:
        """Run ``ops`` (each an operation's fields as JSON, without brackets) on ``keys``,
        every operation using all of them; loads the library first where it is missing."""
        argument = ops_argument([(1, len(keys), op) for op in ops])
        try:
            replies: list[Any] = await client.fcall(self.name, len(keys), *keys, argument)
        except ResponseError as exc:
            if not is_missing(exc):
                raise
            await self.load(client)
            replies = await client.fcall(self.name, len(keys), *keys, argument)
        return replies


def is_missing(reply: object) -> bool:
    """Whether ``reply`` is Redis saying it does not know the function."""
    return isinstance(reply, ResponseError) and "Function not found" in str(reply)


def ops_argument(ops: Sequence[tuple[int, int, bytes]]) -> bytes:
    """The JSON array of operations, each given as (its first key's index from 1, its number
    of keys, its fields as JSON without brackets) and written as its fields, then the two."""
    return b"[" + b",".join(b"[%b,%d,%d]" % (op, first, count) for first, count, op in ops) + b"]"
