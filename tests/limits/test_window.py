"""Properties of the reference arithmetic, checked on many generated histories."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.limits import Admission, LimitSpec, MemoryStore, Timing
from sentinel.limits.decision import plan_admission
from sentinel.limits.periods import Calendar
from sentinel.limits.window import KeyState, admit

TIMING = Timing()
CALENDAR = Calendar()
T0 = 1_710_000_000_000


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(1, 8),
    gaps=st.lists(st.integers(0, 20_000), min_size=1, max_size=80),
)
def test_no_window_long_interval_holds_more_than_the_limit(limit: int, gaps: list[int]) -> None:
    """Admitted requests never exceed rpm within any 60 s interval, wherever it starts."""
    state, now, admitted = KeyState(), T0, []
    for n, gap in enumerate(gaps):
        now += gap
        plan = plan_admission(
            LimitSpec(rpm=limit), Admission("k", "r", 0, str(n)), now, TIMING, CALENDAR
        )
        if admit(state, plan).allowed:
            admitted.append(now)
    for i, start in enumerate(admitted):
        inside = [t for t in admitted[i:] if t < start + TIMING.window_ms]
        assert len(inside) <= limit


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 5_000),
    steps=st.lists(st.tuples(st.integers(0, 30_000), st.integers(0, 2_000)), max_size=60),
)
def test_a_refused_request_fits_exactly_at_its_retry_time(
    limit: int, steps: list[tuple[int, int]]
) -> None:
    """retry_after_ms is exact: one ms earlier is still refused, at that time it fits."""
    spec = LimitSpec(tpm=limit)
    state, now = KeyState(), T0
    for n, (gap, tokens) in enumerate(steps):
        now += gap
        outcome = admit(
            state, plan_admission(spec, Admission("k", "r", tokens, str(n)), now, TIMING, CALENDAR)
        )
        if outcome.allowed or outcome.exceeds_limit:
            continue
        wait = outcome.retry_after_ms
        probe = Admission("k", "r", tokens, "probe")
        early = KeyState(dict(state.requests), dict(state.tokens))
        assert not admit(
            early, plan_admission(spec, probe, now + wait - 1, TIMING, CALENDAR)
        ).allowed
        on_time = KeyState(dict(state.requests), dict(state.tokens))
        assert admit(on_time, plan_admission(spec, probe, now + wait, TIMING, CALENDAR)).allowed


async def test_memory_store_forgets_a_key_once_it_is_empty() -> None:
    """A fully refunded key leaves no entry behind in the in-memory store."""
    store = MemoryStore(TIMING)
    decision = await store.admit(LimitSpec(max_parallel=1), Admission("k", "r", 0), T0)
    assert decision.reservation is not None
    await store.settle(decision.reservation, 0, T0 + 1)
    assert store.key_names() == []
