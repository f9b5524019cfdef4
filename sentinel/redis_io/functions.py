"""Lua code loaded into Redis as a function library (``FUNCTION LOAD``, called by ``FCALL``).

A library's code runs once, when it is loaded; each call then only runs the function. A
script sent by ``EVALSHA`` instead runs its whole body on every call, defining each of its
local functions again, which cost the limits script about half of each call's Redis CPU.

Every call carries a batch of operations: ``ARGV[1]`` is one flat msgpack array holding, for
each operation in turn, its first key's index in ``KEYS``, its number of keys, its number of
fields n, then its n fields (whole numbers below 2^53 and strings). So one call runs the queued
operations of many keys at once (one server), or one operation (a cluster node); it replies
with an array, one reply per operation. ``op_fields`` packs an operation's fields and
``ops_argument`` builds the argument.

Why flat msgpack: Redis's ``cmsgpack.unpack`` reads numbers as binary, where ``cjson`` parses
each with ``strtod``, and one flat array is one Lua table, where an array per operation is a
table that grows field by field. Measured under callgrind (a probe library on
``bench.redis_cost``'s server harness), decoding a batch of 8 admissions and 8 settlements
costs redis-server 15k instructions per request this way, 46k as nested JSON.

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

from msgpack import Packer
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError

__all__ = ["Fields", "RedisFunction", "is_missing", "op_fields", "ops_argument"]

Fields = tuple[int, bytes]
"""An operation's fields as ``op_fields`` packs them: their number, and their msgpack encoding
without an array header."""


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
        self, client: Redis | RedisCluster, keys: Sequence[str], ops: Sequence[Fields]
    ) -> list[Any]:
        """Run ``ops`` (each an operation's fields, from ``op_fields``) on ``keys``, every
        operation using all of them; loads the library first where it is missing."""
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


def op_fields(fields: Sequence[int | str]) -> Fields:
    """An operation's fields (whole numbers below 2^53, strings), packed for ``ops_argument``."""
    count = len(fields)
    header = 1 if count < 16 else 3 if count < 65_536 else 5  # msgpack's array headers
    return count, _pack(fields)[header:]


def ops_argument(ops: Sequence[tuple[int, int, Fields]]) -> bytes:
    """The flat msgpack array of operations, each given as (its first key's index from 1, its
    number of keys, its fields) and written as those two numbers, its number of fields, then
    the fields."""
    items = 0
    parts = []
    for first, count, (size, fields) in ops:
        items += 3 + size
        parts.append(_uint(first) + _uint(count) + _uint(size) + fields)
    return b"\xdd" + items.to_bytes(4, "big") + b"".join(parts)


def _uint(n: int) -> bytes:
    """A whole number >= 0 as msgpack (below 128: one byte, itself)."""
    return _SMALL[n] if n < 128 else _pack(n)


_SMALL = [bytes((n,)) for n in range(128)]
_pack = Packer().pack
"""One packer for the process (half the time of ``packb``, which makes one per call): it
resets after each value and runs on the event loop's thread only."""
