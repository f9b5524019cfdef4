"""Exact charges on every way out, and no overshoot when Redis fails or restarts mid-load."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

from sentinel.config import Config, RedisConfig, UpstreamConfig
from sentinel.config.budgets import Budgets, parse_usd
from sentinel.limits.redis_store import money_keys
from sentinel.mock import MockSettings, serve
from sentinel.money.prices import charge_nano
from tests.conftest import UPSTREAM_KEY, StartGateway, Upstream
from tests.money.test_budgets_e2e import budget_config, chat, hold_of
from tests.support.redis_server import RedisServer, start_redis_server

MODEL = "gpt-4o-mini"


def durable_redis(workdir: Path) -> RedisServer:
    """A redis-server that persists every write (appendfsync always), as budgets need."""
    return start_redis_server("--appendonly", "yes", "--appendfsync", "always", workdir=workdir)


async def recorded_costs(path: Path, name: str, answered: int) -> list[Decimal]:
    """The costs of ``name``'s requests that got a reply, once ``answered`` are recorded."""
    deadline = time.monotonic() + 15
    while True:
        lines = path.read_bytes().splitlines() if path.exists() else []
        records = [orjson.loads(line) for line in lines]
        mine = [Decimal(r["cost_usd"]) for r in records if r["key"] == name and r["status"] != 402]
        if len(mine) >= answered:
            return mine
        assert time.monotonic() < deadline, f"{len(mine)} of {answered} records"
        await asyncio.sleep(0.05)


async def charged(server: RedisServer, key_id: str, field: str = "usd_total") -> int:
    """What Redis counts as charged to ``key_id``."""
    client: Redis = server.client()
    try:
        value = await client.hget(money_keys("sentinel", key_id)[0], field)
    finally:
        await client.aclose()
    return int(value or 0)


async def until_charged(server: RedisServer, key_id: str, expected: int) -> int:
    """Wait (bounded) for the write-back after an outage to bring Redis to ``expected``."""
    deadline = time.monotonic() + 15
    while (value := await charged(server, key_id)) != expected:
        assert time.monotonic() < deadline, f"charged {value}, expected {expected}"
        await asyncio.sleep(0.1)
    return value


