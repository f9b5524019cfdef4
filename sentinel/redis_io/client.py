"""The Redis client shared by the limits and the usage counters, from ``[redis]``.

redis-py never retries: the limits decide themselves what a failure means (the fail-closed
fallback), so a dead Redis costs one timeout, not a retry storm. Every caller bounds its own
calls (the limit store by ``timeout_ms``, in a way that tolerates event-loop lag; the usage
sink, the shared breakers and the probes by theirs), so redis-py sets no read or write
timeout of its own: one would cost a timer per call, and would fire on loop lag alone and
throw the connection away. Connecting is still bounded.

With ``sentinels`` the client is redis-py's Sentinel-managed master client: each new
connection asks the sentinels where the master is. A connection that fails, or that reads
``-READONLY`` from a primary since demoted (redis-py turns that into a ``ConnectionError``
and closes the connection), is dropped by its user, and the next one goes to the master the
sentinels name then. The sentinels are only asked while connecting, each within half the
store's bound: a hung sentinel costs that much once, and the next one that answers is asked
first from then on.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from sentinel.config import RedisConfig

__all__ = ["SentinelMaster", "hash_tag", "open_redis", "sentinel_address", "warm_up"]

log = structlog.get_logger("sentinel.redis")


def hash_tag(name: str) -> str:
    """``{name}``: a Redis Cluster hash tag that is always exactly the whole name.

    Braces and ``%`` are percent-encoded, so the tag is injective and never empty.
    """
    return "{" + (name.replace("%", "%25").replace("{", "%7B").replace("}", "%7D") or "%") + "}"


def open_redis(config: RedisConfig) -> Redis | RedisCluster:
    """A client for ``config`` (a cluster client with ``cluster = true``, the master the
    sentinels name with ``sentinels``); connects lazily."""
    timeout_s = max(1.0, config.timeout_ms / 100)  # ten times the store's bound, at least 1 s
    if config.sentinels:
        return _sentinel_master(config, timeout_s)
    if config.cluster:
        return RedisCluster.from_url(
            config.url,
            socket_timeout=None,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
    return Redis.from_url(
        config.url,
        socket_timeout=None,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


class SentinelMaster(Redis):
    """The master's client from ``Sentinel.master_for``; closing it closes the sentinels'
    clients too (redis-py leaves those to whoever made the ``Sentinel``)."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the master's connections, then those to the sentinels."""
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


def _sentinel_master(config: RedisConfig, timeout_s: float) -> Redis:
    query_timeout_s = max(0.01, config.timeout_ms / 2000)
    sentinels = Sentinel(
        [sentinel_address(entry) for entry in config.sentinels],
        sentinel_kwargs={
            "socket_timeout": query_timeout_s,
            "socket_connect_timeout": query_timeout_s,
            "password": config.sentinel_password,
            "retry": Retry(NoBackoff(), 0),
        },
        socket_timeout=None,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        password=config.password,
        db=config.db,
    )
    master: Redis = sentinels.master_for(config.master_name, redis_class=SentinelMaster)
    return master


def sentinel_address(entry: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as the pair redis-py wants; the config checked it."""
    host, _, port = entry.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


async def warm_up(client: Redis | RedisCluster, timeout_s: float = 2.0) -> None:
    """Connect (and, for a cluster, learn the slot map) before the first request needs it.

    A failure is only logged: Redis may come up later, and the limits fail closed meanwhile.
    """
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout_s):
            await client.ping()
            return
    log.warning("redis_unreachable_at_startup")
