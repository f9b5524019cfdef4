"""Credits in an external ledger (``[credits] url``) through real gateways and a real ledger."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from sentinel.config import AdminConfig, Config, KeyConfig, ServerConfig
from sentinel.config.budgets import NANO, format_usd
from sentinel.config.credits import CreditsConfig
from sentinel.config.load import hash_key
from sentinel.config.usage import UsageSettings
from sentinel.money.prices import charge_nano
from tests.conftest import Gateway, StartGateway, Upstream, make_config, running_gateway
from tests.money.test_budgets_e2e import MESSAGES, MODEL, chat
from tests.support.fake_ledger import LEDGER_TOKEN, FakeHold, FakeLedger

PAYER = "sk-test-ledger-payer-0123456789"
MEMBER = "sk-test-ledger-member-0123456789"
ADMIN = "admin-token-for-ledger-0123456789"
ACCOUNT = "cfg:payer"


@pytest.fixture
async def ledger() -> AsyncIterator[FakeLedger]:
    """A running ledger where the payer's account holds $1."""
    fake = FakeLedger()
    fake.fund(ACCOUNT, "1")
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def ledger_config(upstream: Upstream, tmp_path: Path, ledger: FakeLedger, **credits: Any) -> Config:
    """Two keys (``payer``, and ``member`` of team ``lab``) whose credits are in ``ledger``."""
    settings = CreditsConfig(
        url=ledger.url, token=LEDGER_TOKEN, capture_batch_ms=20, close_timeout_ms=1_000
    )
    usage = UsageSettings(
        spool_dir=tmp_path / "spool", jsonl_path=tmp_path / "usage.jsonl", flush_interval_ms=10
    )
    keys = (
        KeyConfig(name="payer", key_sha256=hash_key(PAYER)),
        KeyConfig(name="member", key_sha256=hash_key(MEMBER), team="lab"),
    )
    return dataclasses.replace(
        make_config(upstream.url),
        keys=keys,
        usage=usage,
        server=ServerConfig(bind="127.0.0.1:0", state_dir=tmp_path / "state"),
        admin=AdminConfig(token=ADMIN),
        credits=dataclasses.replace(settings, **credits),
    )


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Wait until ``check()`` holds."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def recorded_costs(path: Path, count: int) -> list[int]:
    """The nano-USD each of ``count`` usage records was charged (cost rounded up)."""
    deadline = time.monotonic() + 10
    while True:
        lines = path.read_bytes().splitlines() if path.exists() else []
        found = [orjson.loads(line) for line in lines]
        if len(found) >= count:
            return [charge_nano(Decimal(r["cost_usd"])) for r in found]
        assert time.monotonic() < deadline, f"{len(found)} of {count} records"
        await asyncio.sleep(0.02)


def settled(ledger: FakeLedger) -> bool:
    """Whether every hold the ledger made is captured or released."""
    return bool(ledger.holds) and all(h.state != "held" for h in ledger.holds.values())


def only_hold(ledger: FakeLedger) -> FakeHold:
    [hold] = ledger.holds.values()
    return hold


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_request_holds_at_the_ledger_and_is_charged_its_exact_cost_once(
    ledger: FakeLedger,
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    stream: bool,
) -> None:
    """One hold, then one capture of exactly the record's cost; the balance drops by it."""
    config = ledger_config(upstream, tmp_path, ledger)
    gateway = await start_gateway(config)
    async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key=PAYER) as client:
        if stream:
            chunks = await client.chat.completions.create(
                model=MODEL, messages=MESSAGES, max_tokens=8, stream=True
            )
            async for _ in chunks:
                pass
        else:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8)
    assert config.usage.jsonl_path is not None
    [cost] = await recorded_costs(config.usage.jsonl_path, 1)
    await eventually(lambda: settled(ledger), "the hold was never settled")
    hold = only_hold(ledger)
    assert hold.account == ACCOUNT and hold.state == "captured"
    assert 0 < hold.captured == cost <= hold.amount
    assert ledger.balances[ACCOUNT] == NANO - cost
    assert ledger.posts["holds"] == 1 and len(ledger.items("captures")) == 1
    assert set(ledger.authorizations) == {f"Bearer {LEDGER_TOKEN}"}


