"""Three real gateway replicas on one redis-server: how fast a change reaches every replica.

Each measurement runs from just before the admin call is sent on replica 0 until each replica
first answers with the change (``GET /v1/key`` polled in a tight loop), so it includes the
admin call itself. The bound asserted is the issue's worst case (1 s); p50/p99/max are
printed for the record (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest

from tests.conftest import UPSTREAM_KEY, Gateway, Upstream, running_gateway
from tests.keys.support import ADMIN_TOKEN, Admin, keys_config
from tests.support.processes import free_port, sentinel_process
from tests.support.redis_server import RedisServer

ROUNDS = 15
WORST_S = 1.0

Check = Callable[[int, dict[str, object]], bool]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that opens a connection per request: on a kept-alive loopback connection
    each round trip here costs a ~40 ms delayed ACK, which would swamp what is measured."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


@pytest.fixture
async def replicas(
    upstream: Upstream, private_redis: RedisServer, tmp_path: Path
) -> AsyncIterator[list[Gateway]]:
    """Three gateways sharing the private Redis."""
    config = keys_config(upstream.url, tmp_path, private_redis.port, replicas=3)
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(running_gateway(config)) for _ in range(3)]


async def own_view(
    http: aiohttp.ClientSession, gateway: Gateway | str, key: str
) -> tuple[int, dict[str, object]]:
    """``GET /v1/key`` on one replica (a gateway or its URL): its status and reply."""
    url = gateway if isinstance(gateway, str) else gateway.url
    async with http.get(f"{url}/v1/key", headers={"authorization": f"Bearer {key}"}) as response:
        reply: dict[str, object] = await response.json()
        return response.status, reply


async def time_until(
    http: aiohttp.ClientSession,
    replicas: list[Gateway] | list[str],
    key: str,
    check: Check,
    started: float,
    act: Awaitable[object] | None = None,
) -> list[float]:
    """Seconds from ``started`` until each replica's view of ``key`` passes ``check``."""

    async def one(gateway: Gateway | str) -> float:
        deadline = started + 5 * WORST_S
        while time.monotonic() < deadline:
            status, reply = await own_view(http, gateway, key)
            if check(status, reply):
                return time.monotonic() - started
        return float("inf")

    watch = asyncio.gather(*(one(g) for g in replicas))
    if act is not None:
        await act
    return list(await watch)


