"""Redis Sentinel: ``[redis] sentinels``, and limits that survive the primary's death.

A real primary, one replica and three sentinels (``tests/support/redis_ha.py``). The gateway
finds the primary through the sentinels, fails closed to its local share while there is none,
and is back to exact limits in the promoted replica within seconds of the promotion.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import aiohttp
import pytest
from multidict import CIMultiDict
from redis.asyncio import Redis

from sentinel.config import (
    Config,
    ConfigError,
    KeyConfig,
    RedisConfig,
    ServerConfig,
    UpstreamConfig,
    hash_key,
    load_config,
)
from sentinel.limits import RedisStore
from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, StartGateway, Upstream
from tests.support.redis_ha import MASTER_NAME, RedisHA, start_redis_ha

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
DEGRADED = "x-sentinel-degraded"
WORKERS = 4
"""Clients sending one request after another during the failover test."""


@pytest.fixture
async def redis_ha(tmp_path: Path) -> AsyncIterator[RedisHA]:
    """A primary, a replica and three sentinels that agree on them; all killed at teardown."""
    ha = start_redis_ha(tmp_path)
    try:
        await ha.wait_ready()
        yield ha
    finally:
        ha.stop()


def ha_config(
    upstream_url: str, ha: RedisHA, name: str, *, timeout_ms: int, replicas: int = 1
) -> Config:
    """One key with ``rpm = 200`` whose limits live behind ``ha``'s sentinels."""
    redis = RedisConfig(
        sentinels=ha.addresses, master_name=MASTER_NAME, timeout_ms=timeout_ms, replicas=replicas
    )
    return Config(
        upstreams=(UpstreamConfig(name="mock", base_url=upstream_url, api_key=UPSTREAM_KEY),),
        keys=(KeyConfig(name=name, key_sha256=hash_key(CLIENT_KEY), rpm=200),),
        server=ServerConfig(bind="127.0.0.1:0"),
        redis=redis,
    )


async def post(http: aiohttp.ClientSession, url: str) -> tuple[int, CIMultiDict[str]]:
    """POST a chat completion; its status and headers."""
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    async with http.post(url + "/v1/chat/completions", json=CHAT, headers=headers) as response:
        await response.read()
        return response.status, CIMultiDict(response.headers)


async def command(client: Redis, *args: str) -> object:
    """``client.execute_command``, which redis-py leaves unannotated."""
    execute = cast(Callable[..., Awaitable[object]], client.execute_command)
    return await execute(*args)


# --- [redis] sentinels in the config -------------------------------------------------------------


def write(tmp_path: Path, redis: str) -> Path:
    path = tmp_path / "sentinel.toml"
    upstream = '[[upstreams]]\nname = "m"\nbase_url = "http://127.0.0.1:1/v1"\n'
    path.write_text(f"[redis]\n{redis}\n{upstream}")
    return path


def test_sentinels_name_the_master_instead_of_a_url(tmp_path: Path) -> None:
    """``sentinels`` + ``master_name`` (+ secrets from the environment, ``db``) load; no url."""
    path = write(
        tmp_path,
        'sentinels = ["10.0.0.1:26379", "[::1]:26380", "s3.internal:26379"]\n'
        'master_name = "mymaster"\nsentinel_password = "env:SP"\npassword = "env:MP"\ndb = 2',
    )
    config = load_config(path, env={"SP": "sentinel-secret", "MP": "master-secret"})
    assert config.redis == RedisConfig(
        url="",
        sentinels=("10.0.0.1:26379", "[::1]:26380", "s3.internal:26379"),
        master_name="mymaster",
        sentinel_password="sentinel-secret",
        password="master-secret",
        db=2,
    )
    assert {"sentinel-secret", "master-secret"} <= set(config.secrets())


