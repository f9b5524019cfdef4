"""Every byte has a deadline: streams end at timeout_ms, slow bodies get 408, clients that stop
reading are dropped, slow request heads are cut, and requests in flight are capped."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from typing import Any

import aiohttp
import pytest

from sentinel.config import Config, ServerConfig, UpstreamConfig
from tests.conftest import (
    CLIENT_KEY,
    UPSTREAM_KEY,
    Gateway,
    StartGateway,
    Upstream,
    make_config,
)

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def _config(upstream: Upstream, *, timeout_ms: int = 600_000, **server: Any) -> Config:
    config = make_config(upstream.url)
    return dataclasses.replace(
        config,
        upstreams=(
            UpstreamConfig(
                name="mock", base_url=upstream.url, api_key=UPSTREAM_KEY, timeout_ms=timeout_ms
            ),
        ),
        server=dataclasses.replace(config.server, **server),
    )


def _finished(out: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [
        line
        for line in lines
        if line.get("event") == "request_finished" and line.get("route") != "/healthz"
    ]


async def test_timeout_ms_ends_a_stream_with_an_error_event(
    upstream: Upstream,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A stream still running at the upstream's timeout_ms ends with an in-band
    ``upstream_timeout`` error, and what it produced is still counted."""
    gateway = await start_gateway(_config(upstream, timeout_ms=600))
    headers = {**AUTH, "x-mock-chunks": "40", "x-mock-chunk-delay-ms": "100"}
    started = asyncio.get_running_loop().time()
    async with http.post(
        f"{gateway.base_url}/chat/completions", json={**CHAT, "stream": True}, headers=headers
    ) as r:
        assert r.status == 200
        text = (await r.read()).decode()
    assert asyncio.get_running_loop().time() - started < 3
    assert "event: error" in text and '"upstream_timeout"' in text
    assert "[DONE]" not in text
    line = _finished(capsys.readouterr().out)[-1]
    assert line["error_code"] == "upstream_timeout"
    assert line["usage_source"] == "estimated" and int(line["completion_tokens"]) > 0


async def _open(gateway: Gateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", gateway.port)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def test_a_body_that_never_arrives_is_a_408(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    """A request whose body stops arriving gets 408 ``request_timeout`` at body_timeout_ms."""
    gateway = await start_gateway(_config(upstream, body_timeout_ms=300))
    reader, writer = await _open(gateway)
    try:
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + CLIENT_KEY.encode() + b"\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"model"'
        )
        await writer.drain()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            rest = await reader.read(4096)
        assert head.startswith(b"HTTP/1.1 408")
        assert b'"request_timeout"' in rest
    finally:
        await _close(writer)


async def test_a_slow_request_head_is_cut(upstream: Upstream, start_gateway: StartGateway) -> None:
    """A client that never finishes its request line and headers is disconnected at
    header_timeout_ms."""
    gateway = await start_gateway(_config(upstream, header_timeout_ms=300))
    reader, writer = await _open(gateway)
    try:
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed by the server
    finally:
        await _close(writer)


async def test_a_client_that_stops_reading_is_dropped(
    upstream: Upstream, start_gateway: StartGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    """A client that stops reading a large reply is dropped at write_timeout_ms and the
    upstream reply is released."""
    gateway = await start_gateway(_config(upstream, write_timeout_ms=300))
    _, writer = await _open(gateway)
    body = json.dumps({"model": "tts-1", "input": "hi", "voice": "alloy"}).encode()
    try:
        writer.write(
            b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + CLIENT_KEY.encode() + b"\r\n"
            b"x-mock-bytes: 500000000\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        await writer.drain()
        async with asyncio.timeout(20):
            while True:  # never read: the gateway's writes back up
                lines = _finished(capsys.readouterr().out)
                if lines:
                    break
                await asyncio.sleep(0.1)
        assert lines[-1]["outcome"] == "client_stalled"
        assert lines[-1]["status"] == 499
        assert int(lines[-1]["response_bytes"]) < 500_000_000
    finally:
        writer.transport.abort()


async def test_requests_in_flight_are_capped(
    upstream: Upstream, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """Above max_client_connections requests in flight, the next gets 503 ``server_busy``;
    liveness still answers."""
    gateway = await start_gateway(_config(upstream, max_client_connections=1))
    slow = {**AUTH, "x-mock-chunks": "10", "x-mock-chunk-delay-ms": "100"}
    async with http.post(
        f"{gateway.base_url}/chat/completions", json={**CHAT, "stream": True}, headers=slow
    ) as first:
        assert first.status == 200
        async with http.post(f"{gateway.base_url}/chat/completions", json=CHAT, headers=AUTH) as r:
            assert r.status == 503
            assert (await r.json())["error"]["code"] == "server_busy"
            assert r.headers["retry-after"] == "1"
        async with http.get(f"{gateway.url}/healthz") as r:
            assert r.status == 200
        await first.read()
    async with http.post(f"{gateway.base_url}/chat/completions", json=CHAT, headers=AUTH) as r:
        assert r.status == 200


def test_server_defaults_are_bounded() -> None:
    """Every timeout and cap has a finite default."""
    server = ServerConfig()
    assert 0 < server.header_timeout_ms <= 60_000
    assert 0 < server.body_timeout_ms <= 120_000
    assert 0 < server.write_timeout_ms <= 60_000
    assert 0 < server.max_client_connections


async def test_each_upstream_has_its_own_connection_pool(
    upstream: Upstream, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """An upstream at its max_connections makes its next call wait, and answer 503
    ``upstream_busy`` at its first-byte timeout (no breaker counts it); another upstream on
    the same host is not held up by it."""
    small = UpstreamConfig(
        name="small",
        base_url=upstream.url,
        api_key=UPSTREAM_KEY,
        models=("gpt-4o-mini",),
        max_connections=1,
        first_byte_timeout_ms=300,
    )
    other = UpstreamConfig(
        name="other", base_url=upstream.url, api_key=UPSTREAM_KEY, models=("gpt-4o",)
    )
    config = dataclasses.replace(make_config(upstream.url), upstreams=(small, other))
    gateway = await start_gateway(config)
    slow = {**AUTH, "x-mock-chunks": "10", "x-mock-chunk-delay-ms": "100"}
    url = f"{gateway.base_url}/chat/completions"
    async with http.post(url, json={**CHAT, "stream": True}, headers=slow) as first:
        assert first.status == 200
        async with http.post(url, json=CHAT, headers=AUTH) as r:
            assert r.status == 503
            assert (await r.json())["error"]["code"] == "upstream_busy"
        async with http.post(url, json={**CHAT, "model": "gpt-4o"}, headers=AUTH) as r:
            assert r.status == 200
        await first.read()
    async with http.post(url, json=CHAT, headers=AUTH) as r:
        assert r.status == 200  # the slot came back with the first stream's end
