"""The money dimensions in Lua equal the Python reference: replies and state, random steps."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from redis.asyncio import Redis

from sentinel.config.budgets import Budgets
from sentinel.limits import Admission, Decision, LimitSpec, MemoryStore, RedisStore, Reservation
from sentinel.limits.decision import team_state_name
from sentinel.limits.redis_store import money_keys
from tests.limits.test_equivalence import START, STEPS, TIMING
from tests.support.redis_server import RedisServer

KEYS = ("cfg:a", "key_b")
TEAM = "research"
STATES = (*KEYS, team_state_name(TEAM))


def random_budgets(rng: random.Random, scale: int) -> Budgets:
    """Small budgets (nano-USD) so that holds refuse now and then."""

    def maybe() -> int | None:
        roll = rng.random()
        return None if roll < 0.4 else 0 if roll < 0.43 else rng.randint(scale // 4, scale)

    return Budgets(
        usd_per_day=maybe(), usd_per_week=maybe(), usd_per_month=maybe(), usd_total=maybe()
    )


def random_spec(rng: random.Random) -> LimitSpec:
    """Token limits now and then, money always in some form."""
    return LimitSpec(
        rpm=rng.choice((None, None, 8)),
        max_parallel=rng.choice((None, 3)),
        tokens_per_day=rng.choice((None, 20_000)),
        timezone=rng.choice(("UTC", "Europe/Berlin")),
        budgets=random_budgets(rng, 20_000),
        team=rng.choice((None, TEAM)),
        team_budgets=random_budgets(rng, 40_000),
        credits=rng.random() < 0.5,
    )


async def fund(memory: MemoryStore, client: Redis, prefix: str, key: str, amount: int) -> None:
    """The same top-up in both stores (credits.lua's bookkeeping is tested elsewhere)."""
    memory.fund(key, amount)
    await client.hincrby(money_keys(prefix, key)[2], "in", amount)


async def assert_held_exact(client: Redis, prefix: str, name: str) -> None:
    """The running sum of holds in the money hash equals the holds stored."""
    money, holds, _, _ = money_keys(prefix, name)
    members: list[bytes] = await client.zrange(holds, 0, -1)  # type: ignore[assignment]
    total = sum(int(m.decode().rpartition(":")[2]) for m in members)
    held = await client.hget(money, "held")
    assert int(held or 0) == total, name


async def run_both(
    memory: MemoryStore, store: RedisStore, client: Redis, prefix: str, seed: int, steps: int
) -> list[Decision]:
    """One random sequence of admissions, settlements, renewals and top-ups on both stores."""
    rng = random.Random(seed)
    specs = {key: random_spec(rng) for key in KEYS}
    now = START
    open_reservations: list[Reservation] = []
    decisions: list[Decision] = []
    for step in range(steps):
        now += rng.choice((*STEPS, 700_000))
        key = rng.choice(KEYS)
        roll = rng.random()
        if roll < 0.05:
            await fund(memory, client, prefix, key, rng.randint(1, 30_000))
        elif roll < 0.6 or not open_reservations:
            admission = Admission(
                key, f"q{step}", rng.randint(0, 900), f"{seed}-{step}", rng.randint(0, 6_000)
            )
            if rng.random() < 0.05:
                specs[key] = random_spec(rng)
            expected = await memory.admit(specs[key], admission, now)
            assert await store.admit(specs[key], admission, now) == expected, step
            decisions.append(expected)
            if expected.reservation is not None:
                open_reservations.append(expected.reservation)
        elif roll < 0.9:
            reservation = open_reservations.pop(rng.randrange(len(open_reservations)))
            actual, release = rng.randint(0, 1_100), rng.random() < 0.3
            cost = rng.randint(0, reservation.nano_usd + reservation.nano_usd // 5 + 1)
            await memory.settle(reservation, actual, now, release_request=release, nano_usd=cost)
            await store.settle(reservation, actual, now, release_request=release, nano_usd=cost)
        else:
            reservation = rng.choice(open_reservations)
            assert await store.renew(reservation, now) == await memory.renew(reservation, now)
        for name in STATES:
            assert await store.state(name) == await memory.state(name), (step, name)
            await assert_held_exact(client, prefix, name)
    return decisions


@pytest.mark.parametrize("seed", range(8))
async def test_money_in_lua_matches_the_reference(
    redis_server: RedisServer, prefix: str, seed: int
) -> None:
    """Holds, charges, credits and team budgets agree after each of 300 random steps."""
    client = redis_server.client()
    try:
        store = RedisStore(client, 2_000, timing=TIMING, prefix=prefix)
        decisions = await run_both(MemoryStore(TIMING), store, client, prefix, seed, 300)
    finally:
        await client.aclose()
    refused = {d.refusal.dimension for d in decisions if d.refusal is not None}
    assert any(d.allowed for d in decisions)
    assert any(dimension.is_money for dimension in refused)


async def test_money_write_back_matches_the_reference(
    redis_server: RedisServer, prefix: str
) -> None:
    """Merging money counters and holds into Redis gives what merging into the reference gives."""
    client = redis_server.client()
    memory = MemoryStore(TIMING)
    store = RedisStore(client, 2_000, timing=TIMING, prefix=prefix)
    spec = LimitSpec(budgets=Budgets(usd_total=10_000), credits=True)
    try:
        await fund(memory, client, prefix, "cfg:a", 50_000)
        for target in (memory, store):
            decision = await target.admit(spec, Admission("cfg:a", "q", 0, "r1", 3_000), START)
            assert decision.reservation is not None
        local = MemoryStore(TIMING)
        share = replace(spec, credit_share=5_000)
        held = await local.admit(share, Admission("cfg:a", "q2", 0, "r2", 2_000), START)
        assert held.reservation is not None
        charged = await local.admit(share, Admission("cfg:a", "q3", 0, "r3", 1_000), START)
        assert charged.reservation is not None
        await local.settle(charged.reservation, 0, START + 5, nano_usd=900)
        state = local.take("cfg:a")
        await memory.merge("cfg:a", state, START + 10)
        await store.merge("cfg:a", state, START + 10)
        assert await store.state("cfg:a") == await memory.state("cfg:a")
        await assert_held_exact(client, prefix, "cfg:a")
    finally:
        await client.aclose()
    merged = await memory.state("cfg:a")
    assert merged.money == {"usd_total": 900, "credits": 900}
    assert set(merged.holds) == {"r1", "r2"}
