"""The money contract: budgets, holds, charges and credits on every store alike."""

from __future__ import annotations

import itertools

import pytest

from sentinel.config.budgets import Budgets
from sentinel.limits import Admission, Dimension, LimitSpec, LimitStore, MemoryStore, RedisStore
from sentinel.limits.decision import team_state_name
from sentinel.limits.redis_store import money_keys
from tests.limits.conftest import T0, TIMING

KEY = "cfg:student"
_ids = itertools.count()
CENT = 10_000_000


def hold(nano_usd: int, key: str = KEY, tokens: int = 0) -> Admission:
    """An admission holding ``nano_usd``, with a fresh readable reservation id."""
    n = next(_ids)
    return Admission(key, f"req-{n}", tokens, f"m{n}", nano_usd)


async def fund(store: LimitStore, key: str, nano_usd: int) -> None:
    """Add credits the way a top-up does, in whichever store this is."""
    if isinstance(store, MemoryStore):
        store.fund(key, nano_usd)
    else:
        assert isinstance(store, RedisStore)
        await store._client.hincrby(money_keys(store._prefix, key)[2], "in", nano_usd)


def on_one_server(store: LimitStore) -> None:
    """Team budgets span two hash tags: a cluster is refused by the configuration."""
    if isinstance(store, RedisStore) and not hasattr(store._client, "connection_pool"):
        pytest.skip("team budgets need a single Redis server")


async def test_a_budget_admits_holds_until_it_is_covered(store: LimitStore) -> None:
    """Ten holds of 10 cents fit a $1 budget; the eleventh is refused on that budget."""
    spec = LimitSpec(budgets=Budgets(usd_per_day=10 * 10 * CENT))
    results = [await store.admit(spec, hold(10 * CENT), T0) for _ in range(11)]
    assert [d.allowed for d in results] == [True] * 10 + [False]
    refusal = results[10].refusal
    assert refusal is not None and refusal.dimension is Dimension.USD_DAY
    assert refusal.dimension.is_money and refusal.limit == 100 * CENT
    budget = results[9].budget
    assert budget is not None and budget.remaining == 0
    assert budget.reset_ms == 8 * 3_600_000  # 16:00 UTC: eight hours to midnight


async def test_settlement_charges_the_cost_and_frees_the_rest(store: LimitStore) -> None:
    """A 10-cent hold settled at 3 cents charges 3 cents; what it held beyond comes back."""
    spec = LimitSpec(budgets=Budgets(usd_total=10 * CENT))
    decision = await store.admit(spec, hold(10 * CENT), T0)
    assert decision.reservation is not None
    assert not (await store.admit(spec, hold(1), T0)).allowed
    await store.settle(decision.reservation, 0, T0 + 5, nano_usd=3 * CENT)
    state = await store.state(KEY)
    assert state.money == {"usd_total": 3 * CENT} and state.holds == {}
    assert (await store.admit(spec, hold(7 * CENT), T0 + 6)).allowed
    refused = await store.admit(spec, hold(1), T0 + 7)
    assert refused.refusal is not None and refused.refusal.dimension is Dimension.USD_TOTAL
    assert refused.refusal.exceeds_limit  # usd_total never renews: no retry helps


async def test_a_hold_never_settled_expires_after_the_lease_ttl(store: LimitStore) -> None:
    """A replica that dies mid-request frees its hold once the lease TTL has passed."""
    spec = LimitSpec(budgets=Budgets(usd_per_month=5 * CENT))
    assert (await store.admit(spec, hold(5 * CENT), T0)).allowed
    assert not (await store.admit(spec, hold(1), T0 + TIMING.lease_ttl_ms - 1)).allowed
    assert (await store.admit(spec, hold(5 * CENT), T0 + TIMING.lease_ttl_ms)).allowed


