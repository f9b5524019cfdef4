"""The limit store contract: every scenario runs unchanged against MemoryStore and RedisStore."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sentinel.limits import Admission, Dimension, KeyState, LimitSpec, LimitStore
from tests.limits.conftest import T0, TIMING, FakeClock

KEY = "team-a"
SPAN = TIMING.span_ms
_ids = itertools.count()


def ask(tokens: int = 0, key: str = KEY) -> Admission:
    """An admission with a fresh, readable reservation id."""
    n = next(_ids)
    return Admission(key_name=key, request_id=f"req-{n}", tokens=tokens, reservation_id=f"r{n}")


def local_ms(text: str, zone: str) -> int:
    """The instant of a local wall-clock time, in epoch milliseconds."""
    moment = datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


async def test_admits_up_to_rpm_then_refuses(store: LimitStore) -> None:
    """With rpm=3 the first three requests pass and the fourth is refused on requests."""
    spec = LimitSpec(rpm=3)
    results = [await store.admit(spec, ask(), T0) for _ in range(4)]
    assert [d.allowed for d in results] == [True, True, True, False]
    refusal = results[3].refusal
    assert refusal is not None and refusal.dimension is Dimension.REQUESTS
    assert refusal.code == "rate_limit_exceeded"


async def test_bucket_counts_until_exactly_one_span_after_its_start(store: LimitStore) -> None:
    """A request made in bucket T0 blocks until T0 + window + bucket and not one ms longer."""
    spec = LimitSpec(rpm=1)
    assert (await store.admit(spec, ask(), T0 + 999)).allowed
    last_refused = await store.admit(spec, ask(), T0 + SPAN - 1)
    assert last_refused.refusal is not None and last_refused.refusal.retry_after_ms == 1
    assert (await store.admit(spec, ask(), T0 + SPAN)).allowed


async def test_no_window_ever_holds_more_than_the_limit(store: LimitStore) -> None:
    """Requests at the end of one bucket still count one full window later."""
    spec = LimitSpec(rpm=1)
    assert (await store.admit(spec, ask(), T0 + 999)).allowed
    assert not (await store.admit(spec, ask(), T0 + 999 + TIMING.window_ms)).allowed


async def test_refused_request_records_nothing(store: LimitStore) -> None:
    """A request refused for tokens takes no request slot and no tokens (all-or-nothing)."""
    spec = LimitSpec(rpm=10, tpm=100, max_parallel=5, tokens_per_day=1000)
    assert (await store.admit(spec, ask(80), T0)).allowed
    before = await store.state(KEY)
    refused = await store.admit(spec, ask(30), T0)
    assert refused.refusal is not None and refused.refusal.dimension is Dimension.TOKENS
    assert await store.state(KEY) == before
    usage = await store.usage(KEY, spec, T0)
    assert (usage.requests, usage.tokens, usage.parallel, usage.day) == (1, 80, 1, 80)


async def test_retry_after_waits_for_the_oldest_requests_to_expire(store: LimitStore) -> None:
    """rpm=2 filled at T0 and T0+10s: at T0+20s the wait is until the T0 bucket expires."""
    spec = LimitSpec(rpm=2)
    await store.admit(spec, ask(), T0)
    await store.admit(spec, ask(), T0 + 10_000)
    refused = await store.admit(spec, ask(), T0 + 20_000)
    assert refused.refusal is not None
    assert refused.refusal.retry_after_ms == SPAN - 20_000


async def test_retry_after_frees_only_as_many_token_buckets_as_needed(store: LimitStore) -> None:
    """Needing 500 of tpm=1000 with 600 then 300 used waits only for the 600 to expire."""
    spec = LimitSpec(tpm=1000)
    await store.admit(spec, ask(600), T0)
    await store.admit(spec, ask(300), T0 + 5_000)
    refused = await store.admit(spec, ask(500), T0 + 10_000)
    assert refused.refusal is not None
    assert refused.refusal.retry_after_ms == SPAN - 10_000
    needs_both = await store.admit(spec, ask(1000), T0 + 10_000)
    assert needs_both.refusal is not None
    assert needs_both.refusal.retry_after_ms == 5_000 + SPAN - 10_000


async def test_refusal_reports_the_longest_wait(store: LimitStore) -> None:
    """When requests and tokens both refuse, the later of the two retry times is reported."""
    spec = LimitSpec(rpm=1, tpm=100)
    await store.admit(spec, ask(50), T0)
    await store.admit(LimitSpec(tpm=100), ask(50), T0 + 30_000)
    refused = await store.admit(spec, ask(60), T0 + 40_000)
    assert refused.refusal is not None
    assert refused.refusal.dimension is Dimension.TOKENS
    assert refused.refusal.retry_after_ms == 30_000 + SPAN - 40_000


async def test_single_request_larger_than_the_limit_can_never_fit(store: LimitStore) -> None:
    """A reservation above tpm is refused as insufficient_quota even on an empty window."""
    refused = await store.admit(LimitSpec(rpm=5, tpm=1000), ask(1001), T0)
    refusal = refused.refusal
    assert refusal is not None and refusal.exceeds_limit
    assert refusal.dimension is Dimension.TOKENS and refusal.code == "insufficient_quota"
    assert (await store.state(KEY)).is_empty()


async def test_a_limit_of_zero_refuses_everything(store: LimitStore) -> None:
    """rpm=0 means no request ever fits."""
    refused = await store.admit(LimitSpec(rpm=0), ask(), T0)
    assert refused.refusal is not None and refused.refusal.exceeds_limit


async def test_zero_token_request_fits_a_full_token_window(store: LimitStore) -> None:
    """A request that reserves no tokens is not refused by tpm while usage is at the limit."""
    spec = LimitSpec(tpm=100)
    await store.admit(spec, ask(100), T0)
    assert (await store.admit(spec, ask(0), T0)).allowed


async def test_settlement_refund_makes_room(store: LimitStore) -> None:
    """Settling an 800-token reservation at 100 tokens frees 700 for the next request."""
    spec = LimitSpec(tpm=1000)
    first = await store.admit(spec, ask(800), T0)
    assert not (await store.admit(spec, ask(300), T0 + 1)).allowed
    assert first.reservation is not None
    await store.settle(first.reservation, 100, T0 + 2_500)
    assert (await store.admit(spec, ask(300), T0 + 3_000)).allowed
    assert (await store.usage(KEY, spec, T0 + 3_000)).tokens == 400


async def test_settlement_charges_usage_above_the_reservation(store: LimitStore) -> None:
    """Actual tokens above the reservation are charged to the window and every quota."""
    spec = LimitSpec(tpm=1000, tokens_per_day=5000)
    decision = await store.admit(spec, ask(100), T0)
    assert decision.reservation is not None
    await store.settle(decision.reservation, 250, T0 + 10)
    usage = await store.usage(KEY, spec, T0 + 10)
    assert (usage.tokens, usage.day) == (250, 250)


async def test_late_charge_lands_in_the_current_bucket(store: LimitStore) -> None:
    """A charge settled after the reservation's bucket expired counts in the current bucket."""
    spec = LimitSpec(tpm=1000)
    decision = await store.admit(spec, ask(100), T0)
    assert decision.reservation is not None
    await store.settle(decision.reservation, 150, T0 + 2 * SPAN)
    assert (await store.state(KEY)).tokens[T0 + 2 * SPAN] == 50
    assert (await store.usage(KEY, spec, T0 + 2 * SPAN)).tokens == 50


