"""Breaker state shared through a real Redis (and a real cluster): two boards, fake clocks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis, RedisCluster
from structlog.testing import capture_logs

from sentinel.breaker import BreakerPolicy, BreakerState
from sentinel.upstream.board import HealthBoard
from sentinel.upstream.shared import SharedBreakers, breaker_key
from tests.support.redis_server import RedisServer, debug_sleep

SETTINGS = BreakerPolicy(failures=2, cooldown_ms=10_000)
NAMES = ("primary", "odd{name}")
WALL_T0 = 1_710_000_000_000


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now_ms: int) -> None:
        self.ms = now_ms

    def now_ms(self) -> int:
        return self.ms


class Replica:
    """A board on its own monotonic clock and its sharing, as one gateway process holds them."""

    def __init__(
        self, client: Redis | RedisCluster, prefix: str, wall: FakeClock, origin: int
    ) -> None:
        self.clock = FakeClock(origin)
        self.board = HealthBoard(NAMES, SETTINGS, self.clock)
        self.shared = SharedBreakers(client, self.board, 2_000, wall=wall, prefix=prefix)

    def trip(self, name: str, model: str | None = None) -> None:
        """Fail enough calls to open ``name``'s breaker (and ``model``'s)."""
        for _ in range(SETTINGS.failures):
            self.board[name].record_failure(model, self.clock.ms)

    def advance(self, ms: int) -> None:
        self.clock.ms += ms


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.e2e),
        pytest.param("cluster", marks=pytest.mark.e2e),
    ]
)
async def client(request: pytest.FixtureRequest) -> AsyncIterator[Redis | RedisCluster]:
    """A client of the shared redis-server, then of the 3-node cluster."""
    client: Redis | RedisCluster
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        client = server.client()
    else:
        nodes: list[RedisServer] = request.getfixturevalue("redis_cluster")
        client = RedisCluster(host="127.0.0.1", port=nodes[0].port, socket_timeout=2)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def wall() -> FakeClock:
    """The wall clock both replicas read."""
    return FakeClock(WALL_T0)


async def test_an_open_on_one_replica_opens_the_other_until_the_same_moment(
    client: Redis | RedisCluster, prefix: str, wall: FakeClock
) -> None:
    """B adopts A's open, translated to B's own monotonic clock, and probes when A would."""
    a = Replica(client, prefix, wall, origin=1_000)
    b = Replica(client, prefix, wall, origin=987_654)
    for name in NAMES:
        a.trip(name)
        assert await a.shared.sync()
        assert await b.shared.sync()
        breaker = b.board[name].breaker
        assert breaker.state is BreakerState.OPEN and breaker.opened == 0
        assert breaker.probe_due_ms == b.clock.ms + SETTINGS.cooldown_ms
    assert b.board[NAMES[0]].retry_in_ms(None, b.clock.ms) == SETTINGS.cooldown_ms
    assert not any(b.board[name].is_available(None, b.clock.ms) for name in NAMES)


async def test_both_close_after_the_cooldown_and_a_successful_probe(
    client: Redis | RedisCluster, prefix: str, wall: FakeClock
) -> None:
    """After the cooldown each replica probes; a success closes it and removes the entry."""
    a = Replica(client, prefix, wall, origin=1_000)
    b = Replica(client, prefix, wall, origin=50_000)
    a.trip("primary")
    await a.shared.sync()
    await b.shared.sync()
    for replica in (a, b):
        replica.advance(SETTINGS.cooldown_ms)
    wall.ms += SETTINGS.cooldown_ms
    for replica in (a, b):
        health = replica.board["primary"]
        assert health.try_acquire(None, replica.clock.ms)
        health.record_success(None, replica.clock.ms)
        assert await replica.shared.sync()
        assert health.breaker.state is BreakerState.CLOSED
    assert await client.get(breaker_key("primary", prefix)) is None


async def test_a_failed_probe_elsewhere_extends_the_open(
    client: Redis | RedisCluster, prefix: str, wall: FakeClock
) -> None:
    """A's probe fails and reopens: B, which has not probed yet, stays open until A's new time."""
    a = Replica(client, prefix, wall, origin=1_000)
    b = Replica(client, prefix, wall, origin=2_000)
    a.trip("primary")
    await a.shared.sync()
    await b.shared.sync()
    a.advance(SETTINGS.cooldown_ms)
    b.advance(SETTINGS.cooldown_ms - 1)
    wall.ms += SETTINGS.cooldown_ms
    assert a.board["primary"].try_acquire(None, a.clock.ms)
    a.board["primary"].record_failure(None, a.clock.ms)
    await a.shared.sync()
    await b.shared.sync()
    assert b.board["primary"].breaker.probe_due_ms == b.clock.ms + SETTINGS.cooldown_ms


async def test_model_breakers_reach_replicas_that_never_called_the_model(
    client: Redis | RedisCluster, prefix: str, wall: FakeClock
) -> None:
    """A model's breaker opened on A opens on B, where that model was never called."""
    a = Replica(client, prefix, wall, origin=1_000)
    b = Replica(client, prefix, wall, origin=1_000)
    health = a.board["primary"]
    for _ in range(SETTINGS.failures):
        health.model_breaker("gpt-4o").record_failure(a.clock.ms)
    await a.shared.sync()
    await b.shared.sync()
    assert not b.board["primary"].is_available("gpt-4o", b.clock.ms)
    assert b.board["primary"].is_available("gpt-4o-mini", b.clock.ms)
    assert b.board["primary"].breaker.state is BreakerState.CLOSED


