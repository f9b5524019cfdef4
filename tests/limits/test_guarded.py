"""GuardedStore: fail closed to a local share, stop calling a dead primary, write back after."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from sentinel.breaker import CircuitBreaker
from sentinel.errors import ServiceUnavailable
from sentinel.limits import (
    REDIS_BREAKER,
    Admission,
    Dimension,
    GuardedStore,
    LimitSpec,
    LimitStore,
    MemoryStore,
)
from tests.limits.conftest import T0, TIMING
from tests.limits.fakes import FlakyPrimary

KEY = "team-a"
_ids = itertools.count()


def ask(tokens: int = 0) -> Admission:
    n = next(_ids)
    return Admission(KEY, f"req-{n}", tokens, f"g{n}")


@pytest.fixture
def primary() -> FlakyPrimary:
    """A primary store that the test can take down and bring back."""
    return FlakyPrimary()


@pytest.fixture
def guarded(primary: FlakyPrimary) -> GuardedStore:
    """A guarded store for 4 replicas with a 1 s breaker."""
    breaker = CircuitBreaker(REDIS_BREAKER)
    return GuardedStore(primary, MemoryStore(TIMING), replicas=4, breaker=breaker)


def test_guarded_store_is_a_limit_store(guarded: GuardedStore) -> None:
    """GuardedStore satisfies the LimitStore protocol the proxy depends on."""
    store: LimitStore = guarded
    assert store is guarded


async def test_passes_through_while_the_primary_answers(
    guarded: GuardedStore, primary: FlakyPrimary
) -> None:
    """With the primary up, decisions come from it and are not degraded."""
    decision = await guarded.admit(LimitSpec(rpm=5), ask(), T0)
    assert decision.allowed and not decision.degraded
    assert (await primary.inner.usage(KEY, LimitSpec(rpm=5), T0)).requests == 1


async def test_outage_admits_only_the_local_share(
    guarded: GuardedStore, primary: FlakyPrimary
) -> None:
    """With the primary down, rpm=100 over 4 replicas admits exactly 25, all degraded."""
    primary.down = True
    decisions = [await guarded.admit(LimitSpec(rpm=100), ask(), T0 + n) for n in range(40)]
    assert sum(d.allowed for d in decisions) == 25
    assert all(d.degraded for d in decisions)
    assert guarded.stats.degraded_decisions == 40
    assert guarded.is_degraded


async def test_degraded_decision_reports_the_local_limit(
    guarded: GuardedStore, primary: FlakyPrimary
) -> None:
    """Headers of a degraded decision describe the share this replica enforces."""
    primary.down = True
    decision = await guarded.admit(LimitSpec(rpm=100, tpm=1000), ask(10), T0)
    assert decision.requests is not None and decision.requests.limit == 25
    assert decision.tokens is not None and decision.tokens.limit == 250
    assert decision.reservation is not None and decision.reservation.degraded


async def test_deny_mode_raises_service_unavailable(primary: FlakyPrimary) -> None:
    """on_unavailable='deny' answers 503 instead of admitting locally."""
    guarded = GuardedStore(primary, on_unavailable="deny")
    primary.down = True
    with pytest.raises(ServiceUnavailable) as raised:
        await guarded.admit(LimitSpec(rpm=100), ask(), T0)
    assert raised.value.code == "limits_unavailable"
    assert guarded.stats.denied == 1


async def test_open_breaker_stops_calling_the_primary(
    guarded: GuardedStore, primary: FlakyPrimary
) -> None:
    """After one failure, nothing reaches the primary until the breaker's probe is due."""
    primary.down = True
    await guarded.admit(LimitSpec(rpm=100), ask(), T0)
    calls = primary.calls
    for n in range(50):
        await guarded.admit(LimitSpec(rpm=100), ask(), T0 + 1 + n * 19)
    assert primary.calls == calls


