"""The price book's arithmetic and precedence, as pure functions."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.config.money import MAX_RATE, MoneyConfig, Price, PriceRule, parse_rate
from sentinel.money.prices import (
    PriceBook,
    charge_nano,
    cost_nano,
    cost_of,
    format_cost,
    hold_nano,
    shipped_rules,
)
from sentinel.usage.counts import MAX_TOKENS, Usage

MINI = Price(input=150_000_000, output=600_000_000, cached_input=75_000_000)
AUDIO = Price(
    input=2_500_000_000,
    output=10_000_000_000,
    cached_input=1_250_000_000,
    audio_input=40_000_000_000,
    audio_output=80_000_000_000,
)
PER_MILLION_USD = Decimal(10) ** 15  # rates are nano-USD per million tokens

rates = st.integers(min_value=0, max_value=MAX_RATE)
counts = st.integers(min_value=0, max_value=MAX_TOKENS)
prices = st.builds(
    Price,
    input=rates,
    output=rates,
    cached_input=st.none() | rates,
    audio_input=st.none() | rates,
    audio_output=st.none() | rates,
)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    """Usage as OpenAI reports it: the parts within their wholes."""
    prompt = draw(st.integers(min_value=0, max_value=10**12))
    completion = draw(st.integers(min_value=0, max_value=10**12))
    cached = draw(st.integers(min_value=0, max_value=prompt))
    audio_in = draw(st.integers(min_value=0, max_value=prompt - cached))
    reasoning = draw(st.integers(min_value=0, max_value=completion))
    audio_out = draw(st.integers(min_value=0, max_value=completion - reasoning))
    return Usage(prompt, completion, prompt + completion, cached, reasoning, audio_in, audio_out)


def formula(price: Price, u: Usage) -> Decimal:
    """The Decimal formula written out the obvious way (USD)."""
    cached = price.input if price.cached_input is None else price.cached_input
    a_in = price.input if price.audio_input is None else price.audio_input
    a_out = price.output if price.audio_output is None else price.audio_output
    text_in = u.prompt_tokens - u.cached_tokens - u.audio_prompt_tokens
    text_out = u.completion_tokens - u.audio_completion_tokens
    total = (
        Decimal(text_in) * price.input
        + Decimal(u.cached_tokens) * cached
        + Decimal(u.audio_prompt_tokens) * a_in
        + Decimal(text_out) * price.output
        + Decimal(u.audio_completion_tokens) * a_out
    )
    return total / PER_MILLION_USD


@given(prices, usages())
def test_cost_equals_the_decimal_formula(price: Price, usage: Usage) -> None:
    """cost_of is exactly the Decimal formula, and charge_nano is its ceiling in nano-USD."""
    cost = cost_of(price, usage)
    assert cost == formula(price, usage)
    nano = charge_nano(cost)
    assert nano == cost_nano(price, usage)
    assert Decimal(nano) / 10**9 >= cost > Decimal(nano - 1) / 10**9 or nano == cost == 0


@given(prices, usages())
def test_cached_tokens_are_never_billed_twice(price: Price, usage: Usage) -> None:
    """Moving tokens from uncached to cached changes the cost by exactly the rate difference."""
    plain = Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
    cached_rate = price.input if price.cached_input is None else price.cached_input
    with_cache = Usage(usage.prompt_tokens, usage.completion_tokens, 0, usage.cached_tokens)
    delta = Decimal(usage.cached_tokens * (price.input - cached_rate)) / PER_MILLION_USD
    assert cost_of(price, plain) - cost_of(price, with_cache) == delta


@given(prices, usages())
def test_reasoning_tokens_are_billed_once_as_output(price: Price, usage: Usage) -> None:
    """Reasoning tokens are part of completion_tokens: reporting them changes nothing."""
    without = Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
    with_reasoning = Usage(
        usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, 0, usage.reasoning_tokens
    )
    assert cost_of(price, without) == cost_of(price, with_reasoning)


@given(prices, counts, counts)
def test_hold_covers_any_reply_within_the_cap(price: Price, prompt: int, cap: int) -> None:
    """The hold is at least the cost of the counted prompt plus a full-cap reply, however
    that reply splits into audio, cached or text tokens."""
    hold = hold_nano(price, prompt, cap)
    for usage in (
        Usage(prompt, cap, prompt + cap),
        Usage(prompt, cap, prompt + cap, 0, 0, prompt, cap),
        Usage(prompt, cap, prompt + cap, prompt),
    ):
        assert hold >= cost_nano(price, usage)


def test_a_worked_example() -> None:
    """1000 prompt (200 cached) + 500 completion (100 reasoning) on gpt-4o-mini rates."""
    cost = cost_of(MINI, Usage(1000, 500, 1500, 200, 100))
    assert cost == Decimal("0.000435")  # 800 at 0.15, 200 at 0.075, 500 at 0.60 per million
    assert format_cost(cost) == "0.000435"
    assert charge_nano(cost) == 435_000


def test_audio_tokens_use_audio_rates() -> None:
    """Audio prompt and completion tokens are billed at the audio rates, the rest at text."""
    usage = Usage(1000, 1000, 2000, 0, 0, 600, 400)
    expected = (400 * 2.5 + 600 * 40 + 600 * 10 + 400 * 80) / 10**6
    assert cost_of(AUDIO, usage) == Decimal(str(expected))


def test_overlapping_parts_are_clipped() -> None:
    """A report whose parts exceed their whole never bills more tokens than the whole."""
    usage = Usage(100, 10, 110, cached_tokens=80, audio_prompt_tokens=80)
    # 80 cached at 1.25, the 20 left are audio at 40: no token twice.
    assert cost_of(AUDIO, usage) == Decimal(80 * 1.25 + 20 * 40 + 10 * 10) / 10**6


def test_charging_rounds_up_to_a_nano_dollar() -> None:
    """A cost below a nano-dollar is charged one; an exact one is charged itself."""
    assert charge_nano(Decimal("0.0000000001")) == 1
    assert charge_nano(Decimal("0.000000002")) == 2
    assert charge_nano(Decimal(0)) == 0
    with pytest.raises(ValueError, match="at least 0"):
        charge_nano(Decimal("-1"))


def test_format_cost_is_plain_decimal() -> None:
    """Costs print without exponents or trailing zeros."""
    assert format_cost(Decimal("1.5E-7")) == "0.00000015"
    assert format_cost(Decimal("0E-15")) == "0"
    assert format_cost(Decimal("12.500")) == "12.5"


@pytest.mark.parametrize(
    ("text", "nano"),
    [("0.075", 75_000_000), ("2.50", 2_500_000_000), ("0", 0), (3, 3_000_000_000)],
)
def test_parse_rate_is_exact(text: str | int, nano: int) -> None:
    """Decimal strings become whole nano-USD per million tokens."""
    assert parse_rate(text) == nano


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("-1", "at least 0"),
        ("abc", "decimal string"),
        (0.15, "decimal string"),
        (True, "decimal string"),
        ("10000.01", "more than $10,000"),
        ("0.0000000001", "more than 9 decimals"),
        ("NaN", "finite"),
    ],
)
def test_parse_rate_refuses_bad_values(value: object, reason: str) -> None:
    """Negative, non-numeric, inexact, absurd and too-fine rates are refused with a reason."""
    with pytest.raises(ValueError, match=reason.replace("$", r"\$")):
        parse_rate(value)


def rule(model: str, usd: int, upstream: str | None = None, tier: str | None = None) -> PriceRule:
    return PriceRule(model, Price(usd, usd), upstream, tier)


def test_exact_names_beat_globs_and_longer_globs_beat_shorter() -> None:
    """An exact name wins over any glob; among globs, more literal characters win."""
    book = PriceBook([[rule("*", 1), rule("gpt-4o*", 2), rule("gpt-4o-mini*", 3)]])
    assert book.price_of("gpt-4o-mini-2024") == Price(3, 3)
    assert book.price_of("gpt-4o-2024") == Price(2, 2)
    assert book.price_of("other") == Price(1, 1)
    book = PriceBook([[rule("gpt-4o-mini", 4), rule("gpt-4o-mini*", 3)]])
    assert book.price_of("gpt-4o-mini") == Price(4, 4)


def test_qualified_rules_win_only_where_they_match() -> None:
    """Upstream- and tier-qualified rules beat unqualified ones, but only when they match."""
    book = PriceBook(
        [
            [
                rule("gpt-4o", 1),
                rule("*", 2, upstream="azure"),
                rule("gpt-4o", 3, tier="flex"),
                rule("gpt-4o", 4, upstream="azure", tier="flex"),
            ]
        ]
    )
    assert book.price_of("gpt-4o") == Price(1, 1)
    assert book.price_of("gpt-4o", "openai") == Price(1, 1)
    assert book.price_of("gpt-4o", "azure") == Price(2, 2)
    assert book.price_of("gpt-4o", None, "flex") == Price(3, 3)
    assert book.price_of("gpt-4o", "azure", "flex") == Price(4, 4)
    assert book.price_of("gpt-4o", "azure", "priority") == Price(2, 2)


def test_later_layers_win_ties_and_a_catch_all_does_not_override_names() -> None:
    """The TOML layer replaces a shipped rule of equal rank; a TOML ``*`` only fills gaps."""
    shipped = [rule("gpt-4o", 1), rule("gpt-4o-mini", 5)]
    toml = [rule("gpt-4o", 2), rule("*", 9)]
    book = PriceBook([shipped, [], toml])
    assert book.price_of("gpt-4o") == Price(2, 2)
    assert book.price_of("gpt-4o-mini") == Price(5, 5)
    assert book.price_of("my-local-llama") == Price(9, 9)


def test_unpriced_models_are_none_and_the_cache_stays_bounded() -> None:
    """A model no rule matches has no price; many distinct names never grow the cache unbounded."""
    book = PriceBook([[rule("gpt-*", 1)]], cache_size=8)
    assert book.price_of("llama") is None
    for i in range(100):
        assert book.price_of(f"gpt-{i}") == Price(1, 1)
    assert len(book._cache) <= 8


def test_shipped_prices_cover_openai_models() -> None:
    """The shipped file parses and prices the common models, snapshots and tiers."""
    book = PriceBook.from_config(MoneyConfig())
    assert book.price_of("gpt-4o-mini") == MINI
    assert book.price_of("gpt-4o-mini-2024-07-18") == MINI
    assert book.price_of("gpt-4o-2024-05-13") == Price(5_000_000_000, 15_000_000_000)
    assert book.price_of("text-embedding-3-small") == Price(20_000_000, 0)
    o3_flex = book.price_of("o3", service_tier="flex")
    assert o3_flex is not None and o3_flex.input == 1_000_000_000
    for model in ("gpt-4.1", "o4-mini", "gpt-5", "gpt-3.5-turbo", "text-embedding-ada-002"):
        assert book.price_of(model) is not None, model
    assert len(shipped_rules()) > 50


def test_default_prices_can_be_switched_off() -> None:
    """``default_prices = false`` leaves only the configured rules."""
    book = PriceBook.from_config(MoneyConfig(default_prices=False))
    assert book.price_of("gpt-4o") is None


def test_audio_token_details_are_read_from_chat_usage() -> None:
    """``prompt_tokens_details.audio_tokens`` and ``completion_tokens_details.audio_tokens``
    become the audio parts that audio rates apply to."""
    usage = Usage.from_openai(
        {
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 10, "audio_tokens": 60},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 40},
        }
    )
    assert usage == Usage(100, 50, 150, 10, 0, 60, 40)
    assert Usage.from_openai({"input_tokens": 3, "output_tokens": 4}) == Usage(3, 4, 7)


def test_public_api() -> None:
    """The package exports exactly the price book's documented names."""
    import sentinel.money

    assert sorted(sentinel.money.__all__) == [
        "Price",
        "PriceBook",
        "charge_nano",
        "cost_of",
        "hold_nano",
    ]
