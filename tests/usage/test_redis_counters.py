"""Redis usage counters on a real redis-server: buckets, TTLs, hash tags, exactly-once replay."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from sentinel.usage.sinks import DeliveryError
from sentinel.usage.sinks.redis import (
    RedisCounterSink,
    UsageCounters,
    counter_key,
    read_counters,
)
from tests.support.redis_server import RedisServer
from tests.usage.fakes import free_port, make_record, records

STARTED = 1_738_326_645.123  # 2025-01-31T12:30:45.123Z


def _sums(count: int, start: int = 0) -> UsageCounters:
    batch = records(count, start=start)
    return UsageCounters(
        requests=count,
        prompt_tokens=sum(r.prompt_tokens for r in batch),
        completion_tokens=sum(r.completion_tokens for r in batch),
        total_tokens=sum(r.total_tokens for r in batch),
    )


def test_keys_are_hash_tagged_by_key_name() -> None:
    """Bucket keys carry the key name as a Redis Cluster hash tag and UTC bucket stamps."""
    when = datetime.fromtimestamp(STARTED, UTC)
    assert counter_key("team-a", "minute", when) == "sentinel:{team-a}:usage:m:202501311230"
    assert counter_key("team-a", "day", when) == "sentinel:{team-a}:usage:d:20250131"


async def test_counts_per_minute_and_day(redis: Redis) -> None:
    """A batch is summed into its key's minute and day buckets, read back by read_counters."""
    sink = RedisCounterSink(redis)
    await sink.deliver(records(4))
    assert await read_counters(redis, "team-a", "minute", at=STARTED) == _sums(4)
    assert await read_counters(redis, "team-a", "day", at=STARTED + 3_600) == _sums(4)
    assert await read_counters(redis, "team-a", "minute", at=STARTED + 60) == UsageCounters()
    assert await read_counters(redis, "team-b", "day", at=STARTED) == UsageCounters()


async def test_any_utc_form_of_started_at_lands_in_the_same_buckets(redis: Redis) -> None:
    """Records as Sentinel writes them and the other UTC forms a spool file may hold (no
    fraction, microseconds, an explicit +00:00) are counted in the same minute and day."""
    forms = (
        "2025-01-31T12:30:45.123Z",
        "2025-01-31T12:30:45Z",
        "2025-01-31T12:30:59.999999Z",
        "2025-01-31T12:30:00+00:00",
        "2025-01-31T12:30:45.123000+00:00",
    )
    batch = [replace(make_record(n), started_at=at) for n, at in enumerate(forms)]
    batch.append(replace(make_record(9), started_at="2025-01-31T12:31:00.000Z"))
    await RedisCounterSink(redis).deliver(batch)
    assert (await read_counters(redis, "team-a", "minute", at=STARTED)).requests == len(forms)
    assert (await read_counters(redis, "team-a", "minute", at=STARTED + 15)).requests == 1
    assert (await read_counters(redis, "team-a", "day", at=STARTED)).requests == len(forms) + 1


async def test_replay_never_counts_twice(redis: Redis) -> None:
    """The same records delivered again, alone or mixed with new ones, count only once."""
    sink = RedisCounterSink(redis)
    await sink.deliver(records(3))
    await sink.deliver(records(3))
    await sink.deliver(records(5))  # three replayed, two new
    await sink.deliver([*records(2, start=5), records(1, start=5)[0]])  # a duplicate inside
    assert await read_counters(redis, "team-a", "minute", at=STARTED) == _sums(7)
    assert (sink.counted, sink.duplicates) == (7, 7)


async def test_records_are_deduplicated_by_record_id_not_request_id(redis: Redis) -> None:
    """Two records sharing a client's request id both count; one record sent again, under any
    request id, counts once."""
    first, second = (replace(r, request_id="client-retry-7") for r in records(2))
    sink = RedisCounterSink(redis)
    await sink.deliver([first, second])
    await sink.deliver([replace(first, request_id="another-id")])
    assert await read_counters(redis, "team-a", "minute", at=STARTED) == _sums(2)
    assert (sink.counted, sink.duplicates) == (2, 1)
    assert await redis.exists(f"sentinel:{{team-a}}:usage:seen:{second.record_id}") == 1