async def test_late_refund_is_dropped(store: LimitStore) -> None:
    """A refund for a bucket that no longer counts changes nothing."""
    spec = LimitSpec(tpm=1000)
    decision = await store.admit(spec, ask(100), T0)
    assert decision.reservation is not None
    await store.settle(decision.reservation, 0, T0 + SPAN)
    assert (await store.state(KEY)).tokens == {T0: 100}


async def test_parallel_leases_refuse_then_free_on_settle(store: LimitStore) -> None:
    """max_parallel=2 refuses a third request until one of the two is settled."""
    spec = LimitSpec(max_parallel=2)
    first = await store.admit(spec, ask(), T0)
    assert (await store.admit(spec, ask(), T0 + 1)).allowed
    refused = await store.admit(spec, ask(), T0 + 2)
    assert refused.refusal is not None and refused.refusal.dimension is Dimension.PARALLEL
    assert refused.refusal.retry_after_ms == TIMING.parallel_retry_ms
    assert first.reservation is not None
    await store.settle(first.reservation, 0, T0 + 3)
    assert (await store.admit(spec, ask(), T0 + 4)).allowed


async def test_parallel_retry_is_the_first_lease_expiry_when_sooner(store: LimitStore) -> None:
    """A parallel refusal waits no longer than the first lease's expiry."""
    spec = LimitSpec(max_parallel=1)
    await store.admit(spec, ask(), T0)
    refused = await store.admit(spec, ask(), T0 + TIMING.lease_ttl_ms - 300)
    assert refused.refusal is not None and refused.refusal.retry_after_ms == 300


