"""402 ``price_unknown``: a key with a dollar budget never spends on a model without a price."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from sentinel.config import AdminConfig, Config, ServerConfig
from tests.conftest import Gateway, RequestLines, StartGateway, Upstream, make_config

ADMIN = "admin-token-for-prices-0123456789"
MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]


def _config(upstream: Upstream, tmp_path: Path) -> Config:
    config = make_config(upstream.url)
    server = ServerConfig(bind="127.0.0.1:0", state_dir=tmp_path / "state")
    return dataclasses.replace(config, admin=AdminConfig(token=ADMIN), server=server)


async def _budgeted_key(gateway: Gateway, http: aiohttp.ClientSession) -> str:
    """A runtime key with a total dollar budget, made through the keys API."""
    async with http.post(
        f"{gateway.url}/admin/v1/keys",
        json={"name": "student", "usd_total": "5.00"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    ) as r:
        assert r.status == 201, await r.text()
        key: str = (await r.json())["key"]
    return key


async def test_a_budgeted_key_gets_402_price_unknown_and_nothing_is_sent(
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    request_lines: RequestLines,
) -> None:
    """The SDK raises APIStatusError 402 ``price_unknown`` without retrying, and the upstream
    never sees the request."""
    gateway = await start_gateway(_config(upstream, tmp_path))
    key = await _budgeted_key(gateway, http)
    before = (await upstream.stats())["requests"]
    async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=2) as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="my-local-llama", messages=MESSAGES)
    error = info.value
    assert error.status_code == 402
    assert isinstance(error.body, dict)
    assert error.body["type"] == "insufficient_quota"
    assert error.body["code"] == "price_unknown"
    assert error.body["param"] == "model"
    assert (await upstream.stats())["requests"] == before
    lines = [line for line in request_lines.read() if line["route"] == "/v1/chat/completions"]
    assert len(lines) == 1  # the SDK did not retry
    assert lines[0]["status"] == 402 and lines[0]["cost_usd"] is None


async def test_a_budgeted_key_is_served_a_priced_model_and_an_unbudgeted_key_any(
    upstream: Upstream, start_gateway: StartGateway, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """A priced model passes the check; a key without a dollar budget may use unpriced models."""
    gateway = await start_gateway(_config(upstream, tmp_path))
    key = await _budgeted_key(gateway, http)
    async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0) as client:
        reply = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert reply.usage is not None
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=gateway.key, max_retries=0
    ) as client:
        await client.chat.completions.create(model="my-local-llama", messages=MESSAGES)
