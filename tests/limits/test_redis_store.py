"""What only the Redis store has: key TTLs, key layout, error mapping, script reloading."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from sentinel.limits import (
    Admission,
    LimitSpec,
    RedisStore,
    StoreUnavailable,
    Timing,
    redis_keys,
)
from tests.limits.conftest import T0, TIMING
from tests.support.redis_server import RedisServer, debug_sleep

FULL = LimitSpec(
    rpm=10,
    tpm=10_000,
    max_parallel=5,
    tokens_per_day=50_000,
    tokens_per_week=90_000,
    tokens_per_month=200_000,
)


async def test_every_key_expires(redis: Redis, prefix: str) -> None:
    """All four keys of an admitted request carry a TTL no longer than their use."""
    store = RedisStore(redis, 2_000, timing=TIMING, prefix=prefix)
    await store.admit(FULL, Admission("team-a", "r", 100), T0)
    keys = redis_keys(prefix, "team-a")
    ttls = [await redis.pttl(key) for key in keys]
    assert 0 < ttls[0] <= TIMING.span_ms and 0 < ttls[1] <= TIMING.span_ms
    assert 0 < ttls[2] <= 31 * 86_400_000
    assert 0 < ttls[3] <= TIMING.lease_ttl_ms


async def test_ttls_move_only_when_a_write_would_outlive_them(redis: Redis, prefix: str) -> None:
    """A window hash's TTL moves when a newer bucket is added (a span past it), a quota hash's
    when a counter is new to it (to the period's end), a lease zset's when a later lease
    is: more writes into what a TTL already covers leave it, so it is never cut short."""
    store = RedisStore(redis, 2_000, timing=TIMING, prefix=prefix)
    requests, tokens, quotas, leases, _ = redis_keys(prefix, "team-a")
    spec = LimitSpec(rpm=10, tpm=10_000, max_parallel=5, tokens_per_day=50_000)
    await store.admit(spec, Admission("team-a", "a", 100), T0)
    short = 5_000  # well below every TTL these keys were given
    for key in (requests, tokens, quotas, leases):
        await redis.pexpire(key, short)
    await store.admit(spec, Admission("team-a", "b", 100), T0 + 400)  # the same bucket and day
    for key in (requests, tokens, quotas):
        assert 0 < await redis.pttl(key) <= short
    assert await redis.pttl(leases) > TIMING.lease_ttl_ms - 1_000  # a later lease: moved
    await store.admit(spec, Admission("team-a", "c", 100), T0 + 1_000)  # a newer bucket
    for key in (requests, tokens):
        assert TIMING.span_ms - 1_000 < await redis.pttl(key) <= TIMING.span_ms
    assert 0 < await redis.pttl(quotas) <= short
    await store.admit(spec, Admission("team-a", "d", 100), T0 + 86_400_000)  # a new day
    eight_hours = 8 * 3_600_000  # from 16:00 to the day's end (UTC)
    assert eight_hours - 10_000 < await redis.pttl(quotas) <= eight_hours


async def test_failed_requests_leave_no_redis_keys(redis: Redis, prefix: str) -> None:
    """Settling failed requests deletes every counter and lease they created.

    Only the memory of settled reservation ids is left, and it expires.
    """
    store = RedisStore(redis, 2_000, timing=TIMING, prefix=prefix)
    for n in range(10):
        decision = await store.admit(FULL, Admission("team-a", "r", 100), T0 + n)
        assert decision.reservation is not None
        await store.settle(decision.reservation, 0, T0 + n, release_request=True)
    settled = redis_keys(prefix, "team-a")[4]
    assert await redis.keys(f"{prefix}:*") == [settled.encode()]
    assert 0 < await redis.pttl(settled) <= store.settled_memory_ms


async def test_a_replayed_settlement_changes_nothing(redis: Redis, prefix: str) -> None:
    """A settlement that ran but whose reply was lost may be replayed: it must not refund twice."""
    store = RedisStore(redis, 2_000, timing=TIMING, prefix=prefix)
    first = await store.admit(FULL, Admission("team-a", "a", 100), T0)
    second = await store.admit(FULL, Admission("team-a", "b", 100), T0)
    assert first.reservation is not None and second.reservation is not None
    await store.settle(first.reservation, 10, T0 + 5)
    before = await store.state("team-a")
    await store.settle(first.reservation, 10, T0 + 6)  # the replay
    assert await store.state("team-a") == before
    assert sum(before.tokens.values()) == 110  # 10 charged for the first, 100 held by the second


async def test_a_replay_in_the_same_call_changes_nothing(redis: Redis, prefix: str) -> None:
    """A settlement and its replay sent together: the replay is refused by the id the first
    one stored moments before in the same call."""
    store = RedisStore(redis, 2_000, timing=TIMING, prefix=prefix)
    first = await store.admit(FULL, Admission("team-a", "a", 100), T0)
    assert first.reservation is not None
    await asyncio.gather(
        store.settle(first.reservation, 10, T0 + 5), store.settle(first.reservation, 10, T0 + 6)
    )
    state = await store.state("team-a")
    assert sum(state.tokens.values()) == 10 and set(state.quotas.values()) == {10}


async def test_a_forgotten_settlement_is_settled_anew_whatever_its_call(
    redis: Redis, prefix: str
) -> None:
    """Settled ids are dropped once per call, at its first settlement's time: a replay whose
    memory ran out later than that is still settled anew, as in a call of its own."""
    states = []
    for together, name in ((False, "alone"), (True, "together")):
        store = RedisStore(redis, 2_000, timing=TIMING, prefix=f"{prefix}-{name}")
        a = (await store.admit(FULL, Admission("team-a", "a", 100), T0)).reservation
        b = (await store.admit(FULL, Admission("team-a", "b", 100), T0)).reservation
        assert a is not None and b is not None
        await store.settle(a, 10, T0 + 5)
        late = T0 + 5 + store.settled_memory_ms + 1  # a's id is forgotten by then
        if together:
            await asyncio.gather(store.settle(b, 20, T0 + 6), store.settle(a, 10, late))
        else:
            await store.settle(b, 20, T0 + 6)
            await store.settle(a, 10, late)
        states.append(await store.state("team-a"))
    assert states[0] == states[1]
    assert states[0].quotas == {}  # a's refund of 90 counted twice: each period's 30 fell to 0


async def test_a_lease_expiring_between_two_operations_of_a_call_frees_its_slot(
    redis: Redis, prefix: str
) -> None:
    """Leases are purged at each operation's time, also when a call purged them at an earlier
    millisecond already (it then asks once for the soonest lease instead of purging again)."""
    store = RedisStore(redis, 2_000, timing=Timing(lease_ttl_ms=1_000), prefix=prefix)
    spec = LimitSpec(max_parallel=1)
    assert (await store.admit(spec, Admission("team-a", "a", 1), T0)).allowed
    early, due, after = await asyncio.gather(
        store.admit(spec, Admission("team-a", "b", 1), T0 + 10),  # a's lease still runs
        store.admit(spec, Admission("team-a", "c", 1), T0 + 1_000),  # a's lease is over
        store.admit(spec, Admission("team-a", "d", 1), T0 + 1_001),  # c's lease runs
    )
    assert [early.allowed, due.allowed, after.allowed] == [False, True, False]
    assert list((await store.state("team-a")).leases) == [due.reservation.reservation_id]  # type: ignore[union-attr]


async def test_dead_redis_raises_store_unavailable(prefix: str) -> None:
    """A refused connection becomes StoreUnavailable, at the store's boundary."""
    server = RedisServer(1)  # nothing listens on port 1
    client = server.client(socket_connect_timeout=0.2)
    try:
        store = RedisStore(client, 500, timing=TIMING, prefix=prefix)
        with pytest.raises(StoreUnavailable, match="ConnectionError"):
            await store.admit(FULL, Admission("team-a", "r", 1), T0)
    finally:
        await client.aclose()


async def test_scripts_reload_after_a_restart(private_redis: RedisServer, prefix: str) -> None:
    """A restarted Redis has no scripts cached; the store loads them again by itself."""
    client = private_redis.client()
    try:
        store = RedisStore(client, 2_000, timing=TIMING, prefix=prefix)
        assert (await store.admit(FULL, Admission("team-a", "r", 1), T0)).allowed
        private_redis.stop()
        private_redis.start()
        with pytest.raises(StoreUnavailable):  # the old connection is gone
            await store.admit(FULL, Admission("team-a", "r", 1), T0)
        assert (await store.admit(FULL, Admission("team-a", "r", 1), T0)).allowed
    finally:
        await client.aclose()


def test_prefix_with_braces_is_refused(redis: Redis) -> None:
    """A prefix with braces would move the hash tag, so it is refused."""
    with pytest.raises(ValueError, match="braces"):
        RedisStore(redis, prefix="a{b}")


async def test_a_new_bucket_size_starts_the_windows_afresh(redis: Redis, prefix: str) -> None:
    """Buckets cut with another bucket_ms are dropped rather than miscounted."""
    old = RedisStore(redis, 2_000, timing=Timing(bucket_ms=500), prefix=prefix)
    new = RedisStore(redis, 2_000, timing=TIMING, prefix=prefix)
    spec = LimitSpec(rpm=1)
    assert (await old.admit(spec, Admission("team-a", "r", 0), T0 + 500)).allowed
    assert (await new.admit(spec, Admission("team-a", "r", 0), T0 + 600)).allowed
    assert (await new.state("team-a")).requests == {T0: 1}


async def test_concurrent_calls_share_one_connection(
    private_redis: RedisServer, prefix: str
) -> None:
    """Operations made together go out together on the store's one connection, as one FCALL,
    and each gets its own reply (the 50 that fit are admitted, the rest refused)."""
    client = private_redis.client()
    try:
        store = RedisStore(client, 2_000, timing=TIMING, prefix=prefix)
        spec = LimitSpec(rpm=50)
        decisions = await asyncio.gather(
            *(store.admit(spec, Admission("team-a", f"r{n}", 1), T0) for n in range(60))
        )
        assert sum(d.allowed for d in decisions) == 50
        assert [d.allowed for d in decisions[50:]] == [False] * 10
        stats = await client.info("commandstats")
        # A fresh server knows no function: the call is refused, loaded, then sent again.
        assert stats["cmdstat_fcall"]["calls"] == 2
        assert stats["cmdstat_function|load"]["calls"] == 1
        assert len(await client.client_list()) == 2  # the store's and this query's
    finally:
        await client.aclose()


async def test_a_stalled_redis_times_out_and_a_late_reply_answers_no_one(
    private_redis: RedisServer, prefix: str
) -> None:
    """A batch stuck behind a busy Redis fails with StoreUnavailable after ``timeout_ms``;
    once Redis answers again, the next call gets its own reply on a new connection."""
    client, blocker = private_redis.client(), private_redis.client()
    try:
        store = RedisStore(client, 100, timing=TIMING, prefix=prefix)
        assert (await store.admit(FULL, Admission("team-a", "r1", 1), T0)).allowed
        stall = asyncio.create_task(debug_sleep(blocker, 0.5))
        await asyncio.sleep(0.05)
        with pytest.raises(StoreUnavailable, match="TimeoutError"):
            await store.admit(FULL, Admission("team-a", "r2", 1), T0)
        await stall
        decision = await store.admit(LimitSpec(rpm=1), Admission("team-b", "r3", 1), T0)
        assert decision.allowed and decision.requests is not None
        assert decision.requests.remaining == 0  # team-b's own reply, not r2's late one
    finally:
        await client.aclose()
        await blocker.aclose()


async def test_a_flushed_script_is_loaded_again(redis: Redis, prefix: str) -> None:
    """After SCRIPT FLUSH the store's next call loads the script and succeeds."""
    store = RedisStore(redis, 2_000, timing=TIMING, prefix=prefix)
    assert (await store.admit(FULL, Admission("team-a", "r1", 1), T0)).allowed
    await redis.script_flush()
    assert (await store.admit(FULL, Admission("team-a", "r2", 1), T0)).allowed
