"""``[prices]`` and ``[money]``: what models cost, as plain data for ``sentinel.money``.

Rates are USD per million tokens, written as decimal strings (``input = "0.15"``) and held as
whole **nano-USD per million tokens** (``"0.075"`` → ``75_000_000``), so every cost is exact
integer math: a rate has at most 9 decimals, and anything finer is a config error. A table's name
is the model glob it prices; ``model`` replaces the name as the glob, so one model can be priced
several ways, per ``upstream`` (a ``[[upstreams]]`` name) or per ``service_tier``::

    [prices."gpt-4o-mini"]
    input = "0.15"
    cached_input = "0.075"
    output = "0.60"

    [prices."o3 flex"]
    model = "o3"
    service_tier = "flex"
    input = "1.00"
    output = "4.00"

``[money] prices_file`` loads a LiteLLM-format JSON price map (USD per token as JSON numbers); each
number is read through its shortest decimal spelling (``Decimal(str(x))``), never float math.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from pathlib import Path

import orjson

from sentinel.config.table import Table, show

__all__ = [
    "MAX_RATE",
    "PER_MILLION",
    "MoneyConfig",
    "Price",
    "PriceRule",
    "parse_rate",
    "read_litellm",
    "read_money",
    "read_prices",
]

NANO = 1_000_000_000
PER_MILLION = 1_000_000
MAX_RATE = 10_000 * NANO
"""The highest rate accepted: $10,000 per million tokens (anything above is a typo)."""
_RATE_FIELDS = ("input", "cached_input", "output", "audio_input", "audio_output")
_TIERS_OF_LITELLM = ("flex", "priority")  # LiteLLM's ``*_flex`` / ``*_priority`` fields


@dataclass(frozen=True, slots=True)
class Price:
    """A model's rates in integer nano-USD per million tokens; ``None`` falls back (see
    ``sentinel.money.prices.cost_of``): cached input to ``input``, audio to the text rates."""

    input: int
    output: int
    cached_input: int | None = None
    audio_input: int | None = None
    audio_output: int | None = None
    dearest_input: int = dataclass_field(init=False, repr=False, compare=False)
    """The highest of the input rates (what a hold prices the prompt at)."""
    dearest_output: int = dataclass_field(init=False, repr=False, compare=False)
    """The highest of the output rates (what a hold prices the completion cap at)."""

    def __post_init__(self) -> None:
        dearest_in = max(self.input, self.audio_input or 0, self.cached_input or 0)
        object.__setattr__(self, "dearest_input", dearest_in)
        object.__setattr__(self, "dearest_output", max(self.output, self.audio_output or 0))


@dataclass(frozen=True, slots=True)
class PriceRule:
    """One priced glob: ``model`` (an fnmatch glob, case-sensitive), optionally only for one
    upstream and/or one ``service_tier``; ``origin`` says where it came from, for messages."""

    model: str
    price: Price
    upstream: str | None = None
    service_tier: str | None = None
    origin: str = "config"


@dataclass(frozen=True, slots=True)
class MoneyConfig:
    """``[money]`` plus ``[prices]``: rules from the TOML and from ``prices_file``, and whether
    the shipped OpenAI prices are used beneath them."""

    prices: tuple[PriceRule, ...] = ()  # from [prices."<glob>"]
    file_prices: tuple[PriceRule, ...] = ()  # from [money] prices_file
    prices_file: Path | None = None
    default_prices: bool = True


def parse_rate(value: object) -> int:
    """A USD-per-million-tokens decimal string (or int) as nano-USD per million tokens.

    ``ValueError`` with a readable reason for floats (inexact in TOML), non-numbers, negatives,
    more than 9 decimals and rates above $10,000 per million tokens.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f'expected a decimal string such as "0.15", got {show(value)}')
    try:
        rate = Decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, ValueError):
        raise ValueError(f'expected a decimal string such as "0.15", got {show(value)}') from None
    return _nano_rate(rate, str(value)[:40], exact=True)


def _nano_rate(rate: Decimal, shown: str, *, exact: bool) -> int:
    if not rate.is_finite() or rate < 0:
        raise ValueError(f"must be a finite amount of at least 0, got {shown!r}")
    if rate * NANO > MAX_RATE:
        raise ValueError(f"is more than $10,000 per million tokens, got {shown!r}")
    nano = rate * NANO
    whole = nano.to_integral_value(rounding=ROUND_CEILING)
    if exact and whole != nano:
        raise ValueError(f"has more than 9 decimals, got {shown!r}")
    return int(whole)


