"""The key store contract, run unchanged against SQLite, Redis and a Redis Cluster."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis, RedisCluster

from sentinel.keys.records import KeyRecord, new_key_id, new_secret, prefix_of, secret_digest
from sentinel.keys.redis_store import RedisKeyStore
from sentinel.keys.sqlite_store import SqliteKeyStore
from sentinel.keys.store import (
    AuditEntry,
    Conflict,
    IdempotentReply,
    KeyStore,
    KeyStoreUnavailable,
    Refused,
    new_audit_id,
)
from tests.support.redis_server import RedisServer


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.e2e),
        pytest.param("cluster", marks=pytest.mark.e2e),
    ]
)
async def store(
    request: pytest.FixtureRequest, prefix: str, tmp_path: Path
) -> AsyncIterator[KeyStore]:
    """Each key store in turn: the contract tests run unchanged against all of them."""
    if request.param == "sqlite":
        sqlite = SqliteKeyStore(tmp_path, audit_max_entries=100)
        yield sqlite
        await sqlite.aclose()
        return
    client: Redis | RedisCluster
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        client = server.client()
    else:
        nodes: list[RedisServer] = request.getfixturevalue("redis_cluster")
        client = RedisCluster(host="127.0.0.1", port=nodes[0].port, socket_timeout=2)
    try:
        yield RedisKeyStore(client, 2_000, prefix=prefix, audit_max_entries=100)
    finally:
        await client.aclose()


def record(name: str = "team-x", **changes: object) -> KeyRecord:
    """A fresh record of a fresh secret."""
    secret = new_secret()
    base = KeyRecord(
        id=new_key_id(),
        name=name,
        digest=secret_digest(secret).hex(),
        key_prefix=prefix_of(secret),
        created_at=int(time.time()),
        limits={"rpm": 60},
        budgets={"usd_total": 5_000_000_000},
        metadata={"owner": "x"},
    )
    return base.changed(**changes) if changes else base


def audit(action: str, key: KeyRecord) -> AuditEntry:
    """An audit entry of ``action`` on ``key``."""
    return AuditEntry(new_audit_id(), int(time.time()), "admin", action, key.id, None, {})


async def test_a_created_key_is_found_by_id_and_by_digest(store: KeyStore) -> None:
    """What create stores, get and find return whole."""
    key = record()
    assert await store.create(key, audit("key.created", key)) is None
    assert await store.get(key.id) == key
    assert await store.find(key.digest) == key
    assert await store.find("00" * 32) is None
    assert await store.get("key_missing") is None


async def test_a_live_name_is_unique(store: KeyStore) -> None:
    """A second key of a live name is refused; once the first is revoked, the name is free."""
    first = record("shared")
    await store.create(first, audit("key.created", first))
    with pytest.raises(Refused) as refused:
        second = record("shared")
        await store.create(second, audit("key.created", second))
    assert refused.value.what == "name"
    revoked = first.changed(revoked_at=int(time.time()))
    await store.replace(revoked, audit("key.revoked", revoked))
    third = record("shared")
    await store.create(third, audit("key.created", third))


async def test_a_digest_opens_one_key(store: KeyStore) -> None:
    """An imported digest that another key holds is refused."""
    first = record("one")
    await store.create(first, audit("key.created", first))
    twin = record("two", digest=first.digest)
    with pytest.raises(Refused) as refused:
        await store.create(twin, audit("key.created", twin))
    assert refused.value.what == "digest"


async def test_replace_is_compare_and_set(store: KeyStore) -> None:
    """A replace of a stale version is a Conflict; of a missing record a LookupError."""
    key = record()
    await store.create(key, audit("key.created", key))
    patched = key.changed(limits={"rpm": 1})
    await store.replace(patched, audit("key.updated", patched))
    with pytest.raises(Conflict):
        await store.replace(key.changed(limits={"rpm": 2}), audit("key.updated", key))
    with pytest.raises(LookupError):
        ghost = record()
        await store.replace(ghost.changed(), audit("key.updated", ghost))
    assert await store.get(key.id) == patched


async def test_rotation_keeps_the_old_digest_for_its_grace(store: KeyStore) -> None:
    """After a rotation both digests find the key; without a grace the old one finds nothing."""
    key = record()
    await store.create(key, audit("key.created", key))
    new = new_secret()
    until = int(time.time()) + 60
    rotated = key.changed(digest=secret_digest(new).hex(), grace=((key.digest, until),))
    await store.replace(rotated, audit("key.rotated", rotated))
    assert await store.find(key.digest) == rotated
    assert await store.find(rotated.digest) == rotated
    again = rotated.changed(digest=secret_digest(new_secret()).hex(), grace=())
    await store.replace(again, audit("key.rotated", again))
    assert await store.find(key.digest) is None
    assert await store.find(rotated.digest) is None
    assert await store.find(again.digest) == again


async def test_pages_follow_creation_order(store: KeyStore) -> None:
    """Pages cut the keys in creation order; an unknown ``after`` is a LookupError."""
    keys = [record(f"k{i}") for i in range(5)]
    for key in keys:
        await store.create(key, audit("key.created", key))
    first, more = await store.page(2, None)
    assert [k.id for k in first] == [k.id for k in keys[:2]] and more
    rest, more = await store.page(10, first[-1].id)
    assert [k.id for k in rest] == [k.id for k in keys[2:]] and not more
    with pytest.raises(LookupError):
        await store.page(2, "key_unknown")


async def test_every_change_moves_the_version_and_names_the_key(store: KeyStore) -> None:
    """The head's version counts changes; ``changes_since`` names the keys changed since."""
    start = await store.head()
    a, b = record("a"), record("b")
    await store.create(a, audit("key.created", a))
    await store.create(b, audit("key.created", b))
    head = await store.head()
    assert head.epoch and head.version == start.version + 2
    assert await store.changes_since(start.version) == [a.id, b.id]
    assert await store.changes_since(head.version) == []


