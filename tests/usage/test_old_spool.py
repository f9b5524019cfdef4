"""Spool files written before records had a ``record_id`` replay once and only once.

Older versions spooled records without ``record_id``, named each file after the batch's
request ids, keyed Redis dedupe markers by ``request_id`` and sent that batch id as the
webhook's ``Idempotency-Key``. Read back, such a record takes its ``request_id`` as its
``record_id``, so every one of those keys comes out the same after the upgrade.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp
import orjson
from redis.asyncio import Redis

from sentinel.usage.records import UsageRecord
from sentinel.usage.sinks.redis import RedisCounterSink, UsageCounters, read_counters
from sentinel.usage.sinks.webhook import WebhookSink
from sentinel.usage.spool import Spool
from sentinel.usage.tracker import UsageTracker
from tests.usage.fakes import Receiver, eventually, free_port, make_record, records

STARTED = 1_738_326_645.123  # make_record's started_at: 2025-01-31T12:30:45.123Z


def old_lines(count: int) -> bytes:
    """``count`` records as an older version spooled them: without ``record_id``."""
    lines = []
    for record in records(count):
        obj = orjson.loads(record.to_json())
        del obj["record_id"]
        lines.append(orjson.dumps(obj) + b"\n")
    return b"".join(lines)


def old_batch_id(count: int) -> str:
    """The batch id an older version derived for ``records(count)``: from the request ids."""
    ids = sorted(record.request_id for record in records(count))
    return hashlib.sha256(orjson.dumps(ids)).hexdigest()[:32]


def write_old_spool(spool_dir: Path, count: int) -> None:
    """The files an older version left for its ``redis`` and ``webhook`` sinks."""
    spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for sink in ("redis", "webhook"):
        (spool_dir / f"{sink}.{old_batch_id(count)}.jsonl").write_bytes(old_lines(count))


async def count_as_an_older_version(redis: Redis, record: UsageRecord) -> None:
    """What an older version left in Redis after counting ``record`` and crashing: a dedupe
    marker named after its request id, and its counts in its minute and day buckets."""
    await redis.set(f"sentinel:{{team-a}}:usage:seen:{record.request_id}", "1", ex=600)
    for bucket in ("m:202501311230", "d:20250131"):
        name = f"sentinel:{{team-a}}:usage:{bucket}"
        await redis.hincrby(name, "requests", 1)
        for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
            await redis.hincrby(name, field, getattr(record, field))


async def replay(
    session: aiohttp.ClientSession, redis: Redis, url: str, spool_dir: Path
) -> RedisCounterSink:
    """Start a tracker on ``spool_dir``, wait for the spool to drain, and close it."""
    counters = RedisCounterSink(redis)
    webhook = WebhookSink(session, url, timeout_ms=2_000)
    tracker = UsageTracker([counters, webhook], Spool(spool_dir), replay_interval_ms=10)
    tracker.start()
    try:
        await eventually(lambda: Spool(spool_dir).pending() == [], "the spool drained")
    finally:
        await tracker.aclose()
    assert tracker.stats.replayed == 2
    assert tracker.stats.delivery_failures == 0
    return counters


async def test_old_records_replay_once_and_only_once(redis: Redis, spool_dir: Path) -> None:
    """An old-format batch, one of whose records an older version had already counted, is
    counted exactly once in Redis and reaches the webhook under its old Idempotency-Key;
    replayed again, it counts nothing more and carries the same key."""
    port = free_port()
    receiver = Receiver()
    await receiver.start(port)
    url = f"http://127.0.0.1:{port}/usage"
    await count_as_an_older_version(redis, make_record(0))
    batch = records(3)
    expected = UsageCounters(
        requests=3,
        prompt_tokens=sum(r.prompt_tokens for r in batch),
        completion_tokens=sum(r.completion_tokens for r in batch),
        total_tokens=sum(r.total_tokens for r in batch),
    )
    try:
        async with aiohttp.ClientSession() as session:
            write_old_spool(spool_dir, 3)
            counters = await replay(session, redis, url, spool_dir)
            assert (counters.counted, counters.duplicates) == (2, 1)
            assert receiver.idempotency_keys == [old_batch_id(3)]
            assert sorted(receiver.records) == ["req-00000", "req-00001", "req-00002"]
            assert all(r["record_id"] == r["request_id"] for r in receiver.records.values())

            write_old_spool(spool_dir, 3)  # e.g. a replica sharing the spool replayed it too
            again = await replay(session, redis, url, spool_dir)
            assert (again.counted, again.duplicates) == (0, 3)
            assert receiver.idempotency_keys == [old_batch_id(3)] * 2
    finally:
        await receiver.stop()

    assert await read_counters(redis, "team-a", "minute", at=STARTED) == expected
    assert await read_counters(redis, "team-a", "day", at=STARTED) == expected
    assert sorted(receiver.records) == ["req-00000", "req-00001", "req-00002"]
    assert set(receiver.copies.values()) == {2}, "delivered twice, under one key per record"
