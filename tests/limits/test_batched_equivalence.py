"""Operations sent together, as one call, equal the Python reference run one by one.

The limit store sends every operation queued while a call is in flight as one ``FCALL``,
whose hashes are read and written once; these random sequences send groups of operations
at once (admissions of several keys, settlements and renewals, of reservations admitted in
the same group too, with time moving inside a group, past lease and hold expiries) and
check each reply and every stored counter against the reference.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
from redis.asyncio import Redis

from sentinel.limits import Admission, LimitSpec, MemoryStore, RedisStore, Reservation
from tests.limits import test_equivalence as tokens
from tests.limits import test_money_equivalence as money
from tests.limits.test_equivalence import START, TIMING, assert_meta_exact
from tests.support.redis_server import RedisServer

INSIDE = (0, 0, 0, 1, 3, 499, 500, 1_000, 61_000, 95_000)
"""Time steps between the operations of one group (90 s leases expire inside some)."""

_Run = Callable[[], Awaitable[Any]]


async def run_groups(
    client: Redis,
    prefix: str,
    seed: int,
    groups: int,
    *,
    spec_of: Callable[[random.Random], LimitSpec],
    keys: tuple[str, ...],
    states: tuple[str, ...],
) -> int:
    """Random groups of operations: the reference applies them one by one, the store gets
    each group at once; returns how many calls carried more than one operation."""
    rng = random.Random(seed)
    memory = MemoryStore(TIMING)
    store = RedisStore(client, 2_000, timing=TIMING, prefix=prefix)
    specs = {key: spec_of(rng) for key in keys}
    now = START
    open_reservations: list[Reservation] = []
    shared = 0
    for group in range(groups):
        now += rng.choice(tokens.STEPS)
        if rng.random() < 0.1:
            await money.fund(memory, client, prefix, rng.choice(keys), rng.randint(1, 30_000))
        calls: list[_Run] = []
        expected: list[object] = []
        for step in range(rng.randint(1, 9)):
            now += rng.choice(INSIDE)
            key = rng.choice(keys)
            roll = rng.random()
            at = now
            if roll < 0.5 or not open_reservations:
                nano = rng.randint(0, 6_000)
                admission = Admission(
                    key, f"q{group}", rng.randint(0, 900), f"{group}-{step}", nano
                )
                if rng.random() < 0.05:
                    specs[key] = spec_of(rng)
                spec = specs[key]
                decision = await memory.admit(spec, admission, at)
                expected.append(decision)
                calls.append(partial(store.admit, spec, admission, at))
                if decision.reservation is not None:
                    open_reservations.append(decision.reservation)
            elif roll < 0.85:
                reservation = open_reservations.pop(rng.randrange(len(open_reservations)))
                actual, release = rng.randint(0, 1_100), rng.random() < 0.3
                cost = rng.randint(0, reservation.nano_usd + reservation.nano_usd // 5 + 1)
                expected.append(
                    await memory.settle(
                        reservation, actual, at, release_request=release, nano_usd=cost
                    )
                )
                calls.append(
                    partial(
                        store.settle,
                        reservation,
                        actual,
                        at,
                        release_request=release,
                        nano_usd=cost,
                    )
                )
            else:
                reservation = rng.choice(open_reservations)
                expected.append(await memory.renew(reservation, at))
                calls.append(partial(store.renew, reservation, at))
        before = await _fcalls(client)
        assert await asyncio.gather(*(call() for call in calls)) == expected, group
        shared += len(calls) > 1 and await _fcalls(client) - before == 1
        for name in states:
            assert await store.state(name) == await memory.state(name), (group, name)
            await money.assert_held_exact(client, prefix, name)
            await assert_meta_exact(client, prefix, name)
    return shared


async def _fcalls(client: Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_fcall", {}).get("calls", 0))


_SUITES = {
    # Windows, quotas and leases.
    "tokens": (tokens.random_spec, tokens.KEYS, tokens.KEYS),
    # Holds, charges, credits and team budgets.
    "money": (money.random_spec, money.KEYS, money.STATES),
}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("suite", sorted(_SUITES))
async def test_operations_sent_together_match_the_reference(
    redis_server: RedisServer, prefix: str, suite: str, seed: int
) -> None:
    """Replies and every stored counter agree after each of 120 groups, most of them sent
    as one call."""
    spec_of, keys, states = _SUITES[suite]
    client = redis_server.client()
    try:
        shared = await run_groups(
            client, prefix, seed, 120, spec_of=spec_of, keys=keys, states=states
        )
    finally:
        await client.aclose()
    assert shared > 60