def test_sentinel_problems_are_reported_with_their_paths(tmp_path: Path) -> None:
    """Bad entries, a missing master name and a url or cluster beside sentinels: all at once."""
    path = write(
        tmp_path,
        'sentinels = ["a:26379", "b", "c:0", 7]\nurl = "redis://x:6379/0"\ncluster = true',
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems == [
        "redis.sentinels[1]: expected HOST:PORT, got 'b'",
        "redis.sentinels[2]: expected a port from 1 to 65535, got 'c:0'",
        'redis.sentinels[3]: expected a "host:port" string, got 7',
        "redis.master_name: is required",
        "redis.url: cannot be combined with redis.sentinels (they name the master)",
        "redis.cluster: cannot be combined with redis.sentinels",
    ]


def test_sentinel_settings_without_sentinels_are_reported(tmp_path: Path) -> None:
    """``master_name``, ``password`` or ``db`` beside a url: a url carries its own."""
    path = write(tmp_path, 'master_name = "mymaster"\npassword = "pw"\ndb = 1\nsentinels = []')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems == [
        'redis.sentinels: expected a non-empty array of "host:port", got an array',
    ]
    path = write(tmp_path, 'master_name = "mymaster"\npassword = "pw"\ndb = 1')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems == [
        "redis.master_name: only with redis.sentinels",
        "redis.password: only with redis.sentinels (a url carries its own)",
        "redis.db: only with redis.sentinels (a url carries its own)",
    ]


# --- a failover under load -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """One response of the load loop, with when it was sent and answered (loop time)."""

    sent: float
    answered: float
    status: int
    degraded: bool
    remaining: int | None


async def test_a_demoted_primary_is_unavailable_and_its_connection_dropped(
    upstream: Upstream, start_gateway: StartGateway, redis_ha: RedisHA
) -> None:
    """A primary turned replica answers ``-READONLY``: the local share decides (no 5xx), and
    the connection that read it is closed, so the next one asks the sentinels again."""
    config = ha_config(upstream.url, redis_ha, f"k-{uuid.uuid4().hex[:10]}", timeout_ms=1_000)
    # Only the limit store runs scripts then (the usage counters would hold another connection).
    no_counters = dataclasses.replace(config.usage, redis_counters=False)
    gateway = await start_gateway(dataclasses.replace(config, usage=no_counters))
    primary = redis_ha.primary.client(decode_responses=True)
    replica = redis_ha.replica.client()
    try:
        async with aiohttp.ClientSession() as http:
            status, headers = await post(http, gateway.url)
            assert status == 200 and DEGRADED not in headers
            held = {c["id"] for c in await primary.client_list() if c["cmd"] == "fcall"}
            assert held  # the limit store's connection, held between batches

            # What a failover does to the old primary, without Sentinel's CLIENT KILL.
            await command(replica, "REPLICAOF", "NO", "ONE")
            await command(primary, "REPLICAOF", "127.0.0.1", str(redis_ha.replica.port))

            status, headers = await post(http, gateway.url)
            assert status == 200 and headers.get(DEGRADED) == "limits"
            async with asyncio.timeout(2):
                while held & {c["id"] for c in await primary.client_list()}:
                    await asyncio.sleep(0.01)
    finally:
        await primary.aclose()
        await replica.aclose()


@pytest.mark.slow
async def test_primary_killed_mid_load_fails_closed_then_follows_the_promoted_replica(
    upstream: Upstream, start_gateway: StartGateway, redis_ha: RedisHA
) -> None:
    """rpm = 200 over 2 replicas: the primary SIGKILLed mid-load gives degraded answers (at
    most 100 admitted here, no 5xx) until the sentinels promote the replica; within 5 s of
    that, answers are exact again and the new primary's window holds every request."""
    name = f"k-{uuid.uuid4().hex[:10]}"
    config = ha_config(upstream.url, redis_ha, name, replicas=2, timeout_ms=200)
    gateway = await start_gateway(config)
    loop = asyncio.get_running_loop()
    answers: list[Answer] = []
    lag_bytes: list[int] = []
    stop = asyncio.Event()

    async def load() -> None:
        async with aiohttp.ClientSession() as http:
            while not stop.is_set():
                sent = loop.time()
                status, headers = await post(http, gateway.url)
                remaining = headers.get("x-ratelimit-remaining-requests")
                answers.append(
                    Answer(
                        sent,
                        loop.time(),
                        status,
                        headers.get(DEGRADED) == "limits",
                        int(remaining) if remaining is not None else None,
                    )
                )
                await asyncio.sleep(0.01)

    async def sample_lag(primary: Redis, replica: Redis) -> None:
        # Replica first: the difference is an upper bound of the lag at that moment.
        while True:
            copied = (await replica.info("replication"))["slave_repl_offset"]
            written = (await primary.info("replication"))["master_repl_offset"]
            lag_bytes.append(int(written) - int(copied))
            await asyncio.sleep(0.005)

    primary = redis_ha.primary.client()
    replica = redis_ha.replica.client()
    offset_before = int((await primary.info("replication"))["master_repl_offset"])
    sampler = asyncio.create_task(sample_lag(primary, replica))
    loaders = [asyncio.create_task(load()) for _ in range(WORKERS)]
    try:
        async with asyncio.timeout(10):
            while sum(a.status == 200 for a in answers) < 50:
                await asyncio.sleep(0.01)
        offset_growth = int((await primary.info("replication"))["master_repl_offset"])
        offset_growth -= offset_before
        admitted_before = sum(a.status == 200 for a in answers)
        sampler.cancel()
        killed = loop.time()
        redis_ha.primary.stop()  # SIGKILL

        # What survives is the replica's copy, frozen until the promotion.
        async with asyncio.timeout(5):
            while (await replica.info("replication"))["master_link_status"] != "down":
                await asyncio.sleep(0.005)
        replicated = await RedisStore(replica, 1_000).state(f"cfg:{name}")
        async with asyncio.timeout(20):
            while redis_ha.replica.port not in await redis_ha.master_ports():
                await asyncio.sleep(0.01)
        promoted = loop.time()
        async with asyncio.timeout(8):  # the window's end: exact again, and full
            while not any(
                a.sent > promoted and a.status == 429 and not a.degraded for a in answers
            ):
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        sampler.cancel()
        await asyncio.gather(*loaders, sampler, return_exceptions=True)
        await primary.aclose()

    try:
        window = await RedisStore(replica, 1_000).state(f"cfg:{name}")
    finally:
        await replica.aclose()

    assert all(a.status in (200, 429) for a in answers), {a.status for a in answers}
    after_kill = [a for a in answers if a.sent > killed]
    first_degraded = next(a for a in after_kill if a.degraded)
    exact = next(a for a in after_kill if not a.degraded)
    # Degraded from the kill until the gateway finds the promoted replica, then exact for good.
    assert all(a.degraded for a in after_kill if a.answered < exact.answered)
    assert not any(a.degraded for a in answers if a.sent > exact.answered)
    assert exact.answered - promoted < 5, exact.answered - promoted
    degraded_admitted = sum(a.status == 200 for a in answers if a.degraded)
    assert degraded_admitted <= 100  # the local share: rpm 200 // 2 replicas
    # The first exact answer already counts what survived and what was admitted locally
    # (and at most the other workers' admissions of the same moment).
    in_redis_before = sum(replicated.requests.values())
    assert exact.remaining is not None
    assert 0 <= 200 - in_redis_before - degraded_admitted - 1 - exact.remaining < WORKERS
    # The new primary holds every request: the surviving copy, the local share written
    # back, and every admission since; and it refuses past 200.
    admitted_after = sum(a.status == 200 for a in answers if not a.degraded and a.sent > killed)
    assert sum(window.requests.values()) == in_redis_before + degraded_admitted + admitted_after
    assert sum(window.requests.values()) == 200
    admitted_in_redis = sum(a.status == 200 and not a.degraded for a in answers)
    lost = admitted_in_redis - admitted_after - in_redis_before  # < 0: counted twice
    per_request = offset_growth / admitted_before
    print(  # the measured times, for the README
        f"\nkill -> degraded {1000 * (first_degraded.answered - killed):.0f} ms; "
        f"kill -> promotion {1000 * (promoted - killed):.0f} ms; "
        f"promotion -> exact {1000 * (exact.answered - promoted):.0f} ms; "
        f"degraded admitted {degraded_admitted}; lost in the failover {max(0, lost)}; "
        f"replication lag max {max(lag_bytes)} B over {len(lag_bytes)} samples "
        f"(≈{max(lag_bytes) / per_request:.1f} requests at {per_request:.0f} B each)"
    )