async def test_lease_expires_after_its_ttl(store: LimitStore) -> None:
    """A lease never settled (a crashed replica) frees its slot after lease_ttl_ms."""
    spec = LimitSpec(max_parallel=1)
    assert (await store.admit(spec, ask(), T0)).allowed
    assert not (await store.admit(spec, ask(), T0 + TIMING.lease_ttl_ms - 1)).allowed
    assert (await store.admit(spec, ask(), T0 + TIMING.lease_ttl_ms)).allowed


async def test_renewed_lease_outlives_its_first_ttl(store: LimitStore) -> None:
    """Renewing a live lease keeps the slot taken past the original expiry."""
    spec = LimitSpec(max_parallel=1)
    decision = await store.admit(spec, ask(), T0)
    assert decision.reservation is not None
    assert await store.renew(decision.reservation, T0 + 500_000)
    assert not (await store.admit(spec, ask(), T0 + TIMING.lease_ttl_ms + 1)).allowed


async def test_expired_lease_cannot_be_renewed(store: LimitStore) -> None:
    """Renewing after expiry fails and does not bring the lease back."""
    spec = LimitSpec(max_parallel=1)
    decision = await store.admit(spec, ask(), T0)
    assert decision.reservation is not None
    assert not await store.renew(decision.reservation, T0 + TIMING.lease_ttl_ms)
    assert (await store.usage(KEY, spec, T0 + TIMING.lease_ttl_ms)).parallel == 0


async def test_daily_quota_rolls_over_at_local_midnight(store: LimitStore) -> None:
    """tokens_per_day in Tokyo is exhausted until 00:00 Tokyo time, then starts afresh."""
    zone = "Asia/Tokyo"
    spec = LimitSpec(tokens_per_day=1000, timezone=zone)
    now = local_ms("2024-03-09T23:59:00", zone)
    midnight = local_ms("2024-03-10T00:00:00", zone)
    assert (await store.admit(spec, ask(900), now)).allowed
    refused = await store.admit(spec, ask(200), now)
    assert refused.refusal is not None and refused.refusal.dimension is Dimension.DAY
    assert refused.refusal.retry_after_ms == midnight - now
    assert refused.refusal.code == "insufficient_quota"
    assert not (await store.admit(spec, ask(200), midnight - 1)).allowed
    assert (await store.admit(spec, ask(200), midnight)).allowed
    assert (await store.state(KEY)).quotas == {"day:2024-03-10": 200}


async def test_weekly_quota_rolls_over_on_monday(store: LimitStore) -> None:
    """tokens_per_week renews at Monday 00:00 in the spec's time zone (New York, DST day)."""
    zone = "America/New_York"
    spec = LimitSpec(tokens_per_week=100, timezone=zone)
    sunday = local_ms("2024-03-10T12:00:00", zone)
    monday = local_ms("2024-03-11T00:00:00", zone)
    assert (await store.admit(spec, ask(100), sunday)).allowed
    refused = await store.admit(spec, ask(1), sunday)
    assert refused.refusal is not None and refused.refusal.retry_after_ms == monday - sunday
    assert (await store.admit(spec, ask(100), monday)).allowed


