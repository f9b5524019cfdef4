"""Unreachable, slow, failing and disconnecting upstreams, and clients that leave mid-stream."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace

import aiohttp

from tests.conftest import CLIENT_KEY, Gateway, StartGateway, Upstream, make_config

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


async def test_unreachable_upstream_is_502(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """A refused connection is a 502 upstream_unreachable in OpenAI's shape."""
    gateway = await start_gateway(make_config(f"http://127.0.0.1:{_closed_port()}/v1"))
    async with http.post(f"{gateway.base_url}/chat/completions", json=CHAT, headers=AUTH) as r:
        assert r.status == 502
        assert (await r.json())["error"]["code"] == "upstream_unreachable"


async def test_stalled_upstream_is_504(
    upstream: Upstream, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """An upstream that sends no headers within first_byte_timeout_ms is a 504."""
    config = make_config(upstream.url)
    fast = replace(config.upstreams[0], first_byte_timeout_ms=200)
    gateway = await start_gateway(replace(config, upstreams=(fast,)))
    headers = {**AUTH, "x-mock-fault": "stall"}
    async with http.post(f"{gateway.base_url}/chat/completions", json=CHAT, headers=headers) as r:
        assert r.status == 504
        assert (await r.json())["error"]["code"] == "upstream_timeout"


async def test_upstream_reset_is_502(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    """An upstream that drops the connection without answering is a 502."""
    headers = {**AUTH, "x-mock-fault": "reset"}
    async with http.post(f"{gateway.base_url}/chat/completions", json=CHAT, headers=headers) as r:
        assert r.status == 502


async def test_upstream_errors_are_relayed(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    """An upstream 429 or 500 reaches the client with its status, body and retry headers."""
    for status in (429, 500):
        headers = {**AUTH, "x-mock-fault": f"status:{status}"}
        async with http.post(
            f"{gateway.base_url}/chat/completions", json=CHAT, headers=headers
        ) as r:
            assert r.status == status
            assert "error" in await r.json()
            if status == 429:
                assert r.headers["retry-after"] == "1"


async def test_upstream_401_is_a_gateway_error(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    """The upstream refusing Sentinel's own key is a 502, not the client's 401."""
    headers = {**AUTH, "x-mock-fault": "status:401"}
    async with http.post(f"{gateway.base_url}/chat/completions", json=CHAT, headers=headers) as r:
        assert r.status == 502
        assert (await r.json())["error"]["code"] == "upstream_auth_failed"


async def test_idle_stream_ends_with_error_event(
    upstream: Upstream, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """A stream that stalls past idle_timeout_ms ends with an in-band SSE error."""
    config = make_config(upstream.url)
    idle = replace(config.upstreams[0], idle_timeout_ms=200)
    gateway = await start_gateway(replace(config, upstreams=(idle,)))
    headers = {**AUTH, "x-mock-fault": "stall-after:2"}
    body = {**CHAT, "stream": True}
    async with http.post(f"{gateway.base_url}/chat/completions", json=body, headers=headers) as r:
        assert r.status == 200
        text = await r.text()
    last = [line for line in text.splitlines() if line][-1]
    assert last.startswith("data: {") and '"code":"upstream_timeout"' in last


async def test_client_disconnects_release_upstream_connections(
    gateway: Gateway, upstream: Upstream
) -> None:
    """After many mid-stream client disconnects, no upstream connection is left open."""
    body = {**CHAT, "stream": True}
    headers = {**AUTH, "x-mock-chunks": "500", "x-mock-chunk-delay-ms": "5"}
    for _ in range(25):
        async with aiohttp.ClientSession() as client:
            async with client.post(
                f"{gateway.base_url}/chat/completions", json=body, headers=headers
            ) as r:
                assert r.status == 200
                await r.content.readany()
            # leaving the block closes the connection mid-stream
    for _ in range(300):
        stats = await upstream.stats()
        if stats["active_streams"] == 0 and stats["open_connections"] <= 1:
            break
        await asyncio.sleep(0.02)
    assert stats["active_streams"] == 0
    assert stats["open_connections"] <= 1  # the stats request's own connection
