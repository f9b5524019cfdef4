"""Fixtures for the limits: a fake clock, real redis-servers, and every store to contract-test.

``redis_server`` is one private ``redis-server`` for the session (never the one on 6379,
never persisted); fault tests take ``private_redis``, a server of their own that they may
stop and restart on the same port; ``redis_cluster`` is a 3-node cluster. Servers are waited
for by reading their log until they report that they are ready, not by sleeping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis, RedisCluster

from sentinel.limits import LimitStore, MemoryStore, RedisStore, Timing
from tests.support.redis_server import RedisServer

T0 = 1_710_000_000_000
"""2024-03-09 16:00:00 UTC, a Saturday, on a whole minute."""
TIMING = Timing()


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now_ms: int = T0) -> None:
        self._now_ms = now_ms

    def now_ms(self) -> int:
        return self._now_ms

    def advance(self, ms: int) -> int:
        """Move forward by ``ms`` and return the new time."""
        self._now_ms += ms
        return self._now_ms

    def set(self, now_ms: int) -> None:
        self._now_ms = now_ms


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client of the shared server."""
    client = redis_server.client()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at ``T0``."""
    return FakeClock()


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.e2e),
        pytest.param("cluster", marks=pytest.mark.e2e),
    ]
)
async def store(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[LimitStore]:
    """Each store in turn: the contract tests run unchanged against all of them."""
    if request.param == "memory":
        yield MemoryStore(TIMING)
        return
    client: Redis | RedisCluster
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        client = server.client()
    else:
        nodes: list[RedisServer] = request.getfixturevalue("redis_cluster")
        client = RedisCluster(host="127.0.0.1", port=nodes[0].port, socket_timeout=2)
    try:
        yield RedisStore(client, 2_000, timing=TIMING, prefix=prefix)
    finally:
        await client.aclose()
