"""Failover across real loopback upstreams: refused, stalled, 500, 429, dying mid-stream; and
breakers that no single tenant can open."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from sentinel.config import (
    AdminConfig,
    Config,
    KeyConfig,
    ModelAlias,
    RoutingConfig,
    ServerConfig,
    UpstreamConfig,
    hash_key,
)
from sentinel.mock import MockSettings, serve
from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, Gateway, RequestLines, StartGateway, Upstream

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
OTHER_KEY = "sk-test-other-key-9876543210"
OTHER = {"Authorization": f"Bearer {OTHER_KEY}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
TPM = 100_000
ADMIN_TOKEN = "admin-token-0123456789"

StartMock = Callable[..., Awaitable[Upstream]]


@pytest.fixture
async def start_mock(http: aiohttp.ClientSession) -> AsyncIterator[StartMock]:
    """Start mock upstreams with a server-wide fault; all stopped at teardown."""
    runners = []

    async def start(fault: str | None = None) -> Upstream:
        runner, port = await serve("127.0.0.1", 0, MockSettings(chunks=5, fault=fault))
        runners.append(runner)
        return Upstream(port=port, session=http)

    yield start
    for runner in runners:
        await runner.cleanup()


def closed_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/v1"


def config(*upstreams: UpstreamConfig, **routing: Any) -> Config:
    """Upstreams tried in the order given (priority = position), two keys with a tpm limit."""
    ordered = tuple(
        u if u.priority else dataclasses.replace(u, priority=i) for i, u in enumerate(upstreams)
    )
    return Config(
        upstreams=ordered,
        keys=(
            KeyConfig(name="team-a", key_sha256=hash_key(CLIENT_KEY), tpm=TPM),
            KeyConfig(name="team-b", key_sha256=hash_key(OTHER_KEY), tpm=TPM),
        ),
        server=ServerConfig(bind="127.0.0.1:0"),
        admin=AdminConfig(token=ADMIN_TOKEN),
        routing=RoutingConfig(**{"backoff_ms": 1, "backoff_max_ms": 5, **routing}),
    )


def up(name: str, url: str, **fields: Any) -> UpstreamConfig:
    return UpstreamConfig(name=name, base_url=url, api_key=UPSTREAM_KEY, **fields)


async def calls(upstream: Upstream) -> int:
    stats = await upstream.stats()
    count: int = stats["requests"]
    return count


async def finished(request_lines: RequestLines) -> dict[str, Any]:
    """The request's log line (written just after the response's last byte went out)."""
    lines = await request_lines.wait()
    assert len(lines) == 1
    return lines[0]


async def chat(
    http: aiohttp.ClientSession,
    base_url: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] = AUTH,
) -> tuple[int, CIMultiDictProxy[str], Any]:
    async with http.post(f"{base_url}/chat/completions", json=body or CHAT, headers=headers) as r:
        return r.status, r.headers, await r.json()


async def readiness(http: aiohttp.ClientSession, gateway: Gateway) -> tuple[int, Any]:
    """``/readyz``'s status and body."""
    async with http.get(f"{gateway.url}/readyz") as r:
        return r.status, await r.json()


async def test_refused_connection_fails_over(
    start_mock: StartMock,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    request_lines: RequestLines,
) -> None:
    """A refused primary is skipped; the backup answers and is named in the log line."""
    backup = await start_mock()
    gateway = await start_gateway(config(up("dead", closed_url()), up("backup", backup.url)))
    status, _, body = await chat(http, gateway.base_url)
    line = await finished(request_lines)
    assert status == 200 and body["usage"]["total_tokens"] > 0
    assert await calls(backup) == 1
    assert line["upstream"] == "backup"
    attempts = line["attempts"]
    assert [a["upstream"] for a in attempts] == ["dead", "backup"]
    assert attempts[0]["status"] is None and attempts[0]["code"] == "upstream_unreachable"
    assert attempts[1]["status"] == 200


