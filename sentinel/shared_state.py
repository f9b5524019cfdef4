"""The Redis client shared by the limits and the usage counters, from ``[redis]``.

redis-py never retries: the limits decide themselves what a failure means (the fail-closed
fallback), so a dead Redis costs one timeout, not a retry storm. The limit store bounds each
call by ``timeout_ms`` itself, in a way that tolerates event-loop lag; redis-py's own socket
timeouts are only a backstop (a read timeout inside redis-py would fire on loop lag alone and
throw the connection away).
"""

from __future__ import annotations

from redis.asyncio import Redis, RedisCluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from sentinel.config import RedisConfig

__all__ = ["open_redis"]


def open_redis(config: RedisConfig) -> Redis | RedisCluster:
    """A client for ``config`` (a cluster client with ``cluster = true``); connects lazily."""
    timeout_s = max(1.0, config.timeout_ms / 100)  # ten times the store's bound, at least 1 s
    if config.cluster:
        return RedisCluster.from_url(
            config.url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
    return Redis.from_url(
        config.url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
