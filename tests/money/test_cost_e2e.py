"""Exact cost on records, the log line and ``/metrics``, through a real gateway and the mock."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
from prometheus_client.parser import text_string_to_metric_families

from sentinel.config import Config, TelemetryConfig, UpstreamConfig
from sentinel.config.money import MoneyConfig, Price, PriceRule
from sentinel.config.usage import UsageSettings
from sentinel.money.prices import PriceBook, cost_of, format_cost
from sentinel.usage.counts import Usage
from tests.conftest import (
    UPSTREAM_KEY,
    RequestLines,
    StartGateway,
    Upstream,
    make_config,
)

MODEL = "gpt-4o-mini"
MESSAGES: list[Any] = [{"role": "user", "content": "What does this cost, exactly?"}]
DETAILS = {"x-mock-usage-details": "cached=2,reasoning=7"}
SHIPPED = PriceBook.from_config(MoneyConfig())


def _config(upstream: Upstream, tmp_path: Path, **changes: Any) -> Config:
    usage = UsageSettings(
        spool_dir=tmp_path / "spool", jsonl_path=tmp_path / "usage.jsonl", flush_interval_ms=10
    )
    telemetry = TelemetryConfig(metrics_public=True)
    config = make_config(upstream.url)
    return dataclasses.replace(config, usage=usage, telemetry=telemetry, **changes)


async def _records(path: Path, count: int) -> list[dict[str, Any]]:
    """The first ``count`` records of the JSONL sink, once they are there."""
    deadline = time.monotonic() + 10
    while True:
        lines = path.read_bytes().splitlines() if path.exists() else []
        if len(lines) >= count:
            return [orjson.loads(line) for line in lines]
        assert time.monotonic() < deadline, f"only {len(lines)} of {count} records arrived"
        await asyncio.sleep(0.02)


def _expected(model: str, usage: Any) -> str:
    """The exact cost of an SDK usage object at the shipped price of ``model``."""
    price = SHIPPED.price_of(model)
    assert price is not None
    as_dict = usage.model_dump() if hasattr(usage, "model_dump") else usage
    counted = Usage.from_openai(as_dict)
    assert counted is not None
    return format_cost(cost_of(price, counted))


async def test_records_log_lines_and_metric_carry_the_exact_cost(
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    request_lines: RequestLines,
) -> None:
    """JSON, stream and Responses replies with cached and reasoning tokens are priced exactly,
    each token once, on the record, the request line and ``sentinel_cost_usd_total``."""
    gateway = await start_gateway(_config(upstream, tmp_path))
    expected: dict[str, str] = {}
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=gateway.key, max_retries=0
    ) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=MESSAGES, extra_headers=DETAILS
        )
        reply = raw.parse()
        assert reply.usage is not None
        assert reply.usage.prompt_tokens_details is not None
        assert reply.usage.prompt_tokens_details.cached_tokens == 2
        expected[raw.headers["x-request-id"]] = _expected(MODEL, reply.usage)

        raw_stream = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=MESSAGES, stream=True, extra_headers=DETAILS
        )
        chunks = [chunk async for chunk in raw_stream.parse()]
        assert all(chunk.usage is None for chunk in chunks)  # Sentinel asked; the client did not
        # The mock's usage depends on the prompt and the chunk count: the same as the JSON one.
        expected[raw_stream.headers["x-request-id"]] = _expected(MODEL, reply.usage)

        raw_resp = await client.responses.with_raw_response.create(
            model="o4-mini", input="Think first.", extra_headers=DETAILS
        )
        response = raw_resp.parse()
        assert response.usage is not None
        assert response.usage.output_tokens_details.reasoning_tokens == 7
        expected[raw_resp.headers["x-request-id"]] = _expected("o4-mini", response.usage)

    records = await _records(tmp_path / "usage.jsonl", 3)
    assert {r["request_id"]: r["cost_usd"] for r in records} == expected
    assert all(r["cached_tokens"] == 2 and r["reasoning_tokens"] == 7 for r in records)
    lines = await request_lines.wait(3)
    assert {line["request_id"]: line["cost_usd"] for line in lines} == expected

    async with http.get(f"{gateway.url}/metrics") as r:
        text = await r.text()
    spent = {
        sample.labels["gen_ai_request_model"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "sentinel_cost_usd_total" and sample.labels["sentinel_key"] == "team-a"
    }
    costs = [float(cost) for cost in expected.values()]
    assert abs(spent[MODEL] - (costs[0] + costs[1])) < 1e-9
    assert abs(spent["o4-mini"] - costs[2]) < 1e-9


async def test_an_unpriced_model_costs_null_for_a_key_without_budget(
    upstream: Upstream, start_gateway: StartGateway, tmp_path: Path
) -> None:
    """A model with no price is served to a key without a dollar budget; its cost is null."""
    gateway = await start_gateway(_config(upstream, tmp_path))
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=gateway.key, max_retries=0
    ) as client:
        await client.chat.completions.create(model="my-local-llama", messages=MESSAGES)
    (record,) = await _records(tmp_path / "usage.jsonl", 1)
    assert record["model"] == "my-local-llama"
    assert record["cost_usd"] is None


async def test_configured_prices_apply_per_upstream_after_failover(
    upstream: Upstream, start_gateway: StartGateway, tmp_path: Path
) -> None:
    """A request that fails over is priced on the upstream that answered, by its own rule."""
    dead = UpstreamConfig(
        name="dead", base_url="http://127.0.0.1:9/v1", api_key=UPSTREAM_KEY, priority=0
    )
    mock = UpstreamConfig(name="mock", base_url=upstream.url, api_key=UPSTREAM_KEY, priority=1)
    money = MoneyConfig(
        prices=(
            PriceRule("my-model", Price(input=1_000_000_000, output=2_000_000_000)),
            PriceRule("my-model", Price(input=3_000_000_000, output=4_000_000_000), "mock"),
        )
    )
    config = _config(upstream, tmp_path, upstreams=(dead, mock), money=money)
    gateway = await start_gateway(config)
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=gateway.key, max_retries=0
    ) as client:
        reply = await client.chat.completions.create(model="my-model", messages=MESSAGES)
    assert reply.usage is not None
    (record,) = await _records(tmp_path / "usage.jsonl", 1)
    assert record["upstream"] == "mock"
    exact = Decimal(reply.usage.prompt_tokens * 3 + reply.usage.completion_tokens * 4) / 10**6
    assert Decimal(record["cost_usd"]) == exact


def _priced(line: dict[str, Any]) -> str:
    """The exact cost of a request line's (estimated) counts at gpt-4o-mini's shipped price."""
    price = SHIPPED.price_of(MODEL)
    assert price is not None
    prompt, completion = line["prompt_tokens"], line["completion_tokens"]
    return format_cost(cost_of(price, Usage(prompt, completion, prompt + completion)))


async def test_estimated_usage_is_priced_on_disconnect_and_upstream_death(
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    request_lines: RequestLines,
) -> None:
    """A client that leaves mid-stream and an upstream that dies mid-stream are billed for the
    estimated usage, at the model's price, on the record and the request line alike."""
    gateway = await start_gateway(_config(upstream, tmp_path))
    auth = {"Authorization": f"Bearer {gateway.key}"}
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    url = f"{gateway.base_url}/chat/completions"
    slow = {**auth, "x-mock-chunks": "400", "x-mock-chunk-delay-ms": "5"}
    async with http.post(url, json=body, headers=slow) as r:
        for _ in range(3):
            await r.content.readline()
    async with http.post(url, json=body, headers={**auth, "x-mock-fault": "die-after:4"}) as r:
        await r.read()
    lines = await request_lines.wait(2)
    records = {r["request_id"]: r for r in await _records(tmp_path / "usage.jsonl", 2)}
    assert {line["outcome"] for line in lines} == {"client_disconnected", "upstream_interrupted"}
    for line in lines:
        assert line["usage_source"] == "estimated" and line["completion_tokens"] > 0
        assert line["cost_usd"] == _priced(line) != "0"
        assert records[line["request_id"]]["cost_usd"] == line["cost_usd"]