async def test_idempotency_returns_the_stored_reply(store: KeyStore) -> None:
    """A create under a remembered key creates nothing and returns the first reply."""
    first = record("idem")
    reply = IdempotentReply("hash-1", {"id": first.id, "key": None})
    assert await store.create(first, audit("key.created", first), ("k-1", reply)) is None
    assert await store.remembered("k-1") == reply
    second = record("idem-2")
    again = await store.create(second, audit("key.created", second), ("k-1", reply))
    assert again == reply
    assert await store.get(second.id) is None


async def test_last_used_is_kept_apart_from_changes(store: KeyStore) -> None:
    """``touch`` records last use without a new version."""
    key = record()
    await store.create(key, audit("key.created", key))
    version = (await store.head()).version
    await store.touch({key.id: 1_700_000_000})
    assert await store.last_used([key.id, "key_other"]) == {key.id: 1_700_000_000}
    assert (await store.head()).version == version


async def test_the_audit_is_newest_first_and_bounded(store: KeyStore) -> None:
    """Audit pages run newest first; past ``audit_max_entries`` the oldest go."""
    key = record()
    await store.create(key, audit("key.created", key))
    current = key
    for _ in range(105):
        current = current.changed(metadata={"n": current.version})
        await store.replace(current, audit("key.updated", current))
    entries, more = await store.audit_page(100, None)
    assert len(entries) == 100 and not more
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)
    assert all(e["action"] == "key.updated" for e in entries)
    older, _ = await store.audit_page(10, ids[49])
    assert [e["id"] for e in older] == ids[50:60]


async def test_a_dead_redis_is_unavailable_not_unknown(private_redis: RedisServer) -> None:
    """With Redis down every call raises KeyStoreUnavailable, never answers None."""
    client = private_redis.client()
    store = RedisKeyStore(client, 100)
    private_redis.stop()
    try:
        with pytest.raises(KeyStoreUnavailable):
            await store.find("00" * 32)
        with pytest.raises(KeyStoreUnavailable):
            await store.head()
    finally:
        await client.aclose()


async def test_every_change_is_announced(store: KeyStore) -> None:
    """``listen`` calls back once subscribed and on every commit (SQLite, one process, has no
    announcements: it returns at once)."""
    calls: list[float] = []
    seen = asyncio.Event()

    def changed() -> None:
        calls.append(time.monotonic())
        seen.set()

    task = asyncio.create_task(store.listen(changed))
    try:
        if isinstance(store, SqliteKeyStore):
            await asyncio.wait_for(task, 5)
            assert not calls
            return
        await asyncio.wait_for(seen.wait(), 5)
        seen.clear()
        key = record()
        await store.create(key, audit("key.created", key))
        await asyncio.wait_for(seen.wait(), 5)
        assert len(calls) == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
