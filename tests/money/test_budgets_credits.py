"""Prepaid credits: top-ups with idempotency, the ledger, and 402 ``insufficient_credits``."""

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

from sentinel.config import AdminConfig, Config, RedisConfig
from sentinel.config.budgets import Budgets, parse_usd
from sentinel.money.prices import charge_nano
from tests.conftest import Gateway, StartGateway, Upstream, running_gateway
from tests.money.test_budgets_e2e import MESSAGES, MODEL, budget_config, chat, hold_of
from tests.support.redis_server import RedisServer

ADMIN = "admin-token-for-credits-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def credits_config(
    upstream: Upstream, tmp_path: Path, name: str, redis: RedisConfig | None = None
) -> Config:
    """A key with no budget of its own (``name``), the probe key, and an admin token."""
    key = f"sk-test-{name}-0123456789"
    config = budget_config(upstream, tmp_path, key, name, Budgets())
    return dataclasses.replace(config, admin=AdminConfig(token=ADMIN), redis=redis)


async def top_up(
    http: aiohttp.ClientSession,
    gateway: Gateway,
    key_id: str,
    body: Any,
    idempotency_key: str | None = "topup-1",
) -> tuple[int, Any]:
    """POST a top-up; the status and the JSON answer."""
    headers = dict(AUTH)
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    async with http.post(
        f"{gateway.url}/admin/v1/keys/{key_id}/credits", json=body, headers=headers
    ) as r:
        return r.status, await r.json()


async def ledger(
    http: aiohttp.ClientSession, gateway: Gateway, key_id: str, query: str = ""
) -> dict[str, Any]:
    """One page of the key's ledger."""
    async with http.get(f"{gateway.url}/admin/v1/keys/{key_id}/ledger{query}", headers=AUTH) as r:
        assert r.status == 200, await r.text()
        page: dict[str, Any] = await r.json()
        return page


@pytest.fixture(params=["embedded", "redis"])
def store(request: pytest.FixtureRequest) -> RedisConfig | None:
    """Credits in the state file (embedded) or in Redis."""
    if request.param == "embedded":
        return None
    server: RedisServer = request.getfixturevalue("redis_server")
    return RedisConfig(url=f"redis://127.0.0.1:{server.port}/0")


async def test_credits_meter_a_key_from_its_first_top_up_until_they_run_out(
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    store: RedisConfig | None,
) -> None:
    """Free before any top-up; then requests draw the balance down until one's hold does not
    fit: 402 ``insufficient_credits`` through the SDK, without retry, nothing upstream. The
    ledger has the top-up and one charge per answered request, each the recorded cost."""
    name = f"prepaid-{uuid.uuid4().hex[:6]}"
    key = f"sk-test-{name}-0123456789"
    gateway = await start_gateway(credits_config(upstream, tmp_path, name, store))
    status, headers, _ = await chat(http, gateway, key)
    assert status == 200 and "x-sentinel-budget-remaining-usd" not in headers
    hold = await hold_of(http, gateway)
    amount = Decimal(3 * hold + hold // 2) / 10**9
    status, answer = await top_up(http, gateway, f"cfg.{name}", {"amount_usd": str(amount)})
    assert status == 201, answer
    assert answer["balance_usd"] == answer["amount_usd"] == str(amount)
    answered = 0
    while True:
        status, headers, body = await chat(http, gateway, key)
        if status != 200:
            break
        answered += 1
        assert parse_usd(headers["x-sentinel-budget-remaining-usd"]) >= 0
        assert headers["x-sentinel-budget-reset"] == "never"
        assert answered < 20
    assert status == 402 and body["error"]["code"] == "insufficient_credits"
    assert answered >= 3
    before = (await upstream.stats())["requests"]
    async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=2) as sdk:
        with pytest.raises(openai.APIStatusError) as info:
            await sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8)
    assert info.value.status_code == 402
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "insufficient_credits"
    assert (await upstream.stats())["requests"] == before
    page = await ledger(http, gateway, f"cfg.{name}")
    entries = page["data"]
    assert [e["type"] for e in entries] == ["top_up"] + ["charge"] * answered
    charges = [-Decimal(e["amount_usd"]) for e in entries[1:]]
    costs = await answered_costs(gateway, name, answered + 1)
    assert costs[1:] == charges  # the first request was free
    assert Decimal(entries[-1]["balance_usd"]) == amount - sum(charges)
    assert page["first_id"] == entries[0]["id"] and page["last_id"] == entries[-1]["id"]