async def test_json_stream_disconnect_and_failover_charge_exactly_what_was_recorded(
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    """Whatever the way out, the Redis counter equals the sum of the records' costs."""
    runner, port = await serve("127.0.0.1", 0, MockSettings(fault="status:503"))
    try:
        name = f"exact-{uuid.uuid4().hex[:8]}"
        key = f"sk-test-{name}-0123456789"
        redis = RedisConfig(url=f"redis://127.0.0.1:{redis_server.port}/0")
        config = budget_config(upstream, tmp_path, key, name, Budgets(usd_total=10**9), redis=redis)
        broken = UpstreamConfig(
            name="broken", base_url=f"http://127.0.0.1:{port}/v1", api_key=UPSTREAM_KEY
        )
        failover = dataclasses.replace(config, upstreams=(broken, *config.upstreams))
        gateway = await start_gateway(failover)
        auth = {"Authorization": f"Bearer {key}"}
        answered = 0
        status, _, _ = await chat(http, gateway, key)  # JSON, after failing over
        answered += status == 200
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
        async with http.post(f"{gateway.base_url}/chat/completions", json=body, headers=auth) as r:
            assert r.status == 200
            await r.read()
            answered += 1
        slow = {**auth, "x-mock-chunks": "40", "x-mock-chunk-delay-ms": "20"}
        async with aiohttp.ClientSession() as leaving:
            async with leaving.post(
                f"{gateway.base_url}/chat/completions", json=body, headers=slow
            ) as r:
                for _ in range(4):
                    await r.content.readline()
        answered += 1
        died = {**auth, "x-mock-fault": "die-after:3", "x-mock-chunks": "20"}
        async with http.post(f"{gateway.base_url}/chat/completions", json=body, headers=died) as r:
            await r.read()
            answered += 1
        assert config.usage.jsonl_path is not None
        costs = await recorded_costs(config.usage.jsonl_path, name, answered)
        expected = sum(charge_nano(c) for c in costs)
        assert expected > 0
        assert await until_charged(redis_server, f"cfg:{name}", expected) == expected
        client = redis_server.client()
        try:
            money = money_keys("sentinel", f"cfg:{name}")
            assert await client.zcard(money[1]) == 0  # every hold was released
            assert int(await client.hget(money[0], "held") or 0) == 0
        finally:
            await client.aclose()
    finally:
        await runner.cleanup()


async def test_the_fallback_admits_only_a_share_of_what_was_left(
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    """With Redis down, two replicas admit at most half each of the remaining amount they
    last saw, a key neither has seen gets nothing, and after Redis returns the counter holds
    every charge, within the budget."""
    server = durable_redis(tmp_path)
    try:
        probe_gateway = await start_gateway(
            budget_config(upstream, tmp_path / "p", "sk-unused-0123456789", "probe", Budgets())
        )
        hold = await hold_of(http, probe_gateway)
        name, key = "shared", "sk-test-shared-0123456789"
        budget = 20 * hold
        redis = RedisConfig(url=f"redis://127.0.0.1:{server.port}/0", replicas=2)
        configs = [
            budget_config(
                upstream, tmp_path / str(i), key, name, Budgets(usd_total=budget), redis=redis
            )
            for i in range(2)
        ]
        gateways = [await start_gateway(c) for c in configs]
        seen: list[int] = []
        for gateway in gateways:  # each replica learns what is left
            status, headers, _ = await chat(http, gateway, key)
            assert status == 200
            seen.append(parse_usd(headers["x-sentinel-budget-remaining-usd"]))
        server.stop()
        results = await asyncio.gather(*(chat(http, gateways[i % 2], key) for i in range(50)))
        statuses = [s for s, _, _ in results]
        assert 200 in statuses and 402 in statuses
        assert all(h.get("x-sentinel-degraded") == "limits" for _, h, _ in results)
        unseen, _, body = await chat(http, gateways[0], "sk-test-budget-probe-0123456789")
        assert unseen == 402 and body["error"]["code"] == "budget_exceeded"
        answered = [
            sum(1 for j, s in enumerate(statuses) if s == 200 and j % 2 == i) for i in (0, 1)
        ]
        local: list[int] = []
        for i, config in enumerate(configs):
            assert config.usage.jsonl_path is not None
            costs = await recorded_costs(config.usage.jsonl_path, name, answered[i] + 1)
            local.append(sum(charge_nano(c) for c in costs[1:]))  # the first was in Redis
        assert local[0] <= seen[0] // 2 and local[1] <= seen[1] // 2
        server.start()
        costs = await _all_costs(configs, name, sum(answered) + 2)
        expected = sum(charge_nano(c) for c in costs)
        assert await until_charged(server, f"cfg:{name}", expected) == expected <= budget
    finally:
        server.stop()


async def test_a_redis_restart_mid_load_never_overshoots(
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    """Load before, during and after a Redis restart on two replicas: every charge reaches
    Redis (written back after the outage) and the total stays within the budget."""
    server = durable_redis(tmp_path)
    try:
        probe_gateway = await start_gateway(
            budget_config(upstream, tmp_path / "p", "sk-unused-0123456789", "probe", Budgets())
        )
        hold = await hold_of(http, probe_gateway)
        name, key = "restart", "sk-test-restart-0123456789"
        budget = 25 * hold
        redis = RedisConfig(url=f"redis://127.0.0.1:{server.port}/0", replicas=2)
        configs = [
            budget_config(
                upstream, tmp_path / str(i), key, name, Budgets(usd_total=budget), redis=redis
            )
            for i in range(2)
        ]
        gateways = [await start_gateway(c) for c in configs]

        async def wave(count: int) -> list[int]:
            found = await asyncio.gather(*(chat(http, gateways[i % 2], key) for i in range(count)))
            return [status for status, _, _ in found]

        statuses = await wave(4)
        load = asyncio.ensure_future(wave(20))
        await asyncio.sleep(0.05)
        server.stop()
        statuses += await wave(10)
        server.start()
        statuses += await load
        for gateway in gateways:  # each recovery probe writes its local usage back
            await until_shared(http, gateway.url)
        statuses += await wave(16)
        assert set(statuses) <= {200, 402} and 200 in statuses
        costs = await _all_costs(configs, name, statuses.count(200))
        expected = sum(charge_nano(c) for c in costs)
        assert await until_charged(server, f"cfg:{name}", expected) == expected
        assert expected <= budget
    finally:
        server.stop()


async def until_shared(http: aiohttp.ClientSession, url: str) -> None:
    """Wait until the gateway at ``url`` decides on Redis again (its local share written back)."""
    deadline = time.monotonic() + 10
    while True:
        async with http.get(url + "/readyz") as reply:
            if (await reply.json())["store"] == "redis":
                return
        assert time.monotonic() < deadline, "the limits never recovered"
        await asyncio.sleep(0.05)


async def _all_costs(configs: list[Config], name: str, answered: int) -> list[Decimal]:
    """The costs recorded by every replica, once ``answered`` replies are recorded in all."""
    deadline = time.monotonic() + 15
    while True:
        found: list[Decimal] = []
        for config in configs:
            path = config.usage.jsonl_path
            assert path is not None
            if path.exists():
                for line in path.read_bytes().splitlines():
                    record: dict[str, Any] = orjson.loads(line)
                    if record["key"] == name and record["status"] == 200:
                        found.append(Decimal(record["cost_usd"]))
        if len(found) >= answered:
            return found
        assert time.monotonic() < deadline, f"{len(found)} of {answered} records"
        await asyncio.sleep(0.05)
