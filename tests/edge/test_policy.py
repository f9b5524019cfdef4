"""Pass-through policy, metering, the provider account hidden, and cheap checks first."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json

import aiohttp
import orjson
import pytest

from sentinel.config import KeyConfig, hash_key
from tests.conftest import Gateway, StartGateway
from tests.edge.conftest import (
    LIMITED_KEY,
    METRICS_TOKEN,
    SPENDER_KEY,
    TENANT_A,
    bearer,
    edge_config,
    raw_request,
)
from tests.support.lenient_upstream import LEAKED_HEADERS, LenientUpstream

IMAGE = {"model": "gpt-image-1", "prompt": "a cat"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


async def test_a_spending_family_is_refused_to_a_key_with_token_limits(
    edge: Gateway, lenient: LenientUpstream, http: aiohttp.ClientSession
) -> None:
    """Images would spend tokens that a tpm key's limits never see: 403 unless allowed."""
    async with http.post(
        f"{edge.base_url}/images/generations", json=IMAGE, headers=bearer(LIMITED_KEY)
    ) as r:
        assert r.status == 403
        assert (await r.json())["error"]["code"] == "endpoint_not_allowed"
    assert lenient.requests == []


async def test_an_allowed_spending_family_is_metered(
    edge: Gateway, lenient: LenientUpstream, http: aiohttp.ClientSession
) -> None:
    """A key allowed images is charged the tokens the reply reports, against its tpm."""
    async with http.post(
        f"{edge.base_url}/images/generations", json=IMAGE, headers=bearer(SPENDER_KEY)
    ) as r:
        assert r.status == 200
    async with http.post(
        f"{edge.base_url}/chat/completions", json=CHAT, headers=bearer(SPENDER_KEY)
    ) as r:
        assert r.status == 200
        remaining = int(r.headers["x-ratelimit-remaining-tokens"])
    # 150 for the image, then this chat's reservation (its prompt and 5) is still held.
    assert 100_000 - remaining >= 150 + 5


async def test_the_provider_account_never_shows(
    edge: Gateway, lenient: LenientUpstream, http: aiohttp.ClientSession
) -> None:
    """No response names the shared provider account, carries its cookie or its own limits:
    the rate-limit headers are the key's, once each."""
    for path, body in [
        ("/chat/completions", CHAT),
        ("/moderations", {"model": "gpt-4o-mini", "input": "x"}),
    ]:
        async with http.post(f"{edge.base_url}{path}", json=body, headers=bearer(LIMITED_KEY)) as r:
            assert r.status == 200, await r.text()
            for name in ("openai-organization", "openai-project", "set-cookie"):
                assert name not in r.headers, name
            assert r.headers["openai-processing-ms"] == LEAKED_HEADERS["openai-processing-ms"]
            assert "x-ratelimit-limit-requests" not in r.headers  # this key has no rpm
            assert r.headers.getall("x-ratelimit-limit-tokens") == ["1000"]


async def test_a_key_over_its_request_rate_is_refused_before_counting(
    lenient: LenientUpstream, start_gateway: StartGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once refused for its request rate, a key's next request (a 5 MB prompt) is refused
    before its body is read or counted."""
    config = edge_config(lenient.url)
    key = KeyConfig(name="slow", key_sha256=hash_key(TENANT_A), rpm=1)
    config = dataclasses.replace(config, keys=(key,))
    gateway = await start_gateway(config)
    headers = {**bearer(TENANT_A), "Content-Type": "application/json"}
    big = orjson.dumps({**CHAT, "messages": [{"role": "user", "content": "word " * 1_000_000}]})
    small = orjson.dumps(CHAT)
    for body, expected in [(small, 200), (small, 429)]:
        status, _, _ = await raw_request(
            gateway.port, "POST", "/v1/chat/completions", headers, body
        )
        assert status == expected
    assert await _early_status(gateway.port, headers, big) == 429
    lines = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    last = [line for line in lines if line.get("event") == "request_finished"][-1]
    assert last["status"] == 429 and last["prompt_estimate"] is None
    assert last["request_bytes"] == 0
    assert len(lenient.requests) == 1


async def _early_status(port: int, headers: dict[str, str], body: bytes) -> int:
    """The status of a POST whose body is announced but never sent: only a server that
    decides before reading the body can answer it."""
    lines = ["POST /v1/chat/completions HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write("\r\n".join(lines).encode() + body[:1024])
        await writer.drain()
        async with asyncio.timeout(10):
            status_line = await reader.readline()
        return int(status_line.split()[1])
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_refused_model_names_never_become_metric_labels(
    edge: Gateway, lenient: LenientUpstream, http: aiohttp.ClientSession
) -> None:
    """Names the allow-list refuses cannot use up the model label budget."""
    for i in range(5):
        body = {**CHAT, "model": f"made-up-{i}"}
        async with http.post(
            f"{edge.base_url}/chat/completions", json=body, headers=bearer(LIMITED_KEY)
        ) as r:
            assert r.status == 403
    async with http.post(
        f"{edge.base_url}/chat/completions", json=CHAT, headers=bearer(LIMITED_KEY)
    ) as r:
        assert r.status == 200
    async with http.get(f"{edge.url}/metrics", headers=bearer(METRICS_TOKEN)) as r:
        text = await r.text()
    assert "made-up-" not in text
    assert 'gen_ai_request_model="gpt-4o-mini"' in text
