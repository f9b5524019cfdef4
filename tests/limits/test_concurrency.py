"""Exactness under concurrency: many admissions at once, from separate clients, never overshoot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sentinel.limits import Admission, Decision, LimitSpec, RedisStore
from tests.limits.conftest import T0, TIMING
from tests.support.redis_server import RedisServer


@pytest.fixture
async def replicas(redis_server: RedisServer, prefix: str) -> AsyncIterator[list[RedisStore]]:
    """Two stores on two clients with separate connection pools, like two Sentinel replicas."""
    clients = [redis_server.client(), redis_server.client()]
    try:
        yield [RedisStore(c, 5_000, timing=TIMING, prefix=prefix) for c in clients]
    finally:
        for client in clients:
            await client.aclose()


async def admit_all(
    stores: list[RedisStore], spec: LimitSpec, count: int, tokens: int
) -> list[Decision]:
    """``count`` admissions at once, alternating between the stores."""
    return await asyncio.gather(
        *(
            stores[n % len(stores)].admit(spec, Admission("team-a", f"req-{n}", tokens), T0)
            for n in range(count)
        )
    )


async def test_200_concurrent_requests_at_rpm_100_admit_exactly_100(
    replicas: list[RedisStore],
) -> None:
    """Two replicas racing 200 requests against rpm=100 admit exactly 100 between them."""
    decisions = await admit_all(replicas, LimitSpec(rpm=100), 200, 0)
    assert sum(d.allowed for d in decisions) == 100
    assert (await replicas[0].usage("team-a", LimitSpec(rpm=100), T0)).requests == 100


async def test_20_concurrent_reservations_fill_tpm_exactly(replicas: list[RedisStore]) -> None:
    """20 streams reserving 1,000 tokens each against tpm=10,000 admit exactly 10."""
    decisions = await admit_all(replicas, LimitSpec(tpm=10_000), 20, 1_000)
    assert sum(d.allowed for d in decisions) == 10


async def test_settled_refunds_make_room_for_more_streams(replicas: list[RedisStore]) -> None:
    """Settling the 10 admitted streams at 200 tokens each lets 8 more 1,000-token streams in."""
    spec = LimitSpec(tpm=10_000)
    decisions = await admit_all(replicas, spec, 20, 1_000)
    reservations = [d.reservation for d in decisions if d.reservation is not None]
    await asyncio.gather(*(replicas[0].settle(r, 200, T0 + 5) for r in reservations))
    again = await admit_all(replicas, spec, 20, 1_000)
    assert sum(d.allowed for d in again) == 8
    assert (await replicas[1].usage("team-a", spec, T0)).tokens == 10_000
