"""The runtime keys' cached source: hits without I/O, refusals, catching up, failing closed;
and a revocation that lets a stream in flight finish."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from sentinel.config.limits import LimitDefaults
from sentinel.errors import AuthenticationFailed
from sentinel.keys.records import KeyRecord, new_key_id, new_secret, prefix_of, secret_digest
from sentinel.keys.source import RuntimeKeys
from sentinel.keys.sqlite_store import SqliteKeyStore
from sentinel.keys.store import AuditEntry, KeyStoreUnavailable, new_audit_id
from sentinel.mock import MockSettings, serve
from tests.conftest import running_gateway
from tests.keys.support import Admin, keys_config


@pytest.fixture
async def keys(tmp_path: Path) -> AsyncIterator[RuntimeKeys]:
    """Runtime keys over a SQLite store of their own."""
    runtime = RuntimeKeys(SqliteKeyStore(tmp_path), LimitDefaults())
    yield runtime
    await runtime.aclose()


async def stored(keys: RuntimeKeys, **fields: object) -> tuple[str, KeyRecord]:
    """A key written to the store behind ``keys``' back (as another replica would)."""
    secret = new_secret()
    record = KeyRecord(
        id=new_key_id(),
        name=f"k-{secret[-6:]}",
        digest=secret_digest(secret).hex(),
        key_prefix=prefix_of(secret),
        created_at=int(time.time()),
        **fields,  # type: ignore[arg-type]
    )
    audit = AuditEntry(
        new_audit_id(), int(time.time()), "admin", "key.created", record.id, None, {}
    )
    await keys.store.create(record, audit)
    return secret, record


async def resolve(keys: RuntimeKeys, secret: str) -> object:
    """What ``keys`` answers for ``secret``."""
    raw = secret.encode()
    return await keys.resolve(raw, hashlib.sha256(raw).digest())


async def test_a_known_key_is_served_from_the_cache_even_with_the_store_gone(
    keys: RuntimeKeys,
) -> None:
    """Once looked up, a key resolves with no store at all; an unseen one is then a 503."""
    secret, record = await stored(keys, limits={"rpm": 5})
    principal = await resolve(keys, secret)
    assert getattr(principal, "id", None) == record.id
    await keys.store.aclose()  # every store call fails from here on
    assert getattr(await resolve(keys, secret), "id", None) == record.id
    with pytest.raises(KeyStoreUnavailable) as refused:
        await resolve(keys, new_secret())
    assert refused.value.status == 503 and refused.value.code == "key_store_unavailable"


async def test_an_unknown_key_is_forgotten_once_anything_changes(keys: RuntimeKeys) -> None:
    """An unknown digest is remembered as unknown, until a change is seen."""
    await keys.sync()
    secret = new_secret()
    assert await resolve(keys, secret) is None
    record = KeyRecord(
        new_key_id(), "late", secret_digest(secret).hex(), prefix_of(secret), int(time.time())
    )
    audit = AuditEntry(
        new_audit_id(), int(time.time()), "admin", "key.created", record.id, None, {}
    )
    await keys.store.create(record, audit)
    assert await resolve(keys, secret) is None  # still remembered as unknown
    await keys.sync()
    assert getattr(await resolve(keys, secret), "id", None) == record.id


async def test_revoked_and_expired_keys_get_the_plain_401(keys: RuntimeKeys) -> None:
    """A change caught up by ``sync`` refuses a cached key; expiry needs no change at all."""
    secret, record = await stored(keys)
    await keys.sync()
    assert await resolve(keys, secret) is not None
    revoked = record.changed(revoked_at=int(time.time()))
    audit = AuditEntry(
        new_audit_id(), int(time.time()), "admin", "key.revoked", record.id, None, {}
    )
    await keys.store.replace(revoked, audit)
    await keys.sync()
    with pytest.raises(AuthenticationFailed) as refused:
        await resolve(keys, secret)
    assert refused.value.as_json() == AuthenticationFailed().as_json()
    soon, _ = await stored(keys, expires_at=int(time.time()) + 1)
    assert await resolve(keys, soon) is not None
    await asyncio.sleep(max(0.0, int(time.time()) + 1 - time.time()) + 0.01)
    with pytest.raises(AuthenticationFailed):
        await resolve(keys, soon)


async def test_a_revoked_key_finishes_the_stream_it_started(tmp_path: Path) -> None:
    """Revocation refuses the next request; a stream admitted before it runs to its end."""
    runner, port = await serve("127.0.0.1", 0, MockSettings(chunks=10, chunk_delay_ms=50))
    try:
        config = keys_config(f"http://127.0.0.1:{port}/v1", tmp_path)
        async with aiohttp.ClientSession() as http, running_gateway(config) as gateway:
            admin = Admin(http, gateway.url)
            created = await admin.create(name="streamer")
            headers = {"authorization": f"Bearer {created['key']}"}
            body = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
            }
            async with http.post(
                f"{gateway.base_url}/chat/completions", json=body, headers=headers
            ) as stream:
                assert stream.status == 200
                first = await stream.content.readline()
                status, _ = await admin.call("POST", f"/admin/v1/keys/{created['id']}/revoke")
                assert status == 200
                rest = await stream.read()
            assert first and b"data: [DONE]" in rest
            async with http.post(
                f"{gateway.base_url}/chat/completions", json=body, headers=headers
            ) as again:
                assert again.status == 401
    finally:
        await runner.cleanup()


async def test_the_first_write_to_an_empty_store_forgets_nothing(keys: RuntimeKeys) -> None:
    """A store's first write gives it its epoch; a replica that saw it empty catches up rather
    than starting over, so keys it holds still work when the store goes away."""
    await keys.sync()  # the empty store: no epoch yet
    secret, record = await stored(keys)
    assert getattr(await resolve(keys, secret), "id", None) == record.id
    await keys.sync()
    await keys.store.aclose()
    assert getattr(await resolve(keys, secret), "id", None) == record.id


class CountingStore(SqliteKeyStore):
    """The SQLite store, counting lookups by digest."""

    finds = 0

    async def find(self, digest: str) -> KeyRecord | None:
        self.finds += 1
        return await super().find(digest)


async def test_one_lookup_serves_every_waiting_request(tmp_path: Path) -> None:
    """100 concurrent first requests of one key make one store lookup; a waiter that goes
    away, or a first asker that does, leaves the others their answer."""
    store = CountingStore(tmp_path)
    keys = RuntimeKeys(store, LimitDefaults())
    try:
        secret, record = await stored(keys)
        answers = await asyncio.gather(*(resolve(keys, secret) for _ in range(100)))
        assert {getattr(a, "id", None) for a in answers} == {record.id}
        assert store.finds == 1
        other, second = await stored(keys)
        first = asyncio.create_task(resolve(keys, other))
        await asyncio.sleep(0)  # the first asker is looking it up
        waiters = [asyncio.create_task(resolve(keys, other)) for _ in range(3)]
        await asyncio.sleep(0)
        first.cancel()
        waiters[0].cancel()
        results = await asyncio.gather(*waiters[1:])
        assert {getattr(r, "id", None) for r in results} == {second.id}
    finally:
        await keys.aclose()