async def test_recovery_writes_the_local_usage_back(
    guarded: GuardedStore, primary: FlakyPrimary
) -> None:
    """The first admission after the breaker's delay merges local usage into the primary."""
    spec = LimitSpec(rpm=100, tpm=100_000, tokens_per_day=1_000_000)
    primary.down = True
    for n in range(10):
        await guarded.admit(spec, ask(300), T0 + n)
    primary.down = False
    decision = await guarded.admit(spec, ask(300), T0 + 1_000)
    assert not decision.degraded
    usage = await primary.inner.usage(KEY, spec, T0 + 1_000)
    assert (usage.requests, usage.tokens, usage.day) == (11, 3_300, 3_300)
    assert (await guarded.local_state(KEY)).is_empty()
    assert guarded.stats.recoveries == 1 and guarded.stats.keys_written_back == 1


async def test_no_probe_before_the_breaker_delay(
    guarded: GuardedStore, primary: FlakyPrimary
) -> None:
    """A primary that is back is not used before reopen_ms has passed."""
    primary.down = True
    await guarded.admit(LimitSpec(rpm=100), ask(), T0)
    primary.down = False
    assert (await guarded.admit(LimitSpec(rpm=100), ask(), T0 + 999)).degraded
    assert not (await guarded.admit(LimitSpec(rpm=100), ask(), T0 + 1_000)).degraded


async def test_failed_probe_keeps_the_local_usage(
    guarded: GuardedStore, primary: FlakyPrimary
) -> None:
    """A probe that fails leaves the local usage in place and the breaker open."""
    primary.down = True
    for n in range(5):
        await guarded.admit(LimitSpec(rpm=100), ask(), T0 + n)
    assert not await guarded.recover(T0 + 1_000)
    assert sum((await guarded.local_state(KEY)).requests.values()) == 5
    assert guarded.is_degraded


async def test_degraded_reservation_settles_locally_during_the_outage(
    guarded: GuardedStore, primary: FlakyPrimary
) -> None:
    """Refunding a degraded reservation makes room in the local share."""
    spec = LimitSpec(tpm=4_000)
    primary.down = True
    first = await guarded.admit(spec, ask(1_000), T0)
    assert not (await guarded.admit(spec, ask(1), T0)).allowed
    assert first.reservation is not None
    await guarded.settle(first.reservation, 0, T0 + 1, release_request=True)
    assert (await guarded.admit(spec, ask(1_000), T0 + 2)).allowed


async def test_written_back_reservation_settles_in_the_primary(
    guarded: GuardedStore, primary: FlakyPrimary
) -> None:
    """A degraded reservation settled after the write-back releases its lease in the primary."""
    spec = LimitSpec(max_parallel=4, tpm=8_000)
    primary.down = True
    decision = await guarded.admit(spec, ask(1_000), T0)
    primary.down = False
    assert await guarded.recover(T0 + 1_000)
    assert (await primary.inner.usage(KEY, spec, T0 + 1_000)).parallel == 1
    assert decision.reservation is not None
    await guarded.settle(decision.reservation, 0, T0 + 1_001, release_request=True)
    assert (await primary.inner.state(KEY)).is_empty()


async def test_settlement_during_the_outage_is_replayed_on_recovery(
    guarded: GuardedStore, primary: FlakyPrimary
) -> None:
    """A primary reservation settled while the primary is down is applied once it is back."""
    spec = LimitSpec(max_parallel=1, tpm=10_000)
    decision = await guarded.admit(spec, ask(1_000), T0)
    assert decision.reservation is not None and not decision.degraded
    primary.down = True
    await guarded.settle(decision.reservation, 0, T0 + 10, release_request=True)
    assert guarded.stats.settlements_queued == 1
    primary.down = False
    assert await guarded.recover(T0 + 1_010)
    assert (await primary.inner.state(KEY)).is_empty()


async def test_settlement_queue_is_bounded(primary: FlakyPrimary) -> None:
    """A full settlement queue drops the oldest entry and counts it."""
    guarded = GuardedStore(primary, max_queued_settlements=2)
    spec = LimitSpec(rpm=10)
    reservations = [(await guarded.admit(spec, ask(), T0)).reservation for _ in range(3)]
    primary.down = True
    for reservation in reservations:
        assert reservation is not None
        await guarded.settle(reservation, 0, T0 + 1)
    assert guarded.stats.settlements_dropped == 1