def summary(name: str, samples: list[float]) -> str:
    """p50/p99/max of ``samples`` in milliseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"{name}: n={len(ordered)} p50={statistics.median(ordered) * 1000:.1f}ms "
        f"p99={p99 * 1000:.1f}ms max={ordered[-1] * 1000:.1f}ms"
    )


async def test_changes_reach_every_replica_within_the_bound(
    replicas: list[Gateway], http: aiohttp.ClientSession
) -> None:
    """Create, patch, revoke and expiry reach all three replicas within 1 s (p99 printed)."""
    admin = Admin(http, replicas[0].url)
    created_s: list[float] = []
    patched_s: list[float] = []
    revoked_s: list[float] = []
    expired_s: list[float] = []
    for round_no in range(ROUNDS):
        started = time.monotonic()
        created = await admin.create(name=f"prop-{round_no}", rpm=100)
        key, path = created["key"], f"/admin/v1/keys/{created['id']}"
        created_s += await time_until(http, replicas, key, lambda s, _: s == 200, started)

        started = time.monotonic()
        patched_s += await time_until(
            http,
            replicas,
            key,
            lambda s, r: s == 200 and r["limits"]["rpm"]["limit"] == 7,  # type: ignore[index]
            started,
            admin.call("PATCH", path, {"rpm": 7}),
        )

        started = time.monotonic()
        revoked_s += await time_until(
            http,
            replicas,
            key,
            lambda s, _: s == 401,
            started,
            admin.call("POST", path + "/revoke"),
        )
    for round_no in range(3):
        expires_at = int(time.time()) + 2
        doomed = await admin.create(name=f"doomed-{round_no}", expires_at=expires_at)
        for gateway in replicas:  # every replica holds it before it expires
            assert (await own_view(http, gateway, doomed["key"]))[0] == 200
        await asyncio.sleep(max(0.0, expires_at - time.time() - 0.2))
        started = time.monotonic() + max(0.0, expires_at - time.time())
        samples = await time_until(http, replicas, doomed["key"], lambda s, _: s == 401, started)
        expired_s += [max(0.0, s) for s in samples]
    report = [
        summary("create", created_s),
        summary("patch", patched_s),
        summary("revoke", revoked_s),
        summary("expiry", expired_s),
    ]
    print("\npropagation over 3 replicas:\n  " + "\n  ".join(report))
    for samples in (created_s, patched_s, revoked_s, expired_s):
        assert max(samples) <= WORST_S


async def test_a_redis_restart_keeps_known_keys_and_changes_propagate_after(
    replicas: list[Gateway], http: aiohttp.ClientSession, private_redis: RedisServer
) -> None:
    """Redis down: cached keys work, unknown ones get 503 (never admitted). Redis back (empty,
    a new epoch): what it lost is gone everywhere, and new changes reach every replica."""
    admin = Admin(http, replicas[0].url)
    known = await admin.create(name="known")
    for gateway in replicas:
        assert (await own_view(http, gateway, known["key"]))[0] == 200
    private_redis.stop()
    for gateway in replicas:
        assert (await own_view(http, gateway, known["key"]))[0] == 200
        status, reply = await own_view(http, gateway, "sk-unknown-0123456789abcdef0123456789ab")
        assert status == 503, reply
        assert reply["error"]["code"] == "key_store_unavailable"  # type: ignore[index]
    status, _ = await admin.call("POST", "/admin/v1/keys", {"name": "while-down"})
    assert status == 503
    private_redis.start()
    lost = time.monotonic()
    forgotten = await time_until(http, replicas, known["key"], lambda s, _: s == 401, lost)
    assert max(forgotten) <= 5 * WORST_S  # reconnect back-off included
    started = time.monotonic()
    fresh = await _create_when_back(admin, "after-restart")
    created = await time_until(http, replicas, fresh["key"], lambda s, _: s == 200, started)
    started = time.monotonic()
    path = f"/admin/v1/keys/{fresh['id']}/revoke"
    revoked = await time_until(
        http, replicas, fresh["key"], lambda s, _: s == 401, started, admin.call("POST", path)
    )
    print(
        "\nafter a Redis restart:\n  "
        + "\n  ".join(
            [
                summary("forget lost keys", forgotten),
                summary("create", created),
                summary("revoke", revoked),
            ]
        )
    )
    assert max(revoked) <= WORST_S


async def _create_when_back(admin: Admin, name: str) -> dict[str, Any]:
    """Create a key as soon as the admin API can reach Redis again."""
    deadline = time.monotonic() + 5
    while True:
        status, reply = await admin.call("POST", "/admin/v1/keys", {"name": name})
        if status == 201 or time.monotonic() > deadline:
            assert status == 201, reply
            from tests.conftest import SECRETS

            SECRETS.add(str(reply["key"]))
            return reply
        await asyncio.sleep(0.02)


async def test_missed_announcements_are_caught_by_the_version_check(
    replicas: list[Gateway], http: aiohttp.ClientSession, private_redis: RedisServer
) -> None:
    """With every subscription cut just before a revoke, the version check still refuses the
    key on every replica within 1 s."""
    admin = Admin(http, replicas[0].url)
    samples: list[float] = []
    client = private_redis.client()
    try:
        for round_no in range(5):
            created = await admin.create(name=f"missed-{round_no}")
            for gateway in replicas:
                assert (await own_view(http, gateway, created["key"]))[0] == 200
            kill = cast(Callable[..., Awaitable[object]], client.execute_command)
            await kill("CLIENT", "KILL", "TYPE", "pubsub")
            started = time.monotonic()
            path = f"/admin/v1/keys/{created['id']}/revoke"
            samples += await time_until(
                http,
                replicas,
                created["key"],
                lambda s, _: s == 401,
                started,
                admin.call("POST", path),
            )
    finally:
        await client.aclose()
    print("\n" + summary("revoke with subscriptions cut", samples))
    assert max(samples) <= WORST_S


@pytest.mark.slow
async def test_three_serve_processes_refuse_a_revoked_key_within_the_bound(
    upstream: Upstream,
    private_redis: RedisServer,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """Three ``sentinel serve`` processes on one Redis: a key created on one works on all, and
    once revoked is refused by all, within 1 s each (p50/p99/max printed)."""
    urls = []
    async with AsyncExitStack() as stack:
        for n in range(3):
            port = free_port()
            path = tmp_path / f"sentinel-{n}.toml"
            path.write_text(
                f'[server]\nbind = "127.0.0.1:{port}"\nstate_dir = "{tmp_path / "state"}"\n'
                f'[redis]\nurl = "redis://127.0.0.1:{private_redis.port}/0"\nreplicas = 3\n'
                "timeout_ms = 500\n"
                '[admin]\ntoken = "env:ADMIN_TOKEN"\n'
                f'[[upstreams]]\nname = "mock"\nbase_url = "{upstream.url}"\n'
                'api_key = "env:UP_KEY"\n'
            )
            log = stack.enter_context((tmp_path / f"log-{n}.txt").open("wb"))
            env = {"UP_KEY": UPSTREAM_KEY, "ADMIN_TOKEN": ADMIN_TOKEN}
            await stack.enter_async_context(sentinel_process(path, port, log, env))
            urls.append(f"http://127.0.0.1:{port}")
        admin = Admin(http, urls[0])
        created_s: list[float] = []
        revoked_s: list[float] = []
        for round_no in range(10):
            started = time.monotonic()
            created = await admin.create(name=f"proc-{round_no}")
            created_s += await time_until(
                http, urls, created["key"], lambda s, _: s == 200, started
            )
            started = time.monotonic()
            path_ = f"/admin/v1/keys/{created['id']}/revoke"
            revoked_s += await time_until(
                http,
                urls,
                created["key"],
                lambda s, _: s == 401,
                started,
                admin.call("POST", path_),
            )
        logs = b"".join((tmp_path / f"log-{n}.txt").read_bytes() for n in range(3))
    print(
        "\nthree sentinel serve processes:\n  "
        + "\n  ".join([summary("create", created_s), summary("revoke", revoked_s)])
    )
    assert max(created_s) <= WORST_S and max(revoked_s) <= WORST_S
    assert b"admin_audit" in logs and ADMIN_TOKEN.encode() not in logs
