"""Assembles the usage tracker and its sinks from ``UsageSettings`` (for the composition root)."""

from __future__ import annotations

import aiohttp
from redis.asyncio import Redis, RedisCluster

from sentinel.breaker import BreakerPolicy, CircuitBreaker
from sentinel.config.usage import UsageSettings
from sentinel.usage.sinks import UsageSink
from sentinel.usage.sinks.jsonl import JsonlSink
from sentinel.usage.sinks.redis import RedisCounterSink
from sentinel.usage.sinks.webhook import WebhookSink
from sentinel.usage.spool import Spool
from sentinel.usage.tracker import UsageTracker

__all__ = ["build_sinks", "build_tracker"]


def build_sinks(
    settings: UsageSettings, *, session: aiohttp.ClientSession, redis: Redis | RedisCluster | None
) -> list[UsageSink]:
    """The sinks ``settings`` turns on: jsonl, webhook, and Redis counters when ``redis``."""
    sinks: list[UsageSink] = []
    if settings.jsonl_path is not None:
        sinks.append(
            JsonlSink(
                settings.jsonl_path,
                rotate_bytes=settings.jsonl_rotate_bytes,
                keep=settings.jsonl_keep,
            )
        )
    hook = settings.webhook
    if hook is not None:
        policy = BreakerPolicy(failures=hook.breaker_failures, cooldown_ms=hook.breaker_reset_ms)
        sinks.append(
            WebhookSink(
                session,
                hook.url,
                headers=dict(hook.headers),
                timeout_ms=hook.timeout_ms,
                max_attempts=hook.max_attempts,
                backoff_ms=hook.backoff_ms,
                backoff_max_ms=hook.backoff_max_ms,
                breaker=CircuitBreaker(policy),
            )
        )
    if redis is not None and settings.redis_counters:
        sinks.append(RedisCounterSink(redis))
    return sinks


def build_tracker(
    settings: UsageSettings,
    *,
    session: aiohttp.ClientSession,
    redis: Redis | RedisCluster | None = None,
) -> UsageTracker:
    """A tracker over the configured sinks, not yet started.

    The spool directory is created (and checked writable, ``SpoolError`` otherwise) only when
    at least one sink is on: with none, records are counted and discarded.
    """
    sinks = build_sinks(settings, session=session, redis=redis)
    spool = Spool(settings.spool_dir) if sinks else None
    return UsageTracker(
        sinks,
        spool,
        capacity=settings.capacity,
        batch_size=settings.batch_size,
        flush_interval_ms=settings.flush_interval_ms,
        replay_interval_ms=settings.replay_interval_ms,
        close_timeout_ms=settings.close_timeout_ms,
    )
