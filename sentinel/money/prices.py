"""The price book and the exact arithmetic of what a request costs.

Rates are integer **nano-USD per million tokens** (``Price``; ``"0.075"`` USD → ``75_000_000``),
so a token at a rate costs ``rate / 10⁶`` nano-USD and a request's cost is an integer number of
10⁻¹⁵ USD: ``cost_of`` returns it as an exact ``Decimal`` (never rounded), ``charge_nano`` rounds
it **up** to whole nano-USD for counters, and ``hold_nano`` prices a reservation the same way.
No float ever takes part.

Which price applies (``PriceBook.price_of``): among the rules whose glob matches the model and
whose qualifiers match the request, the first by

1. qualifiers: ``upstream`` and ``service_tier`` both given, then ``upstream`` only, then
   ``service_tier`` only, then neither (a qualified rule only matches when its qualifier equals
   the request's);
2. an exact name (no ``*?[``) before a glob;
3. the glob with more literal characters (``gpt-4o-mini*`` before ``gpt-4o*`` before ``*``);
4. the later source: ``[prices]`` in the TOML, then ``[money] prices_file``, then the shipped
   OpenAI prices;
5. the earlier rule within its source.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_CEILING, Context, Decimal, Inexact, Rounded
from importlib import resources

from sentinel.config.money import PER_MILLION, MoneyConfig, Price, PriceRule, parse_rate
from sentinel.usage.counts import Usage

__all__ = [
    "DEFAULT_PRICES",
    "Price",
    "PriceBook",
    "charge_nano",
    "cost_nano",
    "cost_of",
    "format_cost",
    "hold_nano",
    "shipped_rules",
]

DEFAULT_PRICES = "openai_prices.json"
"""The shipped price data, a resource of this package."""
_FEMTO_PER_NANO = PER_MILLION  # a rate times tokens is in 10⁻¹⁵ USD: nano-USD / 10⁶
# Wide enough for any product of two counters (< 2^53 * 10^13); exactness is trapped, not hoped.
_EXACT = Context(prec=64, traps=[Inexact, Rounded])
_GLOB_CHARS = re.compile(r"[*?\[]")


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _femto(price: Price, usage: Usage) -> int:
    """The exact cost of ``usage`` in 10⁻¹⁵ USD (see ``cost_of`` for the rules)."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    audio_in = min(usage.audio_prompt_tokens, usage.prompt_tokens - cached)
    text_in = usage.prompt_tokens - cached - audio_in
    audio_out = min(usage.audio_completion_tokens, usage.completion_tokens)
    text_out = usage.completion_tokens - audio_out
    cached_rate = price.input if price.cached_input is None else price.cached_input
    audio_in_rate = price.input if price.audio_input is None else price.audio_input
    audio_out_rate = price.output if price.audio_output is None else price.audio_output
    return (
        text_in * price.input
        + cached * cached_rate
        + audio_in * audio_in_rate
        + text_out * price.output
        + audio_out * audio_out_rate
    )


def cost_of(price: Price, usage: Usage) -> Decimal:
    """The exact USD cost of a finished request's ``usage``, never rounded.

    ``prompt_tokens`` include the cached and audio ones and ``completion_tokens`` include the
    reasoning and audio ones, as OpenAI reports them. Each token is billed once: cached prompt
    tokens at ``cached_input`` (``input`` when the price has none), then audio prompt tokens at
    ``audio_input``, the rest of the prompt at ``input``; audio completion tokens at
    ``audio_output`` and every other completion token, reasoning included, at ``output``. A
    missing audio rate falls back to the text rate. Parts larger than their whole are clipped
    to it (cached first), so a malformed report can never bill a token twice.
    """
    return Decimal(_femto(price, usage)).scaleb(-15, _EXACT)


def cost_nano(price: Price, usage: Usage) -> int:
    """``cost_of`` rounded up to whole nano-USD, in integer math (``charge_nano(cost_of(…))``)."""
    return _ceil_div(_femto(price, usage), _FEMTO_PER_NANO)


def charge_nano(cost: Decimal) -> int:
    """An exact USD ``cost`` as whole nano-USD, rounded **up** (what a budget counter is charged:
    at most 10⁻⁹ USD more than the exact cost, never less). ``ValueError`` if negative."""
    if not cost.is_finite() or cost < 0:
        raise ValueError(f"a cost must be a finite amount of at least 0, got {cost}")
    nano = cost.scaleb(9, _EXACT)
    return int(nano.to_integral_value(rounding=ROUND_CEILING))