async def test_a_skewed_wall_clock_holds_a_breaker_open_one_cooldown_at_most(
    client: Redis | RedisCluster, prefix: str, wall: FakeClock
) -> None:
    """A replica whose wall clock runs an hour ahead cannot open others for an hour."""
    ahead = FakeClock(WALL_T0 + 3_600_000)
    a = Replica(client, prefix, ahead, origin=1_000)
    b = Replica(client, prefix, wall, origin=1_000)
    a.trip("primary")
    await a.shared.sync()
    await b.shared.sync()
    assert b.board["primary"].breaker.probe_due_ms == b.clock.ms + SETTINGS.cooldown_ms


async def test_a_replica_ignores_its_own_entries(
    client: Redis | RedisCluster, prefix: str, wall: FakeClock
) -> None:
    """Reading back what it wrote never extends or reopens a replica's own breaker."""
    a = Replica(client, prefix, wall, origin=1_000)
    a.trip("primary")
    await a.shared.sync()
    due = a.board["primary"].breaker.probe_due_ms
    wall.ms += 5  # the wall clock drifted from the monotonic one
    await a.shared.sync()
    assert a.board["primary"].breaker.probe_due_ms == due


async def test_redis_down_leaves_local_breakers_working_and_publishes_on_return(
    private_redis: RedisServer, prefix: str, wall: FakeClock
) -> None:
    """A dead Redis is logged once; local breakers still open; the open is shared once back."""
    client = private_redis.client()
    try:
        a = Replica(client, prefix, wall, origin=1_000)
        b = Replica(client, prefix, wall, origin=1_000)
        private_redis.stop()
        with capture_logs() as logs:
            a.trip("primary")
            assert not await a.shared.sync()
            assert not await a.shared.sync()
        assert [e["event"] for e in logs] == ["breaker_sharing_unavailable"]
        assert not a.board["primary"].is_available(None, a.clock.ms)
        private_redis.start()
        with capture_logs() as logs:
            assert await a.shared.sync()
        assert [e["event"] for e in logs] == ["breaker_sharing_recovered"]
        assert await b.shared.sync()
        assert not b.board["primary"].is_available(None, b.clock.ms)
    finally:
        await client.aclose()


async def test_a_stalled_redis_costs_one_timeout(private_redis: RedisServer, prefix: str) -> None:
    """While Redis does not answer, a sync gives up after timeout_ms and changes nothing."""
    client, staller = private_redis.client(), private_redis.client()
    try:
        board = HealthBoard(NAMES, SETTINGS, FakeClock(1_000))
        shared = SharedBreakers(client, board, 100, prefix=prefix)
        assert await shared.sync()  # connected
        stall = asyncio.create_task(debug_sleep(staller, 1))
        await asyncio.sleep(0.05)  # let DEBUG SLEEP reach the server first
        started = time.perf_counter()
        assert not await shared.sync()
        assert time.perf_counter() - started < 0.5
        await stall
    finally:
        await client.aclose()
        await staller.aclose()