async def test_the_budget_headers_show_the_balance_the_ledger_reported(
    ledger: FakeLedger,
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    """The response says what the ledger has left after the hold, and that it never renews."""
    gateway = await start_gateway(ledger_config(upstream, tmp_path, ledger))
    status, raw, _ = await chat(http, gateway, PAYER)
    assert status == 200
    headers = {name.lower(): value for name, value in raw.items()}
    assert headers["x-sentinel-budget-remaining-usd"] == format_usd(NANO - only_hold(ledger).amount)
    assert headers["x-sentinel-budget-reset"] == "never"


async def test_the_sdk_gets_402_once_when_the_ledger_cannot_cover_the_hold(
    ledger: FakeLedger, upstream: Upstream, start_gateway: StartGateway, tmp_path: Path
) -> None:
    """402 ``insufficient_credits`` that the SDK does not retry; nothing reaches the upstream."""
    ledger.fund(ACCOUNT, "0.000001")
    gateway = await start_gateway(ledger_config(upstream, tmp_path, ledger))
    before = (await upstream.stats())["requests"]
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=PAYER, max_retries=3
    ) as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    error = info.value
    assert error.status_code == 402
    assert isinstance(error.body, dict)
    assert error.body["code"] == "insufficient_credits"
    assert error.body["type"] == "insufficient_quota"
    assert error.response.headers["x-should-retry"] == "false"
    assert error.response.headers["x-sentinel-budget-remaining-usd"] == "0.000001"
    assert ledger.posts["holds"] == 1 and not ledger.holds
    assert (await upstream.stats())["requests"] == before