async def test_a_batch_is_counted_in_calls_of_a_bucket_each(redis: Redis) -> None:
    """A batch larger than one call takes, over two keys and two minutes, with duplicates in it
    and across calls: every bucket gets each request once, and the sink says which counted."""
    next_minute = STARTED + 60
    batch = [
        *records(600),
        *[replace(make_record(n), key="team-b") for n in range(3)],
        *[make_record(n, started_at=next_minute) for n in range(1000, 1005)],
        records(1, start=599)[0],  # a duplicate, in another call than its first
    ]
    sink = RedisCounterSink(redis)
    await sink.deliver(batch)
    assert await read_counters(redis, "team-a", "minute", at=STARTED) == _sums(600)
    assert (await read_counters(redis, "team-a", "minute", at=next_minute)).requests == 5
    assert (await read_counters(redis, "team-a", "day", at=STARTED)).requests == 605
    assert (await read_counters(redis, "team-b", "day", at=STARTED)).requests == 3
    assert (sink.counted, sink.duplicates) == (608, 1)


async def test_counts_past_double_precision_stay_exact(redis: Redis) -> None:
    """Token counts are added as the integers sent, however large."""
    huge = 2**62 + 1
    record = replace(make_record(1), prompt_tokens=huge, total_tokens=huge + 3)
    await RedisCounterSink(redis).deliver([record, make_record(2)])
    counters = await read_counters(redis, "team-a", "minute", at=STARTED)
    assert counters.prompt_tokens == huge + make_record(2).prompt_tokens


async def test_keys_are_separate_and_expire(redis: Redis) -> None:
    """Each key has its own buckets, and every bucket and dedupe marker has a TTL."""
    sink = RedisCounterSink(redis, minute_ttl_s=120, day_ttl_s=86_400, dedupe_ttl_s=600)
    await sink.deliver([make_record(1, key="team-a"), make_record(2, key="team-b")])
    assert (await read_counters(redis, "team-b", "day", at=STARTED)).requests == 1
    when = datetime.fromtimestamp(STARTED, UTC)
    assert 0 < await redis.ttl(counter_key("team-a", "minute", when)) <= 120
    assert 600 < await redis.ttl(counter_key("team-a", "day", when)) <= 86_400
    assert 0 < await redis.ttl("sentinel:{team-a}:usage:seen:rec-00001") <= 600


async def test_script_reloaded_after_script_flush(redis: Redis) -> None:
    """After Redis forgets its scripts the sink loads the script again and still counts once."""
    sink = RedisCounterSink(redis)
    await sink.deliver(records(1))
    await redis.script_flush()
    await sink.deliver(records(2))
    assert await read_counters(redis, "team-a", "day", at=STARTED) == _sums(2)


async def test_decoded_client_reads_the_same(redis_port: int) -> None:
    """read_counters works with a client that decodes responses to str."""
    client = Redis(port=redis_port, decode_responses=True)
    try:
        await client.flushall()
        await RedisCounterSink(client).deliver(records(2))
        assert await read_counters(client, "team-a", "minute", at=STARTED) == _sums(2)
    finally:
        await client.aclose()


async def test_unreachable_redis_is_a_delivery_error() -> None:
    """With no Redis listening the sink raises DeliveryError, so the batch is spooled."""
    client = Redis(port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(DeliveryError, match="redis"):
            await RedisCounterSink(client).deliver(records(1))
    finally:
        await client.aclose()


async def test_redis_server_is_private(redis: Redis, redis_port: int) -> None:
    """The test server is not the shared instance on 6379 and persists nothing."""
    assert redis_port != 6379
    assert await redis.config_get("appendonly") == {"appendonly": "no"}
    assert await redis.config_get("save") == {"save": ""}


async def test_counts_on_a_cluster_exactly_once(redis_cluster: list[RedisServer]) -> None:
    """With a cluster client the calls go one per slot through redis-py's pipeline; the
    counts and the replay protection are the same as on a single server."""
    client = RedisCluster.from_url(f"redis://127.0.0.1:{redis_cluster[0].port}")
    key = f"cluster-{free_port()}"  # a fresh key: the cluster outlives this test
    batch = [replace(record, key=key) for record in records(3)]
    try:
        sink = RedisCounterSink(client)
        await sink.deliver(batch)
        await sink.deliver(batch)  # a replay
        counted = await read_counters(client, key, "minute", at=STARTED)
        assert counted.requests == 3 and counted.total_tokens == _sums(3).total_tokens
        assert (sink.counted, sink.duplicates) == (3, 3)
    finally:
        await client.aclose()
