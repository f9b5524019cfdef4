"""Dollar budgets through real gateways: 402s, headers, and no overshoot under concurrency."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from redis.asyncio import Redis

from sentinel.config import Config, KeyConfig, RedisConfig, ServerConfig
from sentinel.config.budgets import NANO, Budgets, parse_usd
from sentinel.config.load import hash_key
from sentinel.config.spending import BudgetSettings
from sentinel.config.usage import UsageSettings
from sentinel.limits.redis_store import money_keys
from sentinel.money.prices import charge_nano
from tests.conftest import Gateway, StartGateway, Upstream, make_config
from tests.support.redis_server import RedisServer

MODEL = "gpt-4o-mini"
MESSAGES: list[Any] = [{"role": "user", "content": "What does this cost, exactly?"}]
PROBE_KEY = "sk-test-budget-probe-0123456789"
SLOW = {"x-mock-latency-ms": "150"}


def budget_config(
    upstream: Upstream, tmp_path: Path, key: str, name: str, budgets: Budgets, **changes: Any
) -> Config:
    """One budgeted key, and a probe key with a large budget that shows a request's hold."""
    base = make_config(upstream.url)
    usage = UsageSettings(
        spool_dir=tmp_path / f"spool-{uuid.uuid4().hex[:6]}",
        jsonl_path=tmp_path / f"usage-{uuid.uuid4().hex[:6]}.jsonl",
        flush_interval_ms=10,
    )
    keys = (
        KeyConfig(name=name, key_sha256=hash_key(key), budgets=budgets),
        KeyConfig(
            name=f"{name}-probe",
            key_sha256=hash_key(PROBE_KEY),
            budgets=Budgets(usd_total=NANO),
        ),
    )
    server = ServerConfig(bind="127.0.0.1:0", state_dir=tmp_path / "state")
    return dataclasses.replace(base, keys=keys, usage=usage, server=server, **changes)


async def chat(
    http: aiohttp.ClientSession, gateway: Gateway, key: str, **extra: Any
) -> tuple[int, dict[str, str], Any]:
    """One chat completion (``max_tokens`` 8) through ``gateway``: status, headers, body."""
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 8, **extra}
    async with http.post(
        f"{gateway.base_url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}", **SLOW},
    ) as r:
        return r.status, dict(r.headers), await r.json()


async def hold_of(http: aiohttp.ClientSession, gateway: Gateway) -> int:
    """The nano-USD one request holds, read from the probe key's remaining-budget header."""
    status, headers, _ = await chat(http, gateway, PROBE_KEY)
    assert status == 200
    return NANO - parse_usd(headers["x-sentinel-budget-remaining-usd"])


async def costs(path: Path, name: str, count: int) -> list[Decimal]:
    """The ``cost_usd`` of ``name``'s ``count`` answered requests, once they are recorded."""
    deadline = time.monotonic() + 10
    while True:
        lines = path.read_bytes().splitlines() if path.exists() else []
        found = [orjson.loads(line) for line in lines]
        mine = [
            Decimal(r["cost_usd"]) for r in found if r.get("key") == name and r["status"] == 200
        ]
        if len(mine) >= count:
            return mine
        assert time.monotonic() < deadline, f"{len(mine)} of {count} records of {name}"
        await asyncio.sleep(0.02)


