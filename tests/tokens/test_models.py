"""Model name → encoding and image pricing: tiktoken first, then Sentinel's rules, then default."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.tokens import ModelResolver
from sentinel.tokens.images import PatchPricing, TilePricing
from sentinel.tokens.models import family_encoding, image_pricing, normalize
from tests.tokens.strategies import JSON

O200K, CL100K = "o200k_base", "cl100k_base"
AVAILABLE = (CL100K, O200K)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        # tiktoken's own table and prefixes
        ("gpt-4o", O200K),
        ("gpt-4o-mini", O200K),
        ("gpt-4", CL100K),
        ("gpt-4-0613", CL100K),
        ("gpt-4-turbo-2024-04-09", CL100K),
        ("gpt-3.5-turbo", CL100K),
        ("gpt-35-turbo", CL100K),
        ("text-embedding-3-small", CL100K),
        ("text-embedding-ada-002", CL100K),
        ("o1", O200K),
        ("o3-mini", O200K),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", O200K),
        ("ft:gpt-3.5-turbo-0125:acme::xyz", CL100K),
        # dated and future variants
        ("gpt-4o-2099-01-01", O200K),
        ("gpt-5.3-mini", O200K),
        ("gpt-5", O200K),
        ("gpt-6-turbo", O200K),
        ("gpt-12", O200K),
        ("o4-mini-high", O200K),
        ("o9-preview", O200K),
        ("chatgpt-4o-latest", O200K),
        ("gpt-4.1-nano", O200K),
        ("gpt-4.5-preview", O200K),
        ("gpt-oss-120b", O200K),
        # provider prefixes and odd spelling
        ("openai/gpt-4o", O200K),
        ("openai/gpt-4", CL100K),
        ("azure/gpt-35-turbo-16k", CL100K),
        ("openrouter/openai/gpt-3.5-turbo", CL100K),
        ("  GPT-4  ", CL100K),
        ("OpenAI/GPT-4o-Mini", O200K),
        # Azure deployment names containing a family
        ("my-gpt4o-deployment", O200K),
        ("prod-gpt-4o-eu", O200K),
        ("team_gpt41_mini", O200K),
        ("azure/prod-gpt-35-turbo", CL100K),
        ("gpt35", CL100K),
        ("gpt4-32k-legacy", CL100K),
        ("my-gpt-4-1106-deployment", CL100K),
        ("eastus-o3-pro", O200K),
        ("4o-mini", O200K),
        ("text-embedding-3-large-eu", CL100K),
        # tiktoken knows it, but its encoding is not bundled: the default
        ("text-davinci-003", O200K),
        ("gpt2", O200K),
        # nobody knows it: the default
        ("claude-3-5-sonnet", O200K),
        ("llama-3.1-70b", O200K),
        ("", O200K),
        ("pro1", O200K),
    ],
)
def test_model_resolves_to_encoding(model: str, expected: str) -> None:
    """Each name resolves to the encoding its family uses, or to the default."""
    assert ModelResolver(O200K, AVAILABLE).resolve(model).encoding == expected


@pytest.mark.parametrize("model", ["claude-3-opus", "text-davinci-003", "mistral-large", "gpt2"])
def test_unknown_or_unbundled_models_get_the_callers_default(model: str) -> None:
    """The default comes from the caller, not from a hard-coded choice."""
    assert ModelResolver(CL100K, AVAILABLE).resolve(model).encoding == CL100K


def test_harmony_models_count_with_o200k_base() -> None:
    """gpt-oss uses o200k_harmony, whose ordinary tokens are o200k_base's."""
    assert family_encoding("gpt-oss-20b") == "o200k_harmony"
    assert ModelResolver(CL100K, AVAILABLE).resolve("gpt-oss-20b").encoding == O200K


def test_resolved_encoding_must_be_loaded() -> None:
    """A family encoding that is not loaded falls back to the default."""
    assert ModelResolver(O200K, [O200K]).resolve("gpt-4").encoding == O200K


@pytest.mark.parametrize("model", [None, 42, 4.2, True, ["gpt-4"], {"name": "gpt-4"}])
def test_non_string_models_get_the_default(model: object) -> None:
    """A ``model`` field that is not a string resolves to the default."""
    assert ModelResolver(CL100K, AVAILABLE).resolve(model).encoding == CL100K


@given(st.text())
def test_any_text_resolves_without_raising(model: str) -> None:
    """Arbitrary strings, surrogates included, resolve to a loaded encoding."""
    resolver = ModelResolver(O200K, AVAILABLE, cache_size=8)
    assert resolver.resolve(model).encoding in AVAILABLE
    assert resolver.resolve(model.upper()).encoding in AVAILABLE


@given(JSON)
def test_any_json_value_resolves_without_raising(model: object) -> None:
    """Whatever a client puts in ``model`` resolves to a loaded encoding."""
    assert ModelResolver(O200K, AVAILABLE).resolve(model).encoding in AVAILABLE


def test_resolution_is_cached_and_bounded() -> None:
    """Repeated names hit the cache, and the cache never grows past its bound."""
    resolver = ModelResolver(O200K, AVAILABLE, cache_size=2)
    for model in ["gpt-4", "gpt-4", "gpt-4o", "o3", "gpt-4o"]:
        resolver.resolve(model)
    info = resolver.cache_info()
    assert (info.hits, info.misses, info.currsize, info.maxsize) == (2, 3, 2, 2)


def test_huge_names_are_not_cached() -> None:
    """A multi-megabyte model name is resolved without being kept in the cache."""
    resolver = ModelResolver(O200K, AVAILABLE)
    assert resolver.resolve("gpt-4-" + "x" * 1_000_000).encoding == CL100K
    assert resolver.cache_info().currsize == 0


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", TilePricing(85, 170)),
        ("gpt-4.1", TilePricing(85, 170)),
        ("some-new-model", TilePricing(85, 170)),
        ("gpt-4o-mini", TilePricing(2833, 5667)),
        ("azure/gpt-4o-mini-2024-07-18", TilePricing(2833, 5667)),
        ("gpt-4.1-mini", PatchPricing(1620)),
        ("gpt-5-mini", PatchPricing(1620)),
        ("gpt-4.1-nano-2025-04-14", PatchPricing(2460)),
        ("gpt-5-nano", PatchPricing(2460)),
        ("o4-mini", PatchPricing(1720)),
    ],
)
def test_image_pricing_by_model(model: str, expected: TilePricing | PatchPricing) -> None:
    """Vision pricing follows OpenAI's per-model table; unknown models price like GPT-4o."""
    assert image_pricing(model) == expected


def test_normalize_strips_provider_prefixes() -> None:
    """Provider prefixes, case and surrounding space are dropped."""
    assert normalize(" Azure/OpenAI/GPT-4o ") == "gpt-4o"
