"""The Redis client shared by the limits and the usage counters, from ``[redis]``.

redis-py never retries: the limits decide themselves what a failure means (the fail-closed
fallback), so a dead Redis costs one timeout, not a retry storm. Every caller bounds its own
calls (the limit store by ``timeout_ms``, in a way that tolerates event-loop lag; the usage
sink, the shared breakers and the probes by theirs), so redis-py sets no read or write
timeout of its own: one would cost a timer per call, and would fire on loop lag alone and
throw the connection away. Connecting is still bounded.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from sentinel.config import RedisConfig

__all__ = ["hash_tag", "open_redis", "warm_up"]

log = structlog.get_logger("sentinel.redis")


def hash_tag(name: str) -> str:
    """``{name}``: a Redis Cluster hash tag that is always exactly the whole name.

    Braces and ``%`` are percent-encoded, so the tag is injective and never empty.
    """
    return "{" + (name.replace("%", "%25").replace("{", "%7B").replace("}", "%7D") or "%") + "}"


def open_redis(config: RedisConfig) -> Redis | RedisCluster:
    """A client for ``config`` (a cluster client with ``cluster = true``); connects lazily."""
    timeout_s = max(1.0, config.timeout_ms / 100)  # ten times the store's bound, at least 1 s
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


async def warm_up(client: Redis | RedisCluster, timeout_s: float = 2.0) -> None:
    """Connect (and, for a cluster, learn the slot map) before the first request needs it.

    A failure is only logged: Redis may come up later, and the limits fail closed meanwhile.
    """
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout_s):
            await client.ping()
            return
    log.warning("redis_unreachable_at_startup")
