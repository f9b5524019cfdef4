"""Every request's usage is settled: the provider's numbers, or an estimate labelled as such."""

from __future__ import annotations

import dataclasses
from typing import Any

import aiohttp

from sentinel.config.usage import UsageSettings
from tests.conftest import (
    CLIENT_KEY,
    Gateway,
    RequestLines,
    StartGateway,
    Upstream,
    make_config,
)

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Count to ten"}]}


def _finished(logs: list[dict[str, Any]]) -> dict[str, Any]:
    lines = [entry for entry in logs if entry["event"] == "request_finished"]
    assert len(lines) == 1, lines
    return lines[0]


async def _leave_mid_stream(
    gateway: Gateway, headers: dict[str, str], lines: int, request_lines: RequestLines
) -> dict[str, Any]:
    """Read ``lines`` lines of a stream, disconnect, and return the request's log line."""
    async with aiohttp.ClientSession() as client:
        async with client.post(
            f"{gateway.base_url}/chat/completions",
            json={**CHAT, "stream": True},
            headers={**AUTH, **headers},
        ) as r:
            for _ in range(lines):
                await r.content.readline()
    return _finished(await request_lines.wait())


async def test_provider_usage_wins_and_prompt_is_estimated_too(
    gateway: Gateway, http: aiohttp.ClientSession, request_lines: RequestLines
) -> None:
    """With provider usage the source is provider, and Sentinel's own prompt count is logged."""
    async with http.post(f"{gateway.base_url}/chat/completions", json=CHAT, headers=AUTH) as r:
        reply = await r.json()
    line = _finished(await request_lines.wait())
    assert line["usage_source"] == "provider"
    assert line["prompt_tokens"] == reply["usage"]["prompt_tokens"]
    assert line["prompt_estimate"] and line["prompt_estimate"] > 0


async def test_json_reply_without_usage_is_estimated(
    gateway: Gateway, http: aiohttp.ClientSession, request_lines: RequestLines
) -> None:
    """A reply without usage is counted with tiktoken over the prompt and the reply text."""
    headers = {**AUTH, "x-mock-fault": "no-usage"}
    async with http.post(f"{gateway.base_url}/chat/completions", json=CHAT, headers=headers) as r:
        assert r.status == 200
        assert "usage" not in await r.json()
    line = _finished(await request_lines.wait())
    assert line["usage_source"] == "estimated"
    assert line["prompt_tokens"] == line["prompt_estimate"]
    assert line["completion_tokens"] > 0


async def test_stream_without_usage_is_estimated_on_joined_text(
    gateway: Gateway, http: aiohttp.ClientSession, request_lines: RequestLines
) -> None:
    """A stream whose upstream never sends usage is estimated over the joined completion."""
    headers = {**AUTH, "x-mock-fault": "no-usage", "x-mock-chunks": "12"}
    async with http.post(
        f"{gateway.base_url}/chat/completions", json={**CHAT, "stream": True}, headers=headers
    ) as r:
        await r.read()
    line = _finished(await request_lines.wait())
    assert line["usage_source"] == "estimated" and line["completion_tokens"] >= 12


async def test_mid_stream_death_is_estimated_from_what_was_produced(
    gateway: Gateway, http: aiohttp.ClientSession, request_lines: RequestLines
) -> None:
    """An upstream that dies mid-stream still yields a usage record, estimated."""
    headers = {**AUTH, "x-mock-fault": "die-after:4", "x-mock-chunks": "20"}
    async with http.post(
        f"{gateway.base_url}/chat/completions", json={**CHAT, "stream": True}, headers=headers
    ) as r:
        await r.read()
    line = _finished(await request_lines.wait())
    assert line["outcome"] == "upstream_interrupted"
    assert line["usage_source"] == "estimated"
    assert 0 < line["completion_tokens"] < 20


async def test_client_disconnect_is_estimated(
    gateway: Gateway, upstream: Upstream, request_lines: RequestLines
) -> None:
    """A client that leaves mid-stream is charged for what was produced so far."""
    line = await _leave_mid_stream(
        gateway, {"x-mock-chunks": "400", "x-mock-chunk-delay-ms": "5"}, 3, request_lines
    )
    assert line["outcome"] == "client_disconnected"
    assert line["usage_source"] == "estimated" and line["completion_tokens"] > 0


async def test_failed_upstream_records_no_tokens(
    gateway: Gateway, http: aiohttp.ClientSession, request_lines: RequestLines
) -> None:
    """An upstream error with no output spends no tokens."""
    headers = {**AUTH, "x-mock-fault": "status:500"}
    async with http.post(f"{gateway.base_url}/chat/completions", json=CHAT, headers=headers) as r:
        assert r.status == 500
    line = _finished(await request_lines.wait())
    assert line["usage_source"] is None and line["total_tokens"] is None


async def test_drain_on_disconnect_reads_the_providers_usage(
    upstream: Upstream, start_gateway: StartGateway, request_lines: RequestLines
) -> None:
    """With drain_on_disconnect, a departed client's stream is read to its end for usage."""
    config = make_config(upstream.url)
    config = dataclasses.replace(
        config, usage=UsageSettings(drain_on_disconnect=True, drain_timeout_ms=10_000)
    )
    gateway = await start_gateway(config)
    line = await _leave_mid_stream(
        gateway, {"x-mock-chunks": "60", "x-mock-chunk-delay-ms": "5"}, 3, request_lines
    )
    assert line["outcome"] == "client_disconnected"
    assert line["usage_source"] == "provider"
    assert line["completion_tokens"] == 60  # the mock's one token per chunk, all of them


async def test_drains_are_bounded_in_time(
    upstream: Upstream, start_gateway: StartGateway, request_lines: RequestLines
) -> None:
    """A drain that outlasts drain_timeout_ms stops, and the usage is estimated instead."""
    config = make_config(upstream.url)
    config = dataclasses.replace(
        config, usage=UsageSettings(drain_on_disconnect=True, drain_timeout_ms=50)
    )
    gateway = await start_gateway(config)
    line = await _leave_mid_stream(
        gateway, {"x-mock-chunks": "400", "x-mock-chunk-delay-ms": "5"}, 1, request_lines
    )
    assert line["usage_source"] == "estimated"
    assert 0 < line["completion_tokens"] < 400