async def test_renewal_keeps_a_long_request_holding(store: LimitStore) -> None:
    """A renewed hold outlives the lease TTL and is charged at settlement."""
    spec = LimitSpec(budgets=Budgets(usd_per_month=5 * CENT))
    decision = await store.admit(spec, hold(5 * CENT), T0)
    assert decision.reservation is not None and decision.reservation.needs_renewal
    assert await store.renew(decision.reservation, T0 + TIMING.lease_ttl_ms - 1)
    assert not (await store.admit(spec, hold(1), T0 + TIMING.lease_ttl_ms + 5)).allowed
    await store.settle(decision.reservation, 0, T0 + TIMING.lease_ttl_ms + 6, nano_usd=CENT)
    assert (await store.state(KEY)).money == {"usd_month:2024-03": CENT}


async def test_a_day_budget_renews_at_midnight_in_its_time_zone(store: LimitStore) -> None:
    """Spent on Saturday, the day budget is whole again on Sunday; the old day is dropped."""
    spec = LimitSpec(budgets=Budgets(usd_per_day=CENT), timezone="UTC")
    decision = await store.admit(spec, hold(CENT), T0)
    assert decision.reservation is not None
    await store.settle(decision.reservation, 0, T0, nano_usd=CENT)
    refused = await store.admit(spec, hold(1), T0)
    assert refused.refusal is not None and refused.refusal.retry_after_ms == 8 * 3_600_000
    assert (await store.admit(spec, hold(CENT), T0 + 8 * 3_600_000)).allowed
    assert "usd_day:2024-03-09" not in (await store.state(KEY)).money


async def test_credits_hold_against_the_balance(store: LimitStore) -> None:
    """No balance refuses on credits; a top-up admits holds it covers; charges draw it down."""
    spec = LimitSpec(credits=True)
    refused = await store.admit(spec, hold(CENT), T0)
    assert refused.refusal is not None and refused.refusal.dimension is Dimension.CREDITS
    await fund(store, KEY, 10 * CENT)
    first = await store.admit(spec, hold(6 * CENT), T0)
    assert first.reservation is not None
    assert not (await store.admit(spec, hold(5 * CENT), T0)).allowed  # 6 held, 4 free
    await store.settle(first.reservation, 0, T0, nano_usd=2 * CENT)
    state = await store.state(KEY)
    assert state.credits_in == 10 * CENT and state.money == {"credits": 2 * CENT}
    second = await store.admit(spec, hold(8 * CENT), T0)
    assert second.budget is not None and second.budget.remaining == 0
    assert second.budget.reset_ms is None


async def test_a_refused_request_holds_nothing(store: LimitStore) -> None:
    """A request refused on tokens takes no money hold, and one refused on money no tokens."""
    spec = LimitSpec(tpm=100, budgets=Budgets(usd_total=CENT))
    assert not (await store.admit(spec, hold(CENT // 2, tokens=101), T0)).allowed
    assert not (await store.admit(spec, hold(CENT + 1, tokens=10), T0)).allowed
    state = await store.state(KEY)
    assert state.holds == {} and state.tokens == {}


async def test_a_team_budget_is_shared_by_its_keys(store: LimitStore) -> None:
    """Two keys of one team draw on the team's budget; each settlement charges the team."""
    on_one_server(store)
    spec = LimitSpec(team="lab", team_budgets=Budgets(usd_per_week=10 * CENT))
    first = await store.admit(spec, hold(6 * CENT, key="cfg:x"), T0)
    assert first.reservation is not None
    refused = await store.admit(spec, hold(5 * CENT, key="cfg:y"), T0)
    assert refused.refusal is not None and refused.refusal.dimension is Dimension.TEAM_USD_WEEK
    await store.settle(first.reservation, 0, T0, nano_usd=CENT)
    assert (await store.admit(spec, hold(9 * CENT, key="cfg:y"), T0)).allowed
    team = await store.state(team_state_name("lab"))
    assert team.money == {"usd_week:2024-W10": CENT} and len(team.holds) == 1
    assert (await store.state("cfg:x")).is_empty()
