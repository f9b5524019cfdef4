"""The Lua scripts equal the Python reference: same replies, same state, on random sequences."""

from __future__ import annotations

import random

import pytest
from redis.asyncio import Redis

from sentinel.limits import (
    Admission,
    Decision,
    KeyState,
    LimitSpec,
    MemoryStore,
    RedisStore,
    Reservation,
    Timing,
    redis_keys,
)
from tests.support.redis_server import RedisServer

# 2024-03-30 22:00 UTC: Berlin's DST jump, a month end and an ISO week end lie hours ahead.
START = 1_711_836_000_000
TIMING = Timing(bucket_ms=500, lease_ttl_ms=90_000, parallel_retry_ms=700)
STEPS = (0, 0, 1, 7, 499, 500, 501, 3_000, 20_000, 59_999, 60_500, 61_000, 89_999, 3_600_000)
KEYS = ("team-a", "team-b")


def random_spec(rng: random.Random) -> LimitSpec:
    """Small limits so that every dimension refuses now and then (and, rarely, always)."""

    def maybe(low: int, high: int) -> int | None:
        roll = rng.random()
        return None if roll < 0.2 else 0 if roll < 0.23 else rng.randint(low, high)

    return LimitSpec(
        rpm=maybe(1, 12),
        tpm=maybe(500, 4_000),
        max_parallel=maybe(1, 4),
        tokens_per_day=maybe(5_000, 30_000),
        tokens_per_week=maybe(20_000, 90_000),
        tokens_per_month=maybe(50_000, 200_000),
        timezone=rng.choice(("UTC", "Europe/Berlin", "America/Los_Angeles")),
    )


async def run_both(
    memory: MemoryStore,
    redis_store: RedisStore,
    seed: int,
    steps: int,
    client: Redis | None = None,
    prefix: str = "",
    steps_ms: tuple[int, ...] = STEPS,
) -> list[Decision]:
    """Apply one random sequence to both stores, asserting equality after every step."""
    rng = random.Random(seed)
    specs = {key: random_spec(rng) for key in KEYS}
    now = START
    open_reservations: list[Reservation] = []
    decisions: list[Decision] = []
    for step in range(steps):
        now += rng.choice(steps_ms)
        key = rng.choice(KEYS)
        roll = rng.random()
        if roll < 0.55 or not open_reservations:
            admission = Admission(key, f"q{step}", rng.randint(0, 900), f"{seed}-{step}")
            if rng.random() < 0.05:
                specs[key] = random_spec(rng)
            expected = await memory.admit(specs[key], admission, now)
            assert await redis_store.admit(specs[key], admission, now) == expected, step
            decisions.append(expected)
            if expected.reservation is not None:
                open_reservations.append(expected.reservation)
        elif roll < 0.9:
            reservation = open_reservations.pop(rng.randrange(len(open_reservations)))
            actual, release = rng.randint(0, 1_100), rng.random() < 0.3
            await memory.settle(reservation, actual, now, release_request=release)
            await redis_store.settle(reservation, actual, now, release_request=release)
        else:
            reservation = rng.choice(open_reservations)
            expected_renewal = await memory.renew(reservation, now)
            assert await redis_store.renew(reservation, now) == expected_renewal
        for name in KEYS:
            assert await redis_store.state(name) == await memory.state(name), (step, name)
            if client is not None:
                await assert_meta_exact(client, prefix, name)
    return decisions


def _text(field: bytes | str) -> str:
    return field if isinstance(field, str) else field.decode()


async def assert_meta_exact(client: Redis, prefix: str, name: str) -> None:
    """Each window hash's running sum, newest start and lower bound match its buckets."""
    for key in redis_keys(prefix, name)[:2]:
        raw = {_text(k): int(v) for k, v in (await client.hgetall(key)).items()}
        meta = {k: raw.pop(k) for k in ("s", "l", "h", "b") if k in raw}
        buckets = {int(k): v for k, v in raw.items()}
        if not buckets:
            assert not meta, key
            continue
        assert meta["s"] == sum(buckets.values()), key
        assert meta["h"] == max(buckets), key
        assert meta["l"] <= min(buckets), key
        assert meta["b"] == TIMING.bucket_ms, key


@pytest.mark.parametrize("seed", range(12))
async def test_lua_matches_the_reference_on_random_sequences(
    redis_server: RedisServer, prefix: str, seed: int
) -> None:
    """Decisions, renewals and every stored counter agree after each of 300 random steps."""
    client = redis_server.client()
    try:
        redis_store = RedisStore(client, 2_000, timing=TIMING, prefix=prefix)
        decisions = await run_both(MemoryStore(TIMING), redis_store, seed, 300, client, prefix)
    finally:
        await client.aclose()
    assert any(d.allowed for d in decisions) and any(not d.allowed for d in decisions)


@pytest.mark.parametrize("seed", range(4))
async def test_lua_matches_the_reference_when_clocks_disagree(
    redis_server: RedisServer, prefix: str, seed: int
) -> None:
    """Replicas whose clocks run behind (time going backwards) still give identical results."""
    skewed = (*STEPS, -1, -400, -2_000, -61_000, -200_000)
    client = redis_server.client()
    try:
        redis_store = RedisStore(client, 2_000, timing=TIMING, prefix=prefix)
        await run_both(MemoryStore(TIMING), redis_store, 100 + seed, 300, client, prefix, skewed)
    finally:
        await client.aclose()


async def test_lua_matches_the_reference_on_write_back(
    redis_server: RedisServer, prefix: str
) -> None:
    """Merging a state into Redis gives what merging it into the reference gives."""
    now = START + 30_000
    incoming = KeyState(
        requests={START: 2, START + 29_500: 1, START - 61_000: 4},
        tokens={START + 500: 700, START - 70_000: 50},
        quotas={"day:2024-03-30": 900, "month:2024-03": 900},
        leases={"live": now + 5, "dead": now, "both": now + 50},
    )
    existing = KeyState(
        requests={START: 1}, quotas={"day:2024-03-30": 100}, leases={"both": now + 9}
    )
    memory = MemoryStore(TIMING)
    await memory.merge("k", existing, now)
    await memory.merge("k", incoming, now)
    client = redis_server.client()
    try:
        redis_store = RedisStore(client, 2_000, timing=TIMING, prefix=prefix)
        await redis_store.merge("k", existing, now)
        await redis_store.merge("k", incoming, now)
        assert await redis_store.state("k") == await memory.state("k")
    finally:
        await client.aclose()
    assert (await memory.state("k")).leases == {"live": now + 5, "both": now + 50}