def read_prices(t: Table, upstreams: Collection[str]) -> tuple[PriceRule, ...]:
    """Every ``[prices."<name>"]`` table, each problem reported with its path; ``upstream``
    must name one of ``upstreams``."""
    rules = []
    for name in t.keys():
        raw = t.take(name)
        where = f'{t.where()}."{name}"'
        if not isinstance(raw, dict):
            t.problems.append(f"{where}: expected a table, got {show(raw)}")
            continue
        rule = _read_rule(Table(raw, where, t.problems, t.env), name, upstreams)
        if rule is not None:
            rules.append(rule)
    return tuple(rules)


def _read_rule(t: Table, name: str, upstreams: Collection[str]) -> PriceRule | None:
    model = t.string("model", name, check=_glob_problem)
    if not t.has("model") and (problem := _glob_problem(name)):
        t.problem(None, problem)
    upstream = t.string("upstream") or None
    if upstream is not None and upstream not in upstreams:
        known = ", ".join(sorted(upstreams))
        t.problem("upstream", f"no [[upstreams]] entry is named {upstream!r} (known: {known})")
    tier = t.string("service_tier") or None
    rates: dict[str, int | None] = {}
    valid = True
    for field in _RATE_FIELDS:
        value = t.take(field)
        rates[field] = None
        if value is None:
            if field in ("input", "output"):
                t.problem(field, "is required")
                valid = False
            continue
        try:
            rates[field] = parse_rate(value)
        except ValueError as error:
            t.problem(field, str(error))
            valid = False
    t.finish()
    if not valid or rates["input"] is None or rates["output"] is None:
        return None
    price = Price(
        input=rates["input"],
        output=rates["output"],
        cached_input=rates["cached_input"],
        audio_input=rates["audio_input"],
        audio_output=rates["audio_output"],
    )
    return PriceRule(model, price, upstream, tier, origin=t.where())


def _glob_problem(glob: str) -> str | None:
    if not 0 < len(glob) <= 256 or any(c.isspace() for c in glob):
        return f"expected a model glob of 1 to 256 characters without spaces, got {glob!r}"
    return None


def read_money(t: Table, prices: Table, upstreams: Collection[str] = ()) -> MoneyConfig:
    """``[money]`` (``prices_file``, ``default_prices``) and the ``[prices]`` tables."""
    file = t.string("prices_file") or None
    default_prices = t.boolean("default_prices", True)
    t.finish()
    file_prices: tuple[PriceRule, ...] = ()
    if file is not None:
        try:
            file_prices = read_litellm(Path(file))
        except ValueError as error:
            t.problem("prices_file", str(error))
    return MoneyConfig(
        prices=read_prices(prices, upstreams),
        file_prices=file_prices,
        prices_file=None if file is None else Path(file),
        default_prices=default_prices,
    )


def read_litellm(path: Path) -> tuple[PriceRule, ...]:
    """A LiteLLM ``model_prices_and_context_window.json`` as rules; ``ValueError`` on problems.

    Models without ``input_cost_per_token`` (image, per-second and per-character models) are
    skipped; ``output_cost_per_token`` defaults to 0 (embeddings). Per-token floats become
    decimals through ``str`` (their shortest round-trip spelling) and are multiplied exactly;
    a rate finer than 10⁻⁹ USD per million tokens is rounded **up** to the next whole one.
    ``*_flex`` and ``*_priority`` rates become rules for that ``service_tier``.
    """
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as error:
        raise ValueError(f"cannot read {str(path)!r}: {error.strerror or error}") from None
    except orjson.JSONDecodeError as error:
        raise ValueError(f"{str(path)!r} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r}: expected a JSON object of models")
    rules: list[PriceRule] = []
    for model, entry in data.items():
        if model == "sample_spec" or not isinstance(entry, dict):
            continue
        for tier in (None, *_TIERS_OF_LITELLM):
            suffix = "" if tier is None else f"_{tier}"
            if f"input_cost_per_token{suffix}" not in entry:
                continue
            try:
                price = _litellm_price(entry, suffix)
            except ValueError as error:
                raise ValueError(f"{str(path)!r}: {model!r}: {error}") from None
            rules.append(PriceRule(model, price, None, tier, origin=f"{path}:{model}"))
    return tuple(rules)


def _litellm_price(entry: dict[str, object], suffix: str) -> Price:
    def rate(field: str, default: int | None) -> int | None:
        value = entry.get(field + suffix)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{field + suffix}: expected a number, got {show(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{field + suffix}: expected a finite number, got {value}")
        try:
            return _nano_rate(Decimal(str(value)) * PER_MILLION, str(value), exact=False)
        except ValueError as error:
            raise ValueError(f"{field + suffix} (per token) {error}") from None

    inp = rate("input_cost_per_token", None)
    assert inp is not None  # the caller checked the field is there
    return Price(
        input=inp,
        output=rate("output_cost_per_token", 0) or 0,
        cached_input=rate("cache_read_input_token_cost", None),
        audio_input=rate("input_cost_per_audio_token", None),
        audio_output=rate("output_cost_per_audio_token", None),
    )