def hold_nano(price: Price, prompt_tokens: int, completion_cap: int) -> int:
    """What to reserve before a request, in whole nano-USD rounded **up**: ``prompt_tokens`` at
    the highest input rate the price has (``input``, ``cached_input`` or ``audio_input``) plus
    ``completion_cap`` at the highest output rate (``output`` or ``audio_output``), so the real
    cost of a reply whose prompt was counted right and whose completion stays within the cap
    never exceeds the hold."""
    if prompt_tokens < 0 or completion_cap < 0:
        raise ValueError("token counts must be at least 0")
    femto = prompt_tokens * price.dearest_input + completion_cap * price.dearest_output
    return -(-femto // _FEMTO_PER_NANO)  # _ceil_div, without a call: once per request


def format_cost(cost: Decimal) -> str:
    """An exact cost as a plain decimal string without exponent or trailing zeros
    (``Decimal("1.50E-7")`` → ``"0.00000015"``; zero → ``"0"``)."""
    text = format(cost, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


@dataclass(frozen=True, slots=True)
class _Ranked:
    """A rule with its compiled glob, sortable by precedence (lower ``rank`` wins)."""

    rank: tuple[int, int, int, int, int]
    rule: PriceRule
    match: re.Pattern[str] | None  # None: an exact name


def _rank(rule: PriceRule, layer: int, index: int) -> _Ranked:
    qualifiers = (rule.upstream is None) * 2 + (rule.service_tier is None)  # 0 is both
    exact = not _GLOB_CHARS.search(rule.model)
    literal = len(_GLOB_CHARS.sub("", rule.model))
    compiled = None if exact else re.compile(fnmatch.translate(rule.model))
    return _Ranked((qualifiers, not exact, -literal, -layer, index), rule, compiled)


class PriceBook:
    """Every price rule, in precedence order (see the module docstring), with a bounded cache
    of answers per (model, upstream, service_tier) so the request path looks up a dict."""

    def __init__(self, layers: Iterable[Iterable[PriceRule]], *, cache_size: int = 4096) -> None:
        """``layers`` from the lowest precedence (shipped) to the highest (TOML)."""
        ranked = [
            _rank(rule, layer, index)
            for layer, rules in enumerate(layers)
            for index, rule in enumerate(rules)
        ]
        self._rules = tuple(sorted(ranked, key=lambda r: r.rank))
        self._cache: dict[tuple[str, str | None, str | None], Price | None] = {}
        self._cache_size = cache_size

    @classmethod
    def from_config(cls, money: MoneyConfig) -> PriceBook:
        """The shipped prices (unless ``default_prices = false``), ``prices_file``, ``[prices]``."""
        shipped = shipped_rules() if money.default_prices else ()
        return cls((shipped, money.file_prices, money.prices))

    def price_of(
        self, model: str, upstream: str | None = None, service_tier: str | None = None
    ) -> Price | None:
        """The price of ``model`` served by ``upstream`` at ``service_tier``; None if unpriced."""
        key = (model, upstream, service_tier)
        try:
            return self._cache[key]
        except KeyError:
            pass
        price = self._find(model, upstream, service_tier)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()  # bounded: client-sent model names are unbounded
        self._cache[key] = price
        return price

    def _find(self, model: str, upstream: str | None, tier: str | None) -> Price | None:
        for ranked in self._rules:
            rule = ranked.rule
            if rule.upstream is not None and rule.upstream != upstream:
                continue
            if rule.service_tier is not None and rule.service_tier != tier:
                continue
            if ranked.match is None:
                if rule.model == model:
                    return rule.price
            elif ranked.match.match(model):
                return rule.price
        return None

    def __len__(self) -> int:
        return len(self._rules)


def shipped_rules() -> tuple[PriceRule, ...]:
    """The OpenAI prices shipped in the package (``openai_prices.json``), as rules."""
    data = json.loads(resources.files(__package__).joinpath(DEFAULT_PRICES).read_text("utf-8"))
    rules = []
    for entry in data["prices"]:
        price = Price(
            input=parse_rate(entry["input"]),
            output=parse_rate(entry["output"]),
            cached_input=_optional_rate(entry.get("cached_input")),
            audio_input=_optional_rate(entry.get("audio_input")),
            audio_output=_optional_rate(entry.get("audio_output")),
        )
        rules.append(
            PriceRule(
                entry["model"],
                price,
                None,
                entry.get("service_tier"),
                origin=f"{DEFAULT_PRICES}:{entry['model']}",
            )
        )
    return tuple(rules)


def _optional_rate(value: object) -> int | None:
    return None if value is None else parse_rate(value)
