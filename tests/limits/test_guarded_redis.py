"""GuardedStore over a real redis-server that is killed, restarted and paused mid-load."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from sentinel.breaker import CircuitBreaker
from sentinel.errors import ServiceUnavailable
from sentinel.limits import (
    REDIS_BREAKER,
    Admission,
    GuardedStore,
    LimitSpec,
    MemoryStore,
    RedisStore,
    StoreUnavailable,
)
from tests.limits.conftest import TIMING, FakeClock
from tests.support.redis_server import RedisServer

KEY = "team-a"
SPEC = LimitSpec(rpm=100, tpm=1_000_000, tokens_per_day=10_000_000)
_ids = itertools.count()


def ask(tokens: int = 10) -> Admission:
    n = next(_ids)
    return Admission(KEY, f"req-{n}", tokens, f"k{n}")


@pytest.fixture
async def client(private_redis: RedisServer) -> AsyncIterator[Redis]:
    """A client of this test's own redis-server."""
    client = private_redis.client(socket_connect_timeout=0.2, socket_timeout=0.2)
    try:
        yield client
    finally:
        await client.aclose()


def guarded_store(client: Redis, **options: object) -> GuardedStore:
    """A guarded Redis store for 2 replicas with a 100 ms call timeout and a 1 s breaker."""
    primary = RedisStore(client, 100, timing=TIMING, prefix="sentinel")
    return GuardedStore(
        primary,
        MemoryStore(TIMING),
        replicas=2,
        breaker=CircuitBreaker(REDIS_BREAKER),
        **options,  # type: ignore[arg-type]
    )


async def test_redis_killed_mid_load_falls_back_to_the_local_share(
    private_redis: RedisServer, client: Redis, clock: FakeClock
) -> None:
    """Killing Redis mid-load raises nothing and admits at most rpm/replicas locally."""
    guarded = guarded_store(client)
    before = [await guarded.admit(SPEC, ask(), clock.advance(10)) for _ in range(30)]
    assert all(d.allowed and not d.degraded for d in before)
    private_redis.stop()
    during = [await guarded.admit(SPEC, ask(), clock.advance(10)) for _ in range(100)]
    assert all(d.degraded for d in during)
    assert sum(d.allowed for d in during) == 50
    assert guarded.stats.unavailable == 1


async def test_deny_mode_answers_503_while_redis_is_down(
    private_redis: RedisServer, client: Redis, clock: FakeClock
) -> None:
    """With on_unavailable='deny', a dead Redis means ServiceUnavailable, never an admission."""
    guarded = guarded_store(client, on_unavailable="deny")
    private_redis.stop()
    for _ in range(3):
        with pytest.raises(ServiceUnavailable):
            await guarded.admit(SPEC, ask(), clock.advance(10))


async def test_restarted_redis_receives_the_locally_admitted_usage(
    private_redis: RedisServer, client: Redis, clock: FakeClock
) -> None:
    """After a restart, the probe writes the outage's requests and tokens back into Redis."""
    guarded = guarded_store(client)
    private_redis.stop()
    for _ in range(20):
        await guarded.admit(SPEC, ask(1_000), clock.advance(10))
    private_redis.start()  # empty: nothing was persisted
    clock.advance(1_000)
    after = await guarded.admit(SPEC, ask(1_000), clock.now_ms())
    assert after.allowed and not after.degraded
    redis_store = RedisStore(client, 1_000, timing=TIMING, prefix="sentinel")
    usage = await redis_store.usage(KEY, SPEC, clock.now_ms())
    assert (usage.requests, usage.tokens, usage.day) == (21, 21_000, 21_000)
    assert (await guarded.local_state(KEY)).is_empty()


async def test_recovery_comes_with_the_first_probe_after_the_breaker_delay(
    private_redis: RedisServer, client: Redis, clock: FakeClock
) -> None:
    """While Redis is still down probes fail; the first probe after it is back recovers."""
    guarded = guarded_store(client)
    private_redis.stop()
    await guarded.admit(SPEC, ask(), clock.now_ms())
    assert not await guarded.recover(clock.advance(1_000))
    private_redis.start()
    assert not await guarded.recover(clock.advance(999))  # the next probe is not due yet
    assert await guarded.recover(clock.advance(1))


async def test_settlement_queued_in_the_outage_frees_the_redis_lease(
    private_redis: RedisServer, client: Redis, clock: FakeClock
) -> None:
    """A lease taken in Redis and settled during a pause is released once Redis answers."""
    spec = LimitSpec(max_parallel=1)
    guarded = guarded_store(client)
    decision = await guarded.admit(spec, ask(), clock.now_ms())
    assert decision.reservation is not None
    admin = private_redis.client()
    await admin.client_pause(300)
    await guarded.settle(decision.reservation, 0, clock.advance(5), release_request=True)
    assert guarded.stats.settlements_queued == 1
    assert await admin.ping()  # answered only once the pause is over
    await admin.aclose()
    assert await guarded.recover(clock.advance(1_000))
    assert (await guarded.admit(spec, ask(), clock.advance(1))).allowed


async def test_paused_redis_times_out_at_timeout_ms(
    private_redis: RedisServer, client: Redis, clock: FakeClock
) -> None:
    """A Redis that stops answering costs one call timeout_ms, not a hang."""
    store = RedisStore(client, 100, timing=TIMING, prefix="sentinel")
    await store.admit(SPEC, ask(), clock.now_ms())  # scripts loaded, connection open
    admin = private_redis.client()
    await admin.client_pause(3000)
    await admin.aclose()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.admit(SPEC, ask(), clock.now_ms())
    assert time.monotonic() - started < 1.0


async def test_guarded_store_answers_locally_when_redis_hangs(
    private_redis: RedisServer, client: Redis, clock: FakeClock
) -> None:
    """A paused Redis yields a degraded decision within the call timeout, not an error."""
    guarded = guarded_store(client)
    await guarded.admit(SPEC, ask(), clock.now_ms())
    admin = private_redis.client()
    await admin.client_pause(3000)
    await admin.aclose()
    started = time.monotonic()
    decisions = await asyncio.gather(
        *(guarded.admit(SPEC, ask(), clock.now_ms()) for _ in range(20))
    )
    assert time.monotonic() - started < 1.0
    assert all(d.degraded for d in decisions)