async def test_fifty_requests_never_overshoot_a_budget_that_covers_ten(
    upstream: Upstream, start_gateway: StartGateway, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Fifty concurrent requests against a budget of ten holds: at least ten pass, the rest
    get 402 ``budget_exceeded``, and what was charged never exceeds the budget."""
    probe = await start_gateway(
        budget_config(upstream, tmp_path / "p", "sk-unused-0123456789", "p", Budgets())
    )
    hold = await hold_of(http, probe)
    key, name = "sk-test-student-0123456789", "student"
    budget = 10 * hold
    config = budget_config(upstream, tmp_path, key, name, Budgets(usd_total=budget))
    gateway = await start_gateway(config)
    results = await asyncio.gather(*(chat(http, gateway, key) for _ in range(50)))
    statuses = [status for status, _, _ in results]
    assert statuses.count(200) >= 10 and statuses.count(402) >= 1
    assert set(statuses) == {200, 402}
    refused = next(body for status, _, body in results if status == 402)
    assert refused["error"]["type"] == "insufficient_quota"
    assert refused["error"]["code"] == "budget_exceeded"
    assert config.usage.jsonl_path is not None
    spent = await costs(config.usage.jsonl_path, name, statuses.count(200))
    assert 0 < sum(charge_nano(c) for c in spent) <= budget
    for status, headers, _ in results:
        assert "x-sentinel-budget-remaining-usd" in headers, status
        assert headers["x-sentinel-budget-reset"] == "never"


async def test_across_two_gateways_on_redis_spend_stays_within_the_budget(
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    """Two replicas share one Redis: fifty requests spread over both never charge more than
    the budget, and the Redis counter equals the sum of the recorded costs exactly."""
    redis = RedisConfig(url=f"redis://127.0.0.1:{redis_server.port}/0", replicas=2)
    name = f"student-{uuid.uuid4().hex[:8]}"
    key = f"sk-test-{name}-0123456789"
    probe = await start_gateway(
        budget_config(upstream, tmp_path / "p", "sk-unused-0123456789", f"p{name}", Budgets())
    )
    hold = await hold_of(http, probe)
    budget = 10 * hold
    configs = [
        budget_config(
            upstream, tmp_path / str(i), key, name, Budgets(usd_total=budget), redis=redis
        )
        for i in range(2)
    ]
    gateways = [await start_gateway(c) for c in configs]
    results = await asyncio.gather(*(chat(http, gateways[i % 2], key) for i in range(50)))
    statuses = [status for status, _, _ in results]
    assert statuses.count(200) >= 10 and set(statuses) == {200, 402}
    spent: list[Decimal] = []
    for i, config in enumerate(configs):
        served = sum(1 for j, s in enumerate(statuses) if s == 200 and j % 2 == i)
        assert config.usage.jsonl_path is not None
        if served:
            spent += await costs(config.usage.jsonl_path, name, served)
    client: Redis = redis_server.client()
    try:
        raw = await client.hget(money_keys("sentinel", f"cfg:{name}")[0], "usd_total")
        assert raw is not None
        charged = int(raw)
    finally:
        await client.aclose()
    assert charged == sum(charge_nano(c) for c in spent) <= budget


async def test_the_sdk_gets_402_without_retrying_and_the_upstream_sees_nothing(
    upstream: Upstream, start_gateway: StartGateway, tmp_path: Path
) -> None:
    """openai's APIStatusError 402 ``budget_exceeded``, one attempt only, nothing upstream,
    with the budget headers."""
    key, name = "sk-test-broke-0123456789", "broke"
    gateway = await start_gateway(
        budget_config(upstream, tmp_path, key, name, Budgets(usd_per_day=1))
    )
    before = (await upstream.stats())["requests"]
    async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=3) as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    error = info.value
    assert error.status_code == 402
    assert isinstance(error.body, dict) and error.body["code"] == "budget_exceeded"
    assert error.response.headers["x-sentinel-budget-remaining-usd"] == "0.000000001"
    assert error.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in error.response.headers
    assert (await upstream.stats())["requests"] == before


async def test_a_team_budget_is_shared_by_its_keys_and_shown_on_v1_key(
    upstream: Upstream, start_gateway: StartGateway, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Two keys of one team draw on ``[teams.<name>]``: once one has spent it, the other gets
    402 on the team's budget; ``GET /v1/key`` shows spent and left."""
    probe = await start_gateway(
        budget_config(upstream, tmp_path / "p", "sk-unused-0123456789", "probe", Budgets())
    )
    hold = await hold_of(http, probe)
    config = budget_config(upstream, tmp_path, "sk-test-lab-a-0123456789", "lab-a", Budgets())
    second = KeyConfig(name="lab-b", key_sha256=hash_key("sk-test-lab-b-0123456789"), team="lab")
    keys = (dataclasses.replace(config.keys[0], team="lab"), second)
    budgets = BudgetSettings(teams=(("lab", Budgets(usd_per_week=2 * hold)),))
    gateway = await start_gateway(dataclasses.replace(config, keys=keys, budgets=budgets))
    assert (await chat(http, gateway, "sk-test-lab-a-0123456789"))[0] == 200
    assert (await chat(http, gateway, "sk-test-lab-b-0123456789"))[0] == 200
    status, headers, body = await chat(http, gateway, "sk-test-lab-a-0123456789")
    assert status == 402 and body["error"]["code"] == "budget_exceeded"
    assert "team's weekly budget" in body["error"]["message"]
    assert headers["x-sentinel-budget-reset"] != "never"
    async with http.get(
        f"{gateway.base_url}/key", headers={"Authorization": "Bearer sk-test-lab-b-0123456789"}
    ) as r:
        view = await r.json()
    team = view["spending"]["team_budgets"]["usd_per_week"]
    assert parse_usd(team["limit_usd"]) == 2 * hold
    assert 0 < parse_usd(team["spent_usd"]) <= 2 * hold and team["held_usd"] == "0"
    assert parse_usd(team["left_usd"]) == 2 * hold - parse_usd(team["spent_usd"])
    assert view["spending"]["budgets"] == {} and view["spending"]["credits"] is None


async def test_a_budgeted_request_without_a_cap_gets_one_and_streams_show_the_headers(
    upstream: Upstream, start_gateway: StartGateway, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """A budgeted request that names no cap is sent with ``max_completion_tokens`` = the
    reserve its hold priced (the mock stops there); a stream carries the budget headers."""
    key = "sk-test-capped-0123456789"
    config = budget_config(upstream, tmp_path, key, "capped", Budgets(usd_per_month=NANO))
    limits = dataclasses.replace(config.limits, default_completion_reserve=2)
    gateway = await start_gateway(dataclasses.replace(config, limits=limits))
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with http.post(
        f"{gateway.base_url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
    ) as r:
        assert r.status == 200
        assert r.headers["x-sentinel-budget-reset"] != "never"
        left = parse_usd(r.headers["x-sentinel-budget-remaining-usd"])
        text = (await r.read()).decode()
    assert left < NANO
    assert '"finish_reason":"length"' in text.replace(" ", "")
    assert '"completion_tokens":2' in text.replace(" ", "")


async def test_spending_a_budget_cannot_hold_for_is_refused(
    upstream: Upstream, start_gateway: StartGateway, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Images and background responses cost what no hold can bound: 403
    ``endpoint_not_allowed`` for a budgeted key, unless its ``passthrough`` allows them."""
    key = "sk-test-images-0123456789"
    config = budget_config(upstream, tmp_path, key, "images", Budgets(usd_total=NANO))
    allowed = dataclasses.replace(config.keys[1], passthrough=("images",))
    gateway = await start_gateway(dataclasses.replace(config, keys=(config.keys[0], allowed)))
    auth = {"Authorization": f"Bearer {key}"}
    async with http.post(
        f"{gateway.base_url}/images/generations", json={"prompt": "a cat"}, headers=auth
    ) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "endpoint_not_allowed"
    background = {"model": MODEL, "input": "hi", "background": True}
    async with http.post(f"{gateway.base_url}/responses", json=background, headers=auth) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "endpoint_not_allowed"
    async with http.post(
        f"{gateway.base_url}/images/generations",
        json={"prompt": "a cat"},
        headers={"Authorization": f"Bearer {PROBE_KEY}"},
    ) as r:
        assert r.status == 200
