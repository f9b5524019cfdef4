"""Limits through the real gateway: admission, refusals, headers, reservations and Redis trouble.

Sentinel runs on real sockets in front of the mock upstream; Redis is a real ``redis-server``
of the test suite's own. Store-level arithmetic is tested in ``tests/limits``; here the
question is whether the proxy admits, refuses, answers and settles exactly as promised.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from multidict import CIMultiDict

from sentinel.config import (
    Config,
    KeyConfig,
    RedisConfig,
    RoutingConfig,
    ServerConfig,
    UpstreamConfig,
    hash_key,
)
from sentinel.config.limits import LimitDefaults
from sentinel.limits import RedisStore
from sentinel.tokens import PromptCounter
from tests.conftest import (
    CLIENT_KEY,
    UPSTREAM_KEY,
    StartGateway,
    Upstream,
    encodings,
)
from tests.support.processes import free_port, sentinel_process
from tests.support.redis_server import RedisServer

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def unique_name() -> str:
    """A key name no other test uses (the session's Redis is shared)."""
    return f"k-{uuid.uuid4().hex[:10]}"


def config_for(
    upstream_url: str,
    *,
    name: str | None = None,
    redis: RedisConfig | None = None,
    limits: LimitDefaults | None = None,
    **key_limits: Any,
) -> Config:
    key = KeyConfig(name=name or unique_name(), key_sha256=hash_key(CLIENT_KEY), **key_limits)
    return Config(
        upstreams=(UpstreamConfig(name="mock", base_url=upstream_url, api_key=UPSTREAM_KEY),),
        keys=(key,),
        server=ServerConfig(bind="127.0.0.1:0"),
        redis=redis,
        limits=limits or LimitDefaults(),
    )


def redis_config(server: RedisServer, **options: Any) -> RedisConfig:
    """``[redis]`` for ``server``; a generous timeout unless the test is about timeouts (a
    busy 2-core CI machine must not flip a test about exactness into the fallback)."""
    options.setdefault("timeout_ms", 1_000)
    return RedisConfig(url=f"redis://127.0.0.1:{server.port}/0", **options)


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
    path: str = "/v1/chat/completions",
) -> tuple[int, CIMultiDict[str], dict[str, Any] | None]:
    """POST ``body``; the status, the headers and the JSON body (None for streams)."""
    async with http.post(
        url + path,
        json=body,
        headers={"Authorization": f"Bearer {CLIENT_KEY}", **(headers or {})},
    ) as response:
        if response.content_type == "application/json":
            data = await response.json()
        else:
            await response.read()
            data = None
        return response.status, CIMultiDict(response.headers), data


# --- answers a client can see ------------------------------------------------------------------