async def answered_costs(gateway: Gateway, name: str, answered: int) -> list[Decimal]:
    """The recorded costs of ``name``'s answered requests, in order, once all are written."""
    path = gateway.config.usage.jsonl_path
    assert path is not None
    deadline = time.monotonic() + 10
    while True:
        lines = path.read_bytes().splitlines() if path.exists() else []
        records = [orjson.loads(line) for line in lines]
        done = [Decimal(r["cost_usd"]) for r in records if r["key"] == name and r["status"] == 200]
        if len(done) >= answered:
            return done
        assert time.monotonic() < deadline, f"{len(done)} of {answered} records"
        await asyncio.sleep(0.05)


async def test_top_ups_are_idempotent_and_checked(
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    store: RedisConfig | None,
) -> None:
    """The same key and amount replays the first answer; another amount is 409; zero,
    negative, non-numeric, missing key and unknown key are refused and add nothing."""
    name = f"idem-{uuid.uuid4().hex[:6]}"
    gateway = await start_gateway(credits_config(upstream, tmp_path, name, store))
    key_id = f"cfg.{name}"
    first = await top_up(http, gateway, key_id, {"amount_usd": "10.00"}, "same")
    assert first[0] == 201
    again = await top_up(http, gateway, key_id, {"amount_usd": "10.00"}, "same")
    assert again == (200, first[1])
    status, body = await top_up(http, gateway, key_id, {"amount_usd": "11.00"}, "same")
    assert status == 409 and body["error"]["code"] == "idempotency_key_reused"
    for bad in ("0", "-5", "ten", 1.5, None, "0.0000000001"):
        status, body = await top_up(http, gateway, key_id, {"amount_usd": bad}, f"bad-{bad}")
        assert status == 400, (bad, body)
    status, body = await top_up(http, gateway, key_id, {"amount_usd": "1"}, None)
    assert status == 400 and body["error"]["param"] == "Idempotency-Key"
    status, body = await top_up(http, gateway, "cfg.nobody", {"amount_usd": "1"})
    assert status == 404
    async with http.post(
        f"{gateway.url}/admin/v1/keys/{key_id}/credits",
        json={"amount_usd": "1"},
        headers={"Idempotency-Key": "x"},
    ) as r:
        assert r.status == 401
    second = await top_up(http, gateway, key_id, {"amount_usd": "0.5"}, "other")
    assert second[0] == 201 and second[1]["balance_usd"] == "10.5"
    page = await ledger(http, gateway, key_id, "?limit=1")
    assert page["has_more"] is True and len(page["data"]) == 1
    rest = await ledger(http, gateway, key_id, f"?limit=5&after={page['last_id']}")
    assert rest["has_more"] is False
    assert [e["amount_usd"] for e in rest["data"]] == ["0.5"]


async def test_embedded_credits_survive_a_restart(
    upstream: Upstream, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The balance, its charges and the ledger live in the state file: a restarted gateway
    keeps metering the key and continues its ledger."""
    name = "durable"
    key = f"sk-test-{name}-0123456789"
    config = credits_config(upstream, tmp_path, name)
    async with running_gateway(config) as gateway:
        assert (await top_up(http, gateway, f"cfg.{name}", {"amount_usd": "1"}))[0] == 201
        assert (await chat(http, gateway, key))[0] == 200
        before = await ledger(http, gateway, f"cfg.{name}")
    async with running_gateway(config) as gateway:
        status, headers, _ = await chat(http, gateway, key)
        assert status == 200
        after = await ledger(http, gateway, f"cfg.{name}")
    assert after["data"][:2] == before["data"]
    assert [e["type"] for e in after["data"]] == ["top_up", "charge", "charge"]
    charged = sum((-Decimal(e["amount_usd"]) for e in after["data"][1:]), Decimal(0))
    assert Decimal(after["data"][-1]["balance_usd"]) == 1 - charged
    left = parse_usd(headers["x-sentinel-budget-remaining-usd"])
    assert left <= 10**9 - charge_nano(charged)