async def test_a_ledger_that_is_down_refuses_with_503_and_admits_nothing(
    ledger: FakeLedger,
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    """Connection refused at the ledger: 503 ``credits_unavailable``, the upstream untouched."""
    gateway = await start_gateway(ledger_config(upstream, tmp_path, ledger))
    await ledger.stop()
    before = (await upstream.stats())["requests"]
    status, headers, body = await chat(http, gateway, PAYER)
    assert status == 503 and body["error"]["code"] == "credits_unavailable"
    assert int(headers["Retry-After"]) >= 1  # as the server spells it
    assert (await upstream.stats())["requests"] == before


async def test_a_ledger_slower_than_timeout_ms_refuses_and_its_late_hold_is_released(
    ledger: FakeLedger,
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    """503 within the deadline; the hold the ledger made late is given back."""
    gateway = await start_gateway(ledger_config(upstream, tmp_path, ledger, timeout_ms=150))
    ledger.delay_s = 0.8
    started = time.monotonic()
    status, _, body = await chat(http, gateway, PAYER)
    assert time.monotonic() - started < 0.7
    assert status == 503 and body["error"]["code"] == "credits_unavailable"
    await eventually(lambda: settled(ledger), "the late hold was never released")
    assert only_hold(ledger).state == "released"
    assert ledger.balances[ACCOUNT] == NANO


@pytest.mark.parametrize("fault", ["status", "garbage"])
async def test_a_ledger_that_answers_5xx_or_garbage_refuses_with_503(
    ledger: FakeLedger,
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    fault: str,
) -> None:
    """A 500, or a 201 that is not a hold, is 503: a broken ledger never admits."""
    gateway = await start_gateway(ledger_config(upstream, tmp_path, ledger))
    if fault == "status":
        ledger.status = 500
    else:
        ledger.garbage = True
    before = (await upstream.stats())["requests"]
    status, _, body = await chat(http, gateway, PAYER)
    assert status == 503 and body["error"]["code"] == "credits_unavailable"
    assert (await upstream.stats())["requests"] == before


async def test_the_breaker_stops_asking_a_failing_ledger(
    ledger: FakeLedger,
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    """After ``breaker_failures`` failed holds, requests are refused without a call."""
    config = ledger_config(
        upstream, tmp_path, ledger, breaker_failures=2, breaker_cooldown_ms=60_000
    )
    gateway = await start_gateway(config)
    ledger.status = 500
    statuses = [(await chat(http, gateway, PAYER))[0] for _ in range(4)]
    assert statuses == [503] * 4
    assert ledger.posts["holds"] == 2


async def test_captures_travel_in_batches(
    ledger: FakeLedger,
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    """Six requests at once are captured in fewer POSTs than requests, each charged once."""
    config = ledger_config(upstream, tmp_path, ledger, capture_batch_ms=400)
    gateway = await start_gateway(config)
    results = await asyncio.gather(*(chat(http, gateway, PAYER) for _ in range(6)))
    assert [status for status, _, _ in results] == [200] * 6
    assert config.usage.jsonl_path is not None
    costs = await recorded_costs(config.usage.jsonl_path, 6)
    await eventually(lambda: settled(ledger), "not every hold was settled")
    assert ledger.posts["captures"] <= 2
    assert len(ledger.items("captures")) == 6
    assert sorted(h.captured for h in ledger.holds.values()) == sorted(costs)
    assert ledger.balances[ACCOUNT] == NANO - sum(costs)


async def test_a_capture_whose_answer_was_lost_is_sent_again_and_charged_once(
    ledger: FakeLedger,
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    """The ledger applies a capture but its 200 is lost: Sentinel replays it, the ledger
    charges nothing twice."""
    config = ledger_config(upstream, tmp_path, ledger)
    gateway = await start_gateway(config)
    ledger.lose_answers = 1
    assert (await chat(http, gateway, PAYER))[0] == 200
    assert config.usage.jsonl_path is not None
    [cost] = await recorded_costs(config.usage.jsonl_path, 1)
    await eventually(lambda: ledger.posts["captures"] >= 2, "the capture was not replayed")
    [(hold_id, hold)] = ledger.holds.items()
    assert [i["hold_id"] for i in ledger.items("captures")] == [hold_id] * 2
    assert hold.captured == cost and ledger.balances[ACCOUNT] == NANO - cost


async def test_a_client_that_leaves_mid_stream_is_charged_for_what_was_used(
    ledger: FakeLedger, upstream: Upstream, start_gateway: StartGateway, tmp_path: Path
) -> None:
    """The stream is cut after a few chunks: the hold is captured for the record's cost."""
    config = ledger_config(upstream, tmp_path, ledger)
    gateway = await start_gateway(config)
    body = {"model": MODEL, "messages": MESSAGES, "stream": True, "max_tokens": 200}
    headers = {
        "Authorization": f"Bearer {PAYER}",
        "x-mock-chunks": "40",
        "x-mock-chunk-delay-ms": "20",
    }
    async with aiohttp.ClientSession() as leaving:
        async with leaving.post(
            f"{gateway.base_url}/chat/completions", json=body, headers=headers
        ) as r:
            assert r.status == 200
            for _ in range(4):
                await r.content.readline()
    assert config.usage.jsonl_path is not None
    [cost] = await recorded_costs(config.usage.jsonl_path, 1)
    await eventually(lambda: settled(ledger), "the hold was never settled")
    hold = only_hold(ledger)
    assert hold.state == "captured" and 0 < hold.captured == cost < hold.amount
    assert ledger.balances[ACCOUNT] == NANO - cost


async def test_an_upstream_that_fails_releases_the_hold(
    ledger: FakeLedger,
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    """Nothing produced, nothing charged: the hold is released and the balance restored."""
    gateway = await start_gateway(ledger_config(upstream, tmp_path, ledger))
    status, _, _ = await chat(http, gateway, PAYER)
    assert status == 200
    headers = {"Authorization": f"Bearer {PAYER}", "x-mock-fault": "status:500"}
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 8}
    async with http.post(f"{gateway.base_url}/chat/completions", json=body, headers=headers) as r:
        assert r.status >= 500
    await eventually(
        lambda: len(ledger.holds) == 2 and settled(ledger), "the failed hold was never released"
    )
    states = sorted(h.state for h in ledger.holds.values())
    assert states == ["captured", "released"]
    charged = sum(h.captured for h in ledger.holds.values())
    assert ledger.balances[ACCOUNT] == NANO - charged


async def test_shutdown_delivers_the_captures_still_waiting(
    upstream: Upstream, tmp_path: Path, ledger: FakeLedger, http: aiohttp.ClientSession
) -> None:
    """Captures waiting for their batch window are sent when the gateway stops."""
    config = ledger_config(upstream, tmp_path, ledger, capture_batch_ms=60_000)
    async with running_gateway(config) as gateway:
        for _ in range(2):
            assert (await chat(http, gateway, PAYER))[0] == 200
        assert ledger.posts["captures"] == 0
    assert len(ledger.items("captures")) == 2
    assert all(h.state == "captured" and h.captured > 0 for h in ledger.holds.values())


async def test_team_accounts_hold_on_the_team_and_refuse_keys_without_one(
    ledger: FakeLedger,
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    """``account = "team"``: a team's key holds on ``team:<name>``; a key without a team
    gets 403 ``credits_account_missing`` and the ledger is not asked."""
    ledger.fund("team:lab", "1")
    gateway = await start_gateway(ledger_config(upstream, tmp_path, ledger, account="team"))
    assert (await chat(http, gateway, MEMBER))[0] == 200
    status, _, body = await chat(http, gateway, PAYER)
    assert status == 403 and body["error"]["code"] == "credits_account_missing"
    assert only_hold(ledger).account == "team:lab"
    assert ledger.posts["holds"] == 1


async def test_top_ups_are_refused_and_v1_key_shows_the_ledgers_balance(
    ledger: FakeLedger,
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    """The admin credit routes answer 409 ``credits_external``; ``GET /v1/key`` asks the
    ledger."""
    gateway = await start_gateway(ledger_config(upstream, tmp_path, ledger))
    auth = {"Authorization": f"Bearer {ADMIN}", "Idempotency-Key": "invoice-1"}
    url = f"{gateway.url}/admin/v1/keys/cfg.payer"
    async with http.post(f"{url}/credits", json={"amount_usd": "5"}, headers=auth) as r:
        assert r.status == 409 and (await r.json())["error"]["code"] == "credits_external"
    async with http.get(f"{url}/ledger", headers=auth) as r:
        assert r.status == 409
    view = await own_view(http, gateway)
    assert view["spending"]["credits"] == {
        "ledger": "external",
        "account": ACCOUNT,
        "balance_usd": "1",
        "held_usd": "0",
    }
    await ledger.stop()
    assert (await own_view(http, gateway))["spending"]["credits"]["balance_usd"] is None


async def own_view(http: aiohttp.ClientSession, gateway: Gateway) -> dict[str, Any]:
    async with http.get(
        f"{gateway.base_url}/key", headers={"Authorization": f"Bearer {PAYER}"}
    ) as r:
        assert r.status == 200
        view: dict[str, Any] = await r.json()
        return view


async def test_metrics_count_holds_refusals_outages_and_settlements(
    ledger: FakeLedger,
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    """``/metrics`` shows a hold granted, one refused (402) and one unavailable (503), the
    settlement batch delivered, nothing pending and the breaker closed."""
    gateway = await start_gateway(ledger_config(upstream, tmp_path, ledger))
    assert (await chat(http, gateway, PAYER))[0] == 200
    await eventually(lambda: settled(ledger), "the capture")
    ledger.fund(ACCOUNT, "0.000001")
    assert (await chat(http, gateway, PAYER))[0] == 402
    await ledger.stop()
    assert (await chat(http, gateway, PAYER))[0] == 503
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with http.get(f"{gateway.url}/metrics", headers=headers) as response:
        assert response.status == 200
        lines = (await response.text()).splitlines()
    found = {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in lines)
        if name.startswith("sentinel_ledger_")
    }
    assert found == {
        "sentinel_ledger_holds_total": 1,
        "sentinel_ledger_holds_refused_total": 1,
        "sentinel_ledger_holds_unavailable_total": 1,
        "sentinel_ledger_batches_total": 1,
        "sentinel_ledger_batch_failures_total": 0,
        "sentinel_ledger_settlements_pending": 0,
        "sentinel_ledger_breaker_open": 0,
    }