async def test_stall_before_first_byte_fails_over(
    start_mock: StartMock, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """A primary that sends no headers within first_byte_timeout_ms gives way to the backup."""
    stalled, backup = await start_mock("stall"), await start_mock()
    primary = up("stalled", stalled.url, first_byte_timeout_ms=200)
    gateway = await start_gateway(config(primary, up("backup", backup.url)))
    status, _, _ = await chat(http, gateway.base_url)
    assert status == 200
    assert (await calls(stalled), await calls(backup)) == (1, 1)


async def test_500_fails_over_and_reservation_counts_once(
    start_mock: StartMock, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """After a 500 and a failover, only the answering attempt's usage is charged."""
    broken, backup = await start_mock("status:500"), await start_mock()
    gateway = await start_gateway(config(up("broken", broken.url), up("backup", backup.url)))
    status, headers, body = await chat(http, gateway.base_url)
    assert status == 200
    reserved = TPM - int(headers["x-ratelimit-remaining-tokens"])
    status, headers, _ = await chat(http, gateway.base_url)
    assert status == 200
    used = body["usage"]["total_tokens"]
    assert int(headers["x-ratelimit-remaining-tokens"]) == TPM - used - reserved
    assert (await calls(broken), await calls(backup)) == (2, 2)


async def test_every_attempt_failing_relays_the_last_answer_and_releases(
    start_mock: StartMock, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """When all upstreams answer 5xx, the last answer is relayed and nothing stays reserved."""
    first, second = await start_mock("status:500"), await start_mock("status:503")
    gateway = await start_gateway(config(up("a", first.url), up("b", second.url)))
    status, headers, body = await chat(http, gateway.base_url)
    assert status == 503 and "error" in body
    remaining = int(headers["x-ratelimit-remaining-tokens"])
    status, headers, _ = await chat(http, gateway.base_url)
    assert int(headers["x-ratelimit-remaining-tokens"]) == remaining  # the first was released
    assert (await calls(first), await calls(second)) == (2, 2)


async def test_max_attempts_bounds_the_tries(
    start_mock: StartMock, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """With max_attempts = 2 a third upstream is never called; the error is a 502."""
    third = await start_mock()
    gateway = await start_gateway(
        config(up("a", closed_url()), up("b", closed_url()), up("c", third.url), max_attempts=2)
    )
    status, _, body = await chat(http, gateway.base_url)
    assert status == 502 and body["error"]["code"] == "upstream_unreachable"
    assert await calls(third) == 0


async def test_429_fails_over_without_waiting_for_other_upstreams(
    start_mock: StartMock, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """A rate-limited primary (retry-after: 1) gives way to the backup at once."""
    limited, backup = await start_mock("status:429"), await start_mock()
    gateway = await start_gateway(config(up("limited", limited.url), up("backup", backup.url)))
    status, _, _ = await chat(http, gateway.base_url)
    assert status == 200
    assert (await calls(limited), await calls(backup)) == (1, 1)


async def test_429_moves_to_the_next_key(
    start_mock: StartMock, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """An upstream with several keys is retried with the next key after a 429."""
    limited = await start_mock("status:429")
    keys = ("sk-first-key-000000", "sk-second-key-11111")
    upstream = UpstreamConfig(name="multi", base_url=limited.url, api_keys=keys)
    gateway = await start_gateway(config(upstream, max_retry_after_ms=0))
    status, _, _ = await chat(http, gateway.base_url)
    assert status == 429  # both keys limited: the last answer is relayed
    sent = await limited.requests(2)
    assert [r["headers"]["authorization"] for r in sent] == [f"Bearer {k}" for k in keys]


async def test_4xx_is_relayed_without_failover(
    start_mock: StartMock, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """A 400 from the primary is the answer: the backup is never called."""
    refusing, backup = await start_mock("status:400"), await start_mock()
    gateway = await start_gateway(config(up("a", refusing.url), up("b", backup.url)))
    status, _, _ = await chat(http, gateway.base_url)
    assert status == 400
    assert await calls(backup) == 0


async def test_no_failover_after_the_stream_started(
    start_mock: StartMock, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """A stream dying mid-way ends with an in-band error; the backup is never called."""
    dying, backup = await start_mock("die-after:2"), await start_mock()
    gateway = await start_gateway(config(up("a", dying.url), up("b", backup.url)))
    body = {**CHAT, "stream": True}
    async with http.post(f"{gateway.base_url}/chat/completions", json=body, headers=AUTH) as r:
        assert r.status == 200
        text = (await r.read()).decode()
    assert "event: error" in text
    assert await calls(backup) == 0


async def test_alias_rewrites_the_model_per_upstream(
    start_mock: StartMock, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """An alias sends the backup its own model name, after the primary failed."""
    broken, backup = await start_mock("status:500"), await start_mock()
    alias = ModelAlias("smart", (("a", "gpt-4o"), ("b", "gpt-4o-2024-11-20")))
    base = config(up("a", broken.url, models=("none",)), up("b", backup.url, models=("none",)))
    gateway = await start_gateway(dataclasses.replace(base, aliases=(alias,)))
    status, _, body = await chat(http, gateway.base_url, {**CHAT, "model": "smart"})
    assert status == 200
    assert body["model"] == "gpt-4o-2024-11-20"  # the mock answers with the model it was asked
    assert await calls(broken) == 1


async def test_open_breakers_answer_503_at_once(
    start_mock: StartMock, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """5xx answers to two keys open the breaker: then 503 at once, and /readyz stays ready."""
    broken = await start_mock("status:500")
    gateway = await start_gateway(
        config(up("a", broken.url), breaker_failures=2, breaker_cooldown_ms=60_000)
    )
    for auth in (AUTH, OTHER, AUTH):  # the first counts once a second key has failed
        assert (await chat(http, gateway.base_url, headers=auth))[0] == 500
    status, headers, body = await chat(http, gateway.base_url, headers=OTHER)
    assert status == 503 and body["error"]["code"] == "upstreams_unavailable"
    assert 1 <= int(headers["retry-after"]) <= 60
    assert await calls(broken) == 3
    assert await readiness(http, gateway) == (
        200,
        {
            "status": "ready",
            "upstream_client": "ok",
            "store": "embedded",
            "usage_tracker": "ok",
            "upstreams": {"a": "open"},
        },
    )
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with http.get(f"{gateway.url}/admin/v1/upstreams", headers=admin) as r:
        assert r.status == 200
        (entry,) = (await r.json())["data"]
    assert entry["name"] == "a" and entry["state"] == "open"
    assert entry["recent_failures"] == 2 and entry["error_rate"] == 1.0
    assert entry["in_flight"] == 0 and entry["latency_ms"] is not None
    assert UPSTREAM_KEY not in str(entry)


async def test_one_key_flooding_passthrough_500s_cannot_open_the_breaker(
    start_mock: StartMock, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """A tenant whose pass-through requests all get 500 leaves the upstream to everyone else."""
    upstream = await start_mock()
    gateway = await start_gateway(
        config(up("a", upstream.url), breaker_failures=2, breaker_cooldown_ms=60_000)
    )
    flood = {**AUTH, "x-mock-fault": "status:500"}
    body = {"model": "omni-moderation-latest", "input": "hi"}
    for _ in range(10):
        async with http.post(f"{gateway.base_url}/moderations", json=body, headers=flood) as r:
            assert r.status == 500
    assert (await chat(http, gateway.base_url, headers=OTHER))[0] == 200
    status, ready = await readiness(http, gateway)
    assert status == 200 and ready["upstreams"] == {"a": "closed"}


async def test_a_burst_of_provider_429s_opens_no_breaker(
    start_mock: StartMock, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """Provider 429s, even to several keys, count as no failure: the next request is served."""
    upstream = await start_mock()
    gateway = await start_gateway(
        config(up("a", upstream.url), breaker_failures=2, breaker_cooldown_ms=60_000)
    )
    for auth in (AUTH, OTHER) * 5:
        limited = {**auth, "x-mock-fault": "status:429"}
        assert (await chat(http, gateway.base_url, headers=limited))[0] == 429
    assert (await chat(http, gateway.base_url, headers=OTHER))[0] == 200
    status, ready = await readiness(http, gateway)
    assert status == 200 and ready["upstreams"] == {"a": "closed"}


async def test_one_key_meeting_a_dead_upstream_opens_its_breaker(
    start_mock: StartMock, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """Refused connections count whoever asked: a request body cannot cause them."""
    backup = await start_mock()
    gateway = await start_gateway(
        config(up("dead", closed_url()), up("backup", backup.url), breaker_failures=2)
    )
    for _ in range(3):
        assert (await chat(http, gateway.base_url))[0] == 200
    assert await calls(backup) == 3
    status, ready = await readiness(http, gateway)
    assert status == 200 and ready["upstreams"] == {"dead": "open", "backup": "closed"}


async def test_admin_api_needs_the_token(
    start_mock: StartMock, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """No or a wrong admin token is a 401; without [admin] token the API does not exist."""
    upstream = await start_mock()
    gateway = await start_gateway(config(up("a", upstream.url)))
    url = f"{gateway.url}/admin/v1/upstreams"
    for headers in ({}, {"Authorization": "Bearer wrong"}, AUTH):
        async with http.get(url, headers=headers) as r:
            assert r.status == 401
    plain = await start_gateway(dataclasses.replace(gateway.config, admin=AdminConfig()))
    async with http.get(f"{plain.url}/admin/v1/upstreams") as r:
        assert r.status == 404


async def test_passthrough_json_fails_over(
    start_mock: StartMock, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """A pass-through request with a JSON body is replayed on the backup."""
    backup = await start_mock()
    gateway = await start_gateway(config(up("dead", closed_url()), up("backup", backup.url)))
    body = {"model": "omni-moderation-latest", "input": "hi"}
    async with http.post(f"{gateway.base_url}/moderations", json=body, headers=AUTH) as r:
        assert r.status == 200
    assert await calls(backup) == 1
