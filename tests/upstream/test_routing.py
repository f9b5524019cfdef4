"""Candidate order: priority groups, weighted random within one, aliases, key rotation."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from sentinel.config import ModelAlias, UpstreamConfig
from sentinel.errors import NotFound
from sentinel.upstream.call import upstream_url
from sentinel.upstream.credentials import KeyRotation
from sentinel.upstream.failover import backoff_ms, retry_after_ms
from sentinel.upstream.routing import Router


def upstream(name: str, **fields: object) -> UpstreamConfig:
    return UpstreamConfig(name=name, base_url=f"http://{name}.test/v1", **fields)  # type: ignore[arg-type]


def test_lower_priority_comes_first() -> None:
    """Every upstream of priority 0 is tried before any of priority 1."""
    router = Router(
        (upstream("late", priority=1), upstream("a"), upstream("b")), rng=random.Random(1)
    )
    for _ in range(20):
        names = [c.name for c in router.candidates("gpt-4o")]
        assert set(names[:2]) == {"a", "b"} and names[2] == "late"


def test_weights_share_the_first_place() -> None:
    """An upstream with weight 3 comes first about three times as often as one with weight 1."""
    router = Router((upstream("heavy", weight=3), upstream("light")), rng=random.Random(7))
    firsts = Counter(router.candidates("m")[0].name for _ in range(4000))
    assert 0.70 < firsts["heavy"] / 4000 < 0.80


def test_globs_choose_the_candidates() -> None:
    """Only upstreams whose globs match are candidates; none is a 404."""
    router = Router((upstream("llama", models=("llama-*",)), upstream("gpt", models=("gpt-*",))))
    assert [c.name for c in router.candidates("llama-3")] == ["llama"]
    with pytest.raises(NotFound):
        router.candidates("claude")


def test_alias_names_the_model_per_upstream() -> None:
    """An alias routes to its entries, each with the model name that upstream knows."""
    alias = ModelAlias("gpt-4o", (("primary", "gpt-4o"), ("backup", "gpt-4o-2024-11-20")))
    router = Router(
        (upstream("primary"), upstream("backup", priority=1)), (alias,), rng=random.Random(0)
    )
    found = [(c.name, c.model) for c in router.candidates("gpt-4o")]
    assert found == [("primary", "gpt-4o"), ("backup", "gpt-4o-2024-11-20")]
    assert router.aliases == ("gpt-4o",)


def test_requests_without_model_go_to_the_first_by_priority() -> None:
    """Files and uploads go to one upstream: the first of the lowest priority."""
    router = Router((upstream("b", priority=2), upstream("a", priority=1)))
    assert [(c.name, c.model) for c in router.candidates(None)] == [("a", None)]


def test_azure_url_layout() -> None:
    """Azure calls go to the deployment of the model, with the api-version query."""
    config = upstream(
        "az",
        kind="azure",
        api_version="2024-10-21",
        deployments=(("gpt-4o", "prod-4o"),),
        api_key="k" * 10,
    )
    target = Router((config,)).targets[0]
    url = upstream_url(target, "/v1/chat/completions", b"", "gpt-4o")
    assert str(url) == (
        "http://az.test/v1/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
    )
    assert str(upstream_url(target, "/v1/models", b"a=1")) == (
        "http://az.test/v1/openai/models?a=1&api-version=2024-10-21"
    )
    assert target.keys.header(0) == ("api-key", "k" * 10)


def test_key_rotation_moves_off_a_benched_key() -> None:
    """Keys are used in turn; a key that got a 429 is skipped until its bench ends."""
    keys = KeyRotation(("k1", "k2", "k3"), header="Authorization")
    assert [keys.pick(0) for _ in range(4)] == [0, 1, 2, 0]
    keys.bench(1, until_ms=1_000)
    assert [keys.pick(10) for _ in range(3)] == [2, 0, 2]
    assert keys.has_spare(0, 10)
    keys.bench(0, 2_000)
    keys.bench(2, 3_000)
    assert keys.pick(10) == 1  # every key benched: the one free soonest
    assert keys.header(1) == ("Authorization", "Bearer k2")


def test_backoff_grows_and_is_capped() -> None:
    """Each retry waits between half and all of an exponentially growing, capped ceiling."""
    rng = random.Random(3)
    for attempt, ceiling in ((1, 50), (2, 100), (3, 200), (6, 1000)):
        delay = backoff_ms(attempt, 50, 1000, rng)
        assert ceiling / 2 <= delay <= ceiling


def test_retry_after_headers() -> None:
    """retry-after-ms wins over retry-after seconds; dates and junk are ignored."""
    assert retry_after_ms({"retry-after-ms": "250", "retry-after": "9"}) == 250
    assert retry_after_ms({"retry-after": "1.5"}) == 1500
    assert retry_after_ms({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after_ms({}) is None