async def test_share_too_small_is_not_reported_as_never_fitting(primary: FlakyPrimary) -> None:
    """rpm=3 over 4 replicas refuses locally, but as a wait, not as insufficient_quota."""
    guarded = GuardedStore(primary, replicas=4, breaker=CircuitBreaker(REDIS_BREAKER))
    primary.down = True
    decision = await guarded.admit(LimitSpec(rpm=3), ask(), T0)
    assert decision.refusal is not None
    assert not decision.refusal.exceeds_limit and decision.refusal.code == "rate_limit_exceeded"
    assert decision.refusal.retry_after_ms == 1_000


async def test_request_above_the_full_limit_still_never_fits(primary: FlakyPrimary) -> None:
    """A request larger than the full limit stays insufficient_quota in degraded mode."""
    guarded = GuardedStore(primary, replicas=2)
    primary.down = True
    decision = await guarded.admit(LimitSpec(tpm=1_000), ask(1_001), T0)
    assert decision.refusal is not None and decision.refusal.exceeds_limit
    assert decision.refusal.dimension is Dimension.TOKENS


async def test_admissions_during_write_back_wait_for_it(
    guarded: GuardedStore, primary: FlakyPrimary
) -> None:
    """Requests of a key whose local usage is being written back wait until it has landed,
    then are decided by the primary, which then holds every request exactly once."""
    spec = LimitSpec(rpm=100)
    primary.down = True
    for n in range(3):
        await guarded.admit(spec, ask(), T0 + n)
    primary.down = False
    primary.merge_gate = asyncio.Event()
    probe = asyncio.create_task(guarded.recover(T0 + 1_000))
    await primary.merge_entered.wait()
    during = [asyncio.create_task(guarded.admit(spec, ask(), T0 + 1_001)) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(task.done() for task in during)
    primary.merge_gate.set()
    assert await probe
    decisions = [await task for task in during]
    assert all(d.allowed and not d.degraded for d in decisions)
    assert (await primary.inner.usage(KEY, spec, T0 + 1_002)).requests == 5
    assert (await guarded.local_state(KEY)).is_empty()


async def test_a_full_local_share_is_not_reopened_by_a_write_back(
    guarded: GuardedStore, primary: FlakyPrimary
) -> None:
    """A key whose local share is spent stays refused while its usage is in transit, and
    after a write-back that failed: its usage is never out of sight of an admission."""
    spec = LimitSpec(rpm=4)  # four replicas: a local share of 1
    primary.down = True
    assert (await guarded.admit(spec, ask(), T0)).allowed
    assert not (await guarded.admit(spec, ask(), T0 + 1)).allowed
    primary.down = False
    primary.merge_gate = asyncio.Event()
    probe = asyncio.create_task(guarded.recover(T0 + 1_000))
    await primary.merge_entered.wait()
    waiting = asyncio.create_task(guarded.admit(spec, ask(), T0 + 1_001))
    await asyncio.sleep(0)
    assert not waiting.done()  # not decided against a local window emptied for the transit
    primary.down = True  # the write-back fails: the usage comes back to the local share
    primary.merge_gate.set()
    assert not await probe
    assert not (await waiting).allowed
    assert (await guarded.local_state(KEY)).requests


async def test_settlement_during_its_write_back_is_applied_after_it(
    guarded: GuardedStore, primary: FlakyPrimary
) -> None:
    """A degraded reservation settled mid write-back is applied once its usage has moved."""
    spec = LimitSpec(max_parallel=4)
    primary.down = True
    decision = await guarded.admit(spec, ask(), T0)
    assert decision.reservation is not None
    primary.down = False
    primary.merge_gate = asyncio.Event()
    probe = asyncio.create_task(guarded.recover(T0 + 1_000))
    await primary.merge_entered.wait()
    await guarded.settle(decision.reservation, 0, T0 + 1_001)
    primary.merge_gate.set()
    assert await probe
    assert (await primary.inner.state(KEY)).is_empty()