async def test_monthly_quota_rolls_over_on_the_first(store: LimitStore) -> None:
    """tokens_per_month renews on the first of the month in the spec's time zone."""
    zone = "Europe/Berlin"
    spec = LimitSpec(tokens_per_month=100, timezone=zone)
    end_of_march = local_ms("2024-03-31T23:59:59", zone)
    april = local_ms("2024-04-01T00:00:00", zone)
    assert (await store.admit(spec, ask(100), end_of_march)).allowed
    assert not (await store.admit(spec, ask(1), april - 1)).allowed
    assert (await store.admit(spec, ask(100), april)).allowed


async def test_refund_after_rollover_leaves_the_new_period_alone(store: LimitStore) -> None:
    """A refund for yesterday's reservation does not reduce today's quota usage."""
    spec = LimitSpec(tokens_per_day=1000)
    day = 86_400_000
    yesterday = await store.admit(spec, ask(500), T0)
    await store.admit(spec, ask(300), T0 + day)
    assert yesterday.reservation is not None
    await store.settle(yesterday.reservation, 0, T0 + day + 1)
    assert (await store.usage(KEY, spec, T0 + day + 1)).day == 300


async def test_failed_upstream_settlements_leave_nothing_behind(store: LimitStore) -> None:
    """1,000 requests settled as failed upstream leave every counter and lease at zero."""
    spec = LimitSpec(
        rpm=1000,
        tpm=10**9,
        max_parallel=1000,
        tokens_per_day=10**9,
        tokens_per_week=10**9,
        tokens_per_month=10**9,
    )
    clock = FakeClock()
    for _ in range(1000):
        decision = await store.admit(spec, ask(1234), clock.advance(7))
        assert decision.reservation is not None
        await store.settle(decision.reservation, 0, clock.advance(3), release_request=True)
    assert await store.state(KEY) == KeyState()


async def test_headers_report_limit_remaining_and_reset(store: LimitStore) -> None:
    """An admission reports what remains after it and when the window is empty again."""
    spec = LimitSpec(rpm=10, tpm=1000)
    decision = await store.admit(spec, ask(400), T0 + 250)
    assert decision.requests is not None and decision.tokens is not None
    assert (decision.requests.limit, decision.requests.remaining) == (10, 9)
    assert (decision.tokens.limit, decision.tokens.remaining) == (1000, 600)
    assert decision.requests.reset_ms == decision.tokens.reset_ms == SPAN - 250


async def test_headers_on_refusal_show_nothing_remaining(store: LimitStore) -> None:
    """A refusal still carries the window headers, with the usage before the request."""
    spec = LimitSpec(rpm=1, tpm=1000)
    await store.admit(spec, ask(10), T0)
    refused = await store.admit(spec, ask(10), T0 + 1000)
    assert refused.requests is not None and refused.requests.remaining == 0
    assert refused.tokens is not None and refused.tokens.remaining == 990
    assert refused.requests.reset_ms == SPAN - 1000


async def test_unset_limits_store_nothing(store: LimitStore) -> None:
    """A key without limits is admitted and leaves no counters behind."""
    decision = await store.admit(LimitSpec(), ask(500), T0)
    assert decision.allowed and decision.requests is None and decision.tokens is None
    assert (await store.state(KEY)).is_empty()


async def test_keys_do_not_share_counters(store: LimitStore) -> None:
    """One key's usage never counts against another's."""
    spec = LimitSpec(rpm=1)
    assert (await store.admit(spec, ask(key="a"), T0)).allowed
    assert (await store.admit(spec, ask(key="b"), T0)).allowed
    assert (await store.admit(spec, ask(key="{a}"), T0)).allowed


async def test_absurd_reservation_is_refused_not_an_error(store: LimitStore) -> None:
    """A reservation beyond what Lua holds exactly is refused as too large, never crashes."""
    refused = await store.admit(LimitSpec(tpm=1000, tokens_per_day=5000), ask(10**30), T0)
    assert refused.refusal is not None and refused.refusal.exceeds_limit
    assert (await store.state(KEY)).is_empty()
