"""The owner index in Redis (a single server or a cluster), shared by every replica.

Two kinds of keys; every command touches one key, or keys of one hash tag::

    <prefix>:owner:{<object id>}:<kind>   hash  owner, kind, created (s), snap (JSON)
    <prefix>:owned:{<owner>}:<kind>       zset  member <object id>, score <created_at, s>

The hash is the truth about ownership: ``claim.lua`` writes it first-owner-wins in one atomic
call, and only a claimant who holds the object then adds it to its sorted set. The sorted set
only lists: ``page.lua`` cuts a page from it atomically, and each listed object's hash is read
back, so an entry left behind by a release that failed halfway is skipped (and removed), never
shown. Nothing expires: an object is forgotten on its DELETE.

Every call is bounded by ``timeout_ms``; a timeout or a Redis or socket error becomes
``OwnershipUnavailable`` here, at the boundary, and nowhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from importlib.resources import files
from typing import Any, TypeVar

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from sentinel.redis_io.client import hash_tag
from sentinel.tenancy.index import OwnershipUnavailable, check_limit, placeholder
from sentinel.tenancy.objects import ObjectKind, ObjectRef

__all__ = ["RedisOwners", "owned_key", "owner_key"]

_T = TypeVar("_T")
_PAGE_TRIES = 3
"""Cuts of one page while left-behind entries turn up (each cut removes those it found)."""


def owner_key(prefix: str, ref: ObjectRef) -> str:
    """The hash holding who owns ``ref``, hash-tagged by the object id."""
    return f"{prefix}:owner:{hash_tag(ref.id)}:{ref.kind}"


def owned_key(prefix: str, owner: str, kind: ObjectKind) -> str:
    """The sorted set of ``owner``'s objects of ``kind``, hash-tagged by the owner."""
    return f"{prefix}:owned:{hash_tag(owner)}:{kind}"


class RedisOwners:
    """Object owners held in Redis, exact across replicas; raises rather than guesses."""

    def __init__(
        self, client: Redis | RedisCluster, timeout_ms: int, *, prefix: str = "sentinel"
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the key prefix must not contain braces")
        self._client = client
        self._timeout_s = timeout_ms / 1000
        self._prefix = prefix
        package = files("sentinel.tenancy")
        self._claim = client.register_script(package.joinpath("claim.lua").read_text("utf-8"))
        self._page = client.register_script(package.joinpath("page.lua").read_text("utf-8"))

    async def owner_of(self, ref: ObjectRef) -> str | None:
        """The owner of ``ref``, or None when the gateway never saw it created."""
        owner = await self._bounded(self._client.hget(owner_key(self._prefix, ref), "owner"))
        return None if owner is None else _text(owner)

    async def claim(
        self, ref: ObjectRef, owner: str, created_at: int, snapshot: bytes | None
    ) -> None:
        """Record that ``owner`` created ``ref``; the first owner wins for good."""
        args: list[str | int | bytes] = [owner, ref.kind, created_at, "0", b""]
        if snapshot is not None:
            args[3:] = ["1", snapshot]
        keys = [owner_key(self._prefix, ref)]
        holder, created = await self._bounded(self._claim(keys=keys, args=args))
        if _text(holder) == owner:
            # Also repairs a listing that a claim cut short between its two calls.
            zset = owned_key(self._prefix, owner, ref.kind)
            await self._bounded(self._client.zadd(zset, {ref.id: int(created)}))

    async def release(self, ref: ObjectRef) -> None:
        """Forget ``ref`` (after its successful DELETE); unknown objects are no error."""
        key = owner_key(self._prefix, ref)
        owner = await self._bounded(self._client.hget(key, "owner"))
        if owner is None:
            return
        await self._bounded(self._client.delete(key))
        zset = owned_key(self._prefix, _text(owner), ref.kind)
        await self._bounded(self._client.zrem(zset, ref.id))

    async def page(
        self, owner: str, kind: ObjectKind, *, after: str | None, limit: int, ascending: bool
    ) -> tuple[list[bytes], bool]:
        """Up to ``limit`` snapshots of ``owner``'s objects of ``kind``, and whether more follow."""
        check_limit(limit)
        zset = owned_key(self._prefix, owner, kind)
        args: list[str | int] = [after or "", limit + 1, "1" if ascending else "0"]
        for _ in range(_PAGE_TRIES):
            ids = [_text(member) for member in await self._bounded(self._page([zset], args))]
            rows = await self._read(kind, ids)
            stale = [object_id for object_id, row in zip(ids, rows, strict=True) if row[0] != owner]
            if not stale:
                break
            await self._bounded(self._client.zrem(zset, *stale))
        snapshots = [
            snap or placeholder(ObjectRef(kind, object_id))
            for object_id, (holder, snap) in zip(ids, rows, strict=True)
            if holder == owner
        ]
        return snapshots[:limit], len(snapshots) > limit

    async def _read(self, kind: ObjectKind, ids: list[str]) -> list[tuple[str | None, bytes]]:
        """The owner and snapshot stored for each of ``ids`` (one pipelined round trip)."""
        if not ids:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for object_id in ids:
                # A pipeline only queues each call; execute() sends them all and awaits.
                _ = pipe.hmget(owner_key(self._prefix, ObjectRef(kind, object_id)), "owner", "snap")
            replies: list[list[Any]] = await self._bounded(pipe.execute())
        return [
            (None if holder is None else _text(holder), _bytes(snap)) for holder, snap in replies
        ]

    async def _bounded(self, call: Awaitable[_T]) -> _T:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await call
        except (TimeoutError, RedisError, OSError) as exc:
            raise OwnershipUnavailable(reason=f"redis: {type(exc).__name__}") from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str | None) -> bytes:
    """A stored snapshot as bytes (b"" when none), also from a client that decodes replies."""
    return value.encode() if isinstance(value, str) else value or b""
