"""Two gateways sharing one real Redis share their breakers; without Redis each keeps its own."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sentinel.config import RedisConfig
from sentinel.mock import MockSettings, serve
from tests.conftest import Gateway, StartGateway, Upstream
from tests.support.redis_server import RedisServer
from tests.upstream.test_failover import ADMIN_TOKEN, AUTH, OTHER, calls, chat, config, up

COOLDOWN_MS = 1_500


@pytest.fixture
async def primary(http: aiohttp.ClientSession) -> AsyncIterator[tuple[Upstream, list[Any]]]:
    """A mock upstream answering 500 to everything; ``heal`` restarts it healthy, same port."""
    runner, port = await serve("127.0.0.1", 0, MockSettings(fault="status:500"))
    runners = [runner]
    yield Upstream(port=port, session=http), runners
    for r in runners:
        await r.cleanup()


async def heal(primary: tuple[Upstream, list[Any]]) -> None:
    upstream, runners = primary
    await runners.pop().cleanup()
    runner, _ = await serve("127.0.0.1", upstream.port, MockSettings())
    runners.append(runner)


async def primary_state(http: aiohttp.ClientSession, gateway: Gateway) -> tuple[str, bool]:
    """The primary's breaker state on ``gateway``, and whether it lets calls through."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with http.get(f"{gateway.url}/admin/v1/upstreams", headers=admin) as r:
        entry = next(e for e in (await r.json())["data"] if e["name"] == "primary")
    return entry["state"], entry["usable"]


async def until_state(
    http: aiohttp.ClientSession, gateway: Gateway, state: str, usable: bool, within_s: float = 5
) -> None:
    for _ in range(int(within_s / 0.02)):
        if await primary_state(http, gateway) == (state, usable):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"primary never became {state} (usable={usable})")


async def test_a_breaker_opened_on_one_gateway_is_skipped_by_the_other(
    primary: tuple[Upstream, list[Any]],
    upstream: Upstream,
    private_redis: RedisServer,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
) -> None:
    """B fails over without calling the primary A saw fail for two keys; after the cooldown
    both probe."""
    broken = primary[0]
    settings = config(
        up("primary", broken.url),
        up("backup", upstream.url),
        breaker_failures=1,
        breaker_cooldown_ms=COOLDOWN_MS,
    )
    redis = RedisConfig(url=f"redis://127.0.0.1:{private_redis.port}/0", timeout_ms=1_000)
    settings = dataclasses.replace(settings, redis=redis)
    a = await start_gateway(settings)
    b = await start_gateway(settings)

    for headers in (AUTH, OTHER):  # primary 500, then the backup; the second key opens it
        assert (await chat(http, a.base_url, headers=headers))[0] == 200
    assert await calls(broken) == 2
    await until_state(http, b, "open", usable=False)
    status, _, body = await chat(http, b.base_url)
    assert status == 200 and body["usage"]["total_tokens"] > 0
    assert await calls(broken) == 2  # B never called it
    assert await calls(upstream) == 3

    await heal(primary)
    for gateway in (a, b):
        await until_state(http, gateway, "open", usable=True)
        assert (await chat(http, gateway.base_url))[0] == 200  # the probe, to the primary
        assert await primary_state(http, gateway) == ("closed", True)
    assert (await primary[0].stats())["requests"] == 2  # one probe per gateway
    assert await calls(upstream) == 3
    await asyncio.sleep(0.6)  # a sharing round: nothing reopens them
    assert await primary_state(http, a) == ("closed", True)
    assert await primary_state(http, b) == ("closed", True)


async def test_without_redis_breakers_stay_local_and_clients_see_no_error(
    primary: tuple[Upstream, list[Any]],
    upstream: Upstream,
    private_redis: RedisServer,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
) -> None:
    """With Redis down, each gateway's breaker still opens on its own failures."""
    broken = primary[0]
    private_redis.stop()
    settings = config(
        up("primary", broken.url),
        up("backup", upstream.url),
        breaker_failures=1,
        breaker_cooldown_ms=60_000,
    )
    redis = RedisConfig(url=f"redis://127.0.0.1:{private_redis.port}/0", timeout_ms=100)
    a = await start_gateway(dataclasses.replace(settings, redis=redis))
    for headers in (AUTH, OTHER, AUTH):
        assert (await chat(http, a.base_url, headers=headers))[0] == 200
    assert await calls(broken) == 2  # opened by the second key's failure, skipped since
    assert await calls(upstream) == 3
    assert await primary_state(http, a) == ("open", False)