async def test_every_response_carries_rate_limit_headers(
    upstream: Upstream, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(config_for(upstream.url, rpm=10, tpm=100_000))
    status, headers, body = await post(http, gateway.url, {**CHAT, "max_tokens": 50})
    assert status == 200 and body is not None
    assert headers["x-ratelimit-limit-requests"] == "10"
    assert headers["x-ratelimit-remaining-requests"] == "9"
    assert headers["x-ratelimit-limit-tokens"] == "100000"
    reserved = 100_000 - int(headers["x-ratelimit-remaining-tokens"])
    assert reserved > 50  # prompt + the completion cap were reserved before the call
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    # An error answer from the upstream carries them too.
    status, headers, _ = await post(http, gateway.url, CHAT, headers={"x-mock-fault": "status:500"})
    assert status == 500
    assert headers["x-ratelimit-limit-requests"] == "10"


async def test_rpm_refusal_is_openais_429(
    upstream: Upstream, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(config_for(upstream.url, rpm=2))
    for _ in range(2):
        assert (await post(http, gateway.url, CHAT))[0] == 200
    status, headers, body = await post(http, gateway.url, CHAT)
    assert status == 429 and body is not None
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert body["error"]["type"] == "requests"
    assert "2 requests per minute" in body["error"]["message"]
    assert int(headers["retry-after"]) >= 1, headers
    assert 0 < int(headers["retry-after-ms"]) <= 61_000  # one window plus one bucket
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-should-retry" not in headers
    assert "x-request-id" in headers

    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.code == "rate_limit_exceeded"
    await client.close()


async def test_request_larger_than_the_limit_is_insufficient_quota(
    upstream: Upstream, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(config_for(upstream.url, tpm=1_000))
    status, headers, body = await post(http, gateway.url, {**CHAT, "max_tokens": 5_000})
    assert status == 429 and body is not None
    assert body["error"]["code"] == "insufficient_quota"
    assert body["error"]["type"] == "insufficient_quota"
    assert headers["x-should-retry"] == "false"
    assert "retry-after" not in headers  # waiting does not help
    # Nothing was counted: a request that fits still goes through.
    assert (await post(http, gateway.url, {**CHAT, "max_tokens": 100}))[0] == 200


async def test_exhausted_daily_quota_refuses_without_retry(
    upstream: Upstream, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(config_for(upstream.url, tokens_per_day=300))
    # Reserved: prompt + 100; charged after the call: the mock's real usage (a few tokens).
    for _ in range(30):
        status, headers, body = await post(http, gateway.url, {**CHAT, "max_tokens": 100})
        if status == 429:
            break
        assert status == 200
    else:
        raise AssertionError("the daily quota never ran out")
    assert body is not None and body["error"]["code"] == "insufficient_quota"
    assert headers["x-should-retry"] == "false"
    assert int(headers["retry-after"]) <= 86_400


async def test_models_outside_the_allow_list_get_403(
    upstream: Upstream, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(config_for(upstream.url, models=("gpt-4o*", "text-embed*")))
    assert (await post(http, gateway.url, CHAT))[0] == 200
    status, _, body = await post(http, gateway.url, {**CHAT, "model": "o1-preview"})
    assert status == 403 and body is not None
    assert body["error"]["code"] == "model_not_allowed"
    assert body["error"]["param"] == "model"
    embed = {"model": "text-embedding-3-small", "input": "x"}
    assert (await post(http, gateway.url, embed, path="/v1/embeddings"))[0] == 200
    # Pass-through JSON bodies are checked too.
    image = {"model": "dall-e-3", "prompt": "a cat"}
    status, _, body = await post(http, gateway.url, image, path="/v1/images/generations")
    assert status == 403 and body is not None
    assert body["error"]["code"] == "model_not_allowed"
    # /v1/models lists only what this key may call.
    async with http.get(
        gateway.url + "/v1/models", headers={"Authorization": f"Bearer {CLIENT_KEY}"}
    ) as response:
        listed = {entry["id"] for entry in (await response.json())["data"]}
    assert listed and all(m.startswith(("gpt-4o", "text-embed")) for m in listed)


# --- reservations ------------------------------------------------------------------------------


async def _prompt_tokens(body: dict[str, Any]) -> int:
    counter = PromptCounter(encodings(), "o200k_base").for_model(body["model"])
    return await counter.count_prompt("chat", body, size_hint=100)


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_concurrent_streams_reserve_exactly_and_refunds_make_room(
    store: str,
    upstream: Upstream,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    """20 streams reserving 1,000 tokens each against tpm = 10,000: exactly 10 are admitted."""
    redis = redis_config(redis_server) if store == "redis" else None
    gateway = await start_gateway(config_for(upstream.url, redis=redis, tpm=10_000))
    body = {**CHAT, "stream": True}
    body["max_tokens"] = 1_000 - await _prompt_tokens(body)
    slow = {"x-mock-chunk-delay-ms": "40", "x-mock-chunks": "5"}  # each stream lasts ~0.2 s

    results = await asyncio.gather(
        *(post(http, gateway.url, body, headers=slow) for _ in range(20))
    )
    statuses = Counter(status for status, _, _ in results)
    assert statuses == {200: 10, 429: 10}
    for status, headers, data in results:
        if status == 429:
            assert data is not None and data["error"]["type"] == "tokens"
            assert int(headers["retry-after-ms"]) > 0
    # Each stream used far less than it reserved: settlement refunded the rest, so ten more fit.
    again = await asyncio.gather(*(post(http, gateway.url, body) for _ in range(9)))
    assert [status for status, _, _ in again] == [200] * 9


# --- exactness across processes ----------------------------------------------------------------


@pytest.mark.slow
async def test_two_processes_sharing_redis_admit_exactly_the_rpm(
    upstream: Upstream, redis_server: RedisServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """200 concurrent requests through two Sentinel processes at rpm = 100: exactly 100 pass."""
    digest = hashlib.sha256(CLIENT_KEY.encode()).hexdigest()
    name = unique_name()
    urls = []
    async with AsyncExitStack() as stack:
        for n in range(2):
            port = free_port()
            path = tmp_path / f"sentinel-{n}.toml"
            path.write_text(
                f'[server]\nbind = "127.0.0.1:{port}"\n'
                f'[redis]\nurl = "redis://127.0.0.1:{redis_server.port}/0"\nreplicas = 2\n'
                "timeout_ms = 1000\n"
                f'[[upstreams]]\nname = "mock"\nbase_url = "{upstream.url}"\n'
                f'api_key = "env:UP_KEY"\n'
                f'[[keys]]\nname = "{name}"\nkey_sha256 = "sha256:{digest}"\nrpm = 100\n'
            )
            log = stack.enter_context((tmp_path / f"log-{n}.txt").open("wb"))
            env = {"UP_KEY": UPSTREAM_KEY}
            await stack.enter_async_context(sentinel_process(path, port, log, env))
            urls.append(f"http://127.0.0.1:{port}")
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(connector=connector) as many:
            results = await asyncio.gather(*(post(many, urls[i % 2], CHAT) for i in range(200)))
    statuses = Counter(status for status, _, _ in results)
    assert statuses == {200: 100, 429: 100}
    by_process = Counter(i % 2 for i, (status, _, _) in enumerate(results) if status == 200)
    assert sum(by_process.values()) == 100


# --- Redis trouble -----------------------------------------------------------------------------


async def test_redis_killed_mid_load_fails_closed_to_the_local_share_and_recovers(
    upstream: Upstream,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    private_redis: RedisServer,
) -> None:
    """rpm = 20 over 2 replicas: Redis down → at most 10 here, no 5xx; Redis back → shared."""
    name = unique_name()
    redis = redis_config(private_redis, replicas=2, timeout_ms=500)
    gateway = await start_gateway(config_for(upstream.url, name=name, redis=redis, rpm=20))
    for _ in range(5):
        status, headers, _ = await post(http, gateway.url, CHAT)
        assert status == 200 and "x-sentinel-degraded" not in headers

    private_redis.stop()
    results = [await post(http, gateway.url, CHAT) for _ in range(30)]
    statuses = Counter(status for status, _, _ in results)
    assert statuses == {200: 10, 429: 20}  # the local share: 20 // 2, nothing more, no 5xx
    for _, headers, _ in results:
        assert headers.get("x-sentinel-degraded") == "limits"
    # Still ready: the local share serves (taking replicas out would make the outage total).
    async with http.get(gateway.url + "/readyz") as r:
        assert r.status == 200 and (await r.json())["store"] == "redis_unreachable"

    private_redis.start()  # empty: what it held before is gone
    # Recovery needs no traffic: within about a second the background probe writes the 10
    # locally admitted requests back to Redis, so the shared window is true again.
    client = private_redis.client()
    try:
        store = RedisStore(client, 1_000)
        deadline = asyncio.get_running_loop().time() + 3
        while sum((await store.state(f"cfg:{name}")).requests.values()) != 10:
            assert asyncio.get_running_loop().time() < deadline, "never recovered"
            await asyncio.sleep(0.05)
        status, headers, _ = await post(http, gateway.url, CHAT)
        assert status == 200 and "x-sentinel-degraded" not in headers
        assert headers["x-ratelimit-remaining-requests"] == "9"  # 20 - 10 written back - 1
        assert sum((await store.state(f"cfg:{name}")).requests.values()) == 11
    finally:
        await client.aclose()


async def test_redis_down_in_deny_mode_answers_503(
    upstream: Upstream,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    private_redis: RedisServer,
) -> None:
    redis = redis_config(private_redis, on_unavailable="deny", timeout_ms=500)
    gateway = await start_gateway(config_for(upstream.url, redis=redis, rpm=20))
    assert (await post(http, gateway.url, CHAT))[0] == 200
    private_redis.stop()
    status, _, body = await post(http, gateway.url, CHAT)
    assert status == 503 and body is not None
    assert body["error"]["code"] == "limits_unavailable"
    async with http.get(gateway.url + "/readyz") as r:  # deny: nothing limited can be served
        assert r.status == 503 and (await r.json())["store"] == "redis_unreachable"


# --- no leaks ----------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_thousand_upstream_failures_leave_every_counter_at_zero(
    start_gateway: StartGateway, http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    name = unique_name()
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: connection refused
    # A generous Redis timeout: the test client shares this process's loop with the gateway,
    # and this test is about settlement, not about the fallback (tested above).
    config = config_for(
        dead,
        name=name,
        redis=redis_config(redis_server, timeout_ms=2_000),
        rpm=100_000,
        tpm=10**9,
        max_parallel=50,
        tokens_per_day=10**12,
        tokens_per_month=10**12,
    )
    # Keep the upstream's breaker shut so that every request reaches it and is settled.
    never_open = RoutingConfig(breaker_failures=10**6, breaker_min_requests=10**6)
    gateway = await start_gateway(dataclasses.replace(config, routing=never_open))
    connector = aiohttp.TCPConnector(limit=50)
    async with aiohttp.ClientSession(connector=connector) as many:
        results = await asyncio.gather(*(post(many, gateway.url, CHAT) for _ in range(1_000)))
    assert Counter(status for status, _, _ in results) == {502: 1_000}
    client = redis_server.client()
    try:
        state = await RedisStore(client, 1_000).state(f"cfg:{name}")
    finally:
        await client.aclose()
    assert state.is_empty(), state


async def test_limits_hold_on_a_redis_cluster(
    upstream: Upstream,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    redis_cluster: list[RedisServer],
) -> None:
    """``cluster = true``: every call touches one slot, and limits and counters still hold."""
    url = f"redis://127.0.0.1:{redis_cluster[0].port}"
    redis = RedisConfig(url=url, cluster=True, timeout_ms=1_000)
    gateway = await start_gateway(config_for(upstream.url, redis=redis, rpm=3, tpm=100_000))
    results = [await post(http, gateway.url, CHAT) for _ in range(5)]
    assert [status for status, _, _ in results] == [200, 200, 200, 429, 429]
    for _, headers, _ in results:
        assert "x-sentinel-degraded" not in headers


async def test_a_stream_longer_than_the_lease_keeps_its_parallel_slot(
    upstream: Upstream, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """The lease is renewed while the stream runs: no second request slips into its slot."""
    limits = LimitDefaults(lease_ttl_ms=300)  # renewed every 100 ms
    gateway = await start_gateway(config_for(upstream.url, limits=limits, max_parallel=1))
    slow = {
        "Authorization": f"Bearer {CLIENT_KEY}",
        "x-mock-chunks": "30",
        "x-mock-chunk-delay-ms": "40",  # about 1.2 s, four lease lifetimes
    }
    async with http.post(
        gateway.url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=slow
    ) as stream:
        assert stream.status == 200
        events = 0
        while events < 20:  # about 0.8 s in: the lease would have lapsed twice without renewal
            if (await stream.content.readline()).startswith(b"data: "):
                events += 1
        status, _, body = await post(http, gateway.url, CHAT)
        assert status == 429 and body is not None
        assert "concurrent requests" in body["error"]["message"]
        await stream.read()
    assert (await post(http, gateway.url, CHAT))[0] == 200  # released when the stream ended
