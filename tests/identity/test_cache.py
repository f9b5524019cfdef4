"""Tests for ``PrincipalCache``: fresh, stale, past max_stale, negative, and its two bounds."""

from __future__ import annotations

import pytest

from sentinel.auth.keys import Principal
from sentinel.identity.cache import Freshness, PrincipalCache
from sentinel.limits.spec import LimitSpec

ALICE = Principal("alice", LimitSpec(), id="idp:alice")


def cache(**overrides: int) -> PrincipalCache:
    settings = {
        "ttl_ms": 60_000,
        "max_stale_ms": 600_000,
        "negative_ttl_ms": 5_000,
        "max_known": 100,
        "max_unknown": 100,
    }
    settings.update(overrides)
    return PrincipalCache(**settings)


def test_an_answer_is_fresh_for_ttl_then_stale_until_max_stale_then_gone() -> None:
    """Fresh before ttl, stale from ttl to max_stale, a miss (and forgotten) from then on."""
    c = cache()
    c.learn_known(b"a", ALICE, 0)
    assert c.get(b"a", 59_999) == (Freshness.FRESH, ALICE)
    assert c.get(b"a", 60_000) == (Freshness.STALE, ALICE)
    assert c.get(b"a", 599_999) == (Freshness.STALE, ALICE)
    assert c.get(b"a", 600_000) == (Freshness.MISS, None)
    assert c.known_count == 0


def test_a_new_answer_restarts_both_clocks() -> None:
    """The stale bound counts from the last good answer, not the first."""
    c = cache()
    c.learn_known(b"a", ALICE, 0)
    c.learn_known(b"a", ALICE, 500_000)
    assert c.get(b"a", 1_000_000) == (Freshness.STALE, ALICE)


def test_unknown_is_remembered_for_negative_ttl() -> None:
    """A 404 is an answer for negative_ttl_ms, then the key is asked about again."""
    c = cache()
    c.learn_unknown(b"x", 0)
    assert c.get(b"x", 4_999) == (Freshness.UNKNOWN, None)
    assert c.get(b"x", 5_000) == (Freshness.MISS, None)


def test_unknown_forgets_a_known_key_and_known_replaces_unknown() -> None:
    """A 404 on refresh revokes the key; a later 200 makes it known again."""
    c = cache()
    c.learn_known(b"a", ALICE, 0)
    c.learn_unknown(b"a", 1)
    assert c.get(b"a", 2) == (Freshness.UNKNOWN, None)
    c.learn_known(b"a", ALICE, 3)
    assert c.get(b"a", 4) == (Freshness.FRESH, ALICE)


def test_a_spray_of_unknown_keys_never_evicts_known_ones() -> None:
    """Unknown keys have their own bound: a million random keys leave known keys in place."""
    c = cache(max_known=2, max_unknown=10)
    c.learn_known(b"a", ALICE, 0)
    for i in range(1000):
        c.learn_unknown(i.to_bytes(4, "big"), 0)
    assert c.unknown_count == 10
    assert c.get(b"a", 1) == (Freshness.FRESH, ALICE)


def test_known_keys_are_bounded_least_recently_used_first() -> None:
    """Over max_known, the key used longest ago goes."""
    c = cache(max_known=2)
    c.learn_known(b"a", ALICE, 0)
    c.learn_known(b"b", ALICE, 0)
    c.get(b"a", 1)  # a is now the most recently used
    c.learn_known(b"c", ALICE, 2)
    assert c.known_count == 2
    assert c.get(b"b", 3) == (Freshness.MISS, None)
    assert c.get(b"a", 3)[0] is Freshness.FRESH


def test_max_stale_below_ttl_is_refused() -> None:
    """A cache whose stale bound ends before freshness does is a configuration mistake."""
    with pytest.raises(ValueError):
        cache(ttl_ms=10, max_stale_ms=5)
