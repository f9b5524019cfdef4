"""What one API key may use, and what one request asks for.

A ``LimitSpec`` is fixed per key by configuration; an ``Admission`` is built per request by the
proxy. Every amount is an integer: requests, tokens, milliseconds, nano-USD.

Money (dollar budgets of the key and of its team, and prepaid credits) rides in the same
admission as the token limits: a request holds its worst-case price (``Admission.nano_usd``)
against every money dimension at once, and settlement replaces the hold with the real cost.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TypeGuard

from sentinel.config.budgets import Budgets
from sentinel.config.limits import MAX_AMOUNT, limit_problems

__all__ = [
    "MAX_AMOUNT",
    "MONEY",
    "QUOTAS",
    "TEAM_MONEY",
    "Admission",
    "Dimension",
    "LimitSpec",
    "local_share",
    "reservation_tokens",
]


class Dimension(StrEnum):
    """One limit of a key; the value is the name used in refusals, logs and metric labels."""

    REQUESTS = "requests"
    TOKENS = "tokens"
    PARALLEL = "parallel"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    USD_DAY = "usd_per_day"
    USD_WEEK = "usd_per_week"
    USD_MONTH = "usd_per_month"
    USD_TOTAL = "usd_total"
    CREDITS = "credits"
    TEAM_USD_DAY = "team_usd_per_day"
    TEAM_USD_WEEK = "team_usd_per_week"
    TEAM_USD_MONTH = "team_usd_per_month"
    TEAM_USD_TOTAL = "team_usd_total"

    @property
    def is_quota(self) -> bool:
        """Whether this is a calendar quota (day, week or month) rather than a rate."""
        return self in QUOTAS

    @property
    def is_money(self) -> bool:
        """Whether this is a dollar budget or the credit balance (refused with a 402)."""
        return self in _MONEY_SET

    @property
    def calendar(self) -> Dimension | None:
        """The calendar period of a token quota or a dollar budget (None: never resets)."""
        return _CALENDAR.get(self)

    @property
    def code(self) -> int:
        """The dimension's number in Lua replies: 1 to 6 in declaration order (0 is "none")."""
        return _ORDER.index(self) + 1


QUOTAS = (Dimension.DAY, Dimension.WEEK, Dimension.MONTH)
MONEY = (Dimension.USD_DAY, Dimension.USD_WEEK, Dimension.USD_MONTH, Dimension.USD_TOTAL)
"""The key's dollar budgets, in the order their checks run (credits come after them)."""
TEAM_MONEY = (
    Dimension.TEAM_USD_DAY,
    Dimension.TEAM_USD_WEEK,
    Dimension.TEAM_USD_MONTH,
    Dimension.TEAM_USD_TOTAL,
)
"""The team's dollar budgets, in the order their checks run."""
_ORDER = tuple(Dimension)
_MONEY_SET = frozenset((*MONEY, *TEAM_MONEY, Dimension.CREDITS))
_CALENDAR = {
    **{d: d for d in QUOTAS},
    Dimension.USD_DAY: Dimension.DAY,
    Dimension.USD_WEEK: Dimension.WEEK,
    Dimension.USD_MONTH: Dimension.MONTH,
    Dimension.TEAM_USD_DAY: Dimension.DAY,
    Dimension.TEAM_USD_WEEK: Dimension.WEEK,
    Dimension.TEAM_USD_MONTH: Dimension.MONTH,
}
_BUDGET_FIELDS = {
    Dimension.USD_DAY: "usd_per_day",
    Dimension.USD_WEEK: "usd_per_week",
    Dimension.USD_MONTH: "usd_per_month",
    Dimension.USD_TOTAL: "usd_total",
    Dimension.TEAM_USD_DAY: "usd_per_day",
    Dimension.TEAM_USD_WEEK: "usd_per_week",
    Dimension.TEAM_USD_MONTH: "usd_per_month",
    Dimension.TEAM_USD_TOTAL: "usd_total",
}

_FIELDS = {
    Dimension.REQUESTS: "rpm",
    Dimension.TOKENS: "tpm",
    Dimension.PARALLEL: "max_parallel",
    Dimension.DAY: "tokens_per_day",
    Dimension.WEEK: "tokens_per_week",
    Dimension.MONTH: "tokens_per_month",
}


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """Every limit of one API key; ``None`` means no limit on that dimension.

    ``rpm`` and ``tpm`` are sliding one-minute windows, ``max_parallel`` counts requests in
    flight, and the ``tokens_per_*`` quotas are calendar periods (ISO weeks start on Monday)
    in ``timezone``. A limit of 0 refuses everything on that dimension.

    Money, in nano-USD: ``budgets`` are the key's dollar budgets, ``team_budgets`` those of
    ``team`` (its counters are the team's, shared by all its keys); ``credits`` makes the key
    credit-metered (it holds against its prepaid balance). ``credit_share`` replaces the
    stored balance by a fixed amount: the fail-closed fallback's share, never set otherwise.
    """

    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    tokens_per_day: int | None = None
    tokens_per_week: int | None = None
    tokens_per_month: int | None = None
    timezone: str = "UTC"
    budgets: Budgets = field(default_factory=Budgets)
    team: str | None = None
    team_budgets: Budgets = field(default_factory=Budgets)
    credits: bool = False
    credit_share: int | None = None
    has_money: bool = field(init=False, repr=False, compare=False)
    """Whether any dollar budget or the credit balance applies to this key (worked out once:
    every admission asks)."""

    def __post_init__(self) -> None:
        money = (
            self.credits or self.budgets.any or (self.team is not None and self.team_budgets.any)
        )
        object.__setattr__(self, "has_money", money)

    def limit(self, dimension: Dimension) -> int | None:
        """The configured limit of ``dimension`` (credits: the fallback's share, if any)."""
        if dimension is Dimension.CREDITS:
            return self.credit_share
        budget = _BUDGET_FIELDS.get(dimension)
        if budget is not None:
            owner = self.team_budgets if dimension in TEAM_MONEY else self.budgets
            money: int | None = getattr(owner, budget)
            return money
        value: int | None = getattr(self, _FIELDS[dimension])
        return value

    def budgets_of(self, dimensions: tuple[Dimension, ...]) -> Iterator[tuple[Dimension, int]]:
        """The configured budgets among ``dimensions`` (``MONEY`` or ``TEAM_MONEY``)."""
        if dimensions is TEAM_MONEY and self.team is None:
            return
        for dimension in dimensions:
            limit = self.limit(dimension)
            if limit is not None:
                yield dimension, limit

    def quotas(self) -> Iterator[tuple[Dimension, int]]:
        """The configured calendar quotas, day before week before month."""
        for dimension in QUOTAS:
            limit = self.limit(dimension)
            if limit is not None:
                yield dimension, limit

    def problems(self) -> list[str]:
        """Every invalid field as ``"field: message"``; empty when all is well."""
        return limit_problems({n: getattr(self, n) for n in _FIELDS.values()}, self.timezone)


def local_share(spec: LimitSpec, replicas: int) -> LimitSpec:
    """``spec`` with every limit divided by ``replicas`` (floor): one replica's fail-closed share.

    The share never exceeds the full limit, so a bad replica count cannot loosen a limit.
    """
    count = max(1, replicas)
    shares = {
        name: min(value, value // count)
        for name in _FIELDS.values()
        if (value := getattr(spec, name)) is not None
    }
    return replace(spec, **shares)


def _new_reservation_id() -> str:
    return secrets.token_hex(12)


@dataclass(slots=True, unsafe_hash=True)  # per request: not frozen (see decision.py)
class Admission:
    """One request asking to be admitted for ``key_name``.

    ``tokens`` is what to reserve: the prompt's counted tokens plus the completion cap (see
    ``reservation_tokens``); ``nano_usd`` what it holds on the key's money dimensions.
    ``reservation_id`` names the reservation, its parallel lease and its money hold; it is
    random and never the client-supplied request id, so two requests never share a lease.
    """

    key_name: str
    request_id: str
    tokens: int
    reservation_id: str = field(default_factory=_new_reservation_id)
    nano_usd: int = 0
    """The hold on every money dimension: the price of the prompt plus the completion cap."""


def reservation_tokens(
    prompt_tokens: int,
    body: Mapping[str, object],
    default_completion_reserve: int,
    *,
    caps: tuple[str, ...],
    choices: tuple[str, ...],
) -> int:
    """Tokens to reserve for a request: prompt + completion cap, times the choices asked for.

    Only the API's own fields count (a field another API has cannot lower the reservation):
    the cap is the largest of ``caps`` that is a whole number >= 0, else
    ``default_completion_reserve``; the choices are the largest of ``choices`` that is a whole
    number >= 1 (chat's ``n``; completions' ``n`` and ``best_of``, each choice billed).
    """
    found = [value for name in caps if _is_count(value := body.get(name), low=0)]
    cap = max(found) if found else default_completion_reserve
    count = max((value for name in choices if _is_count(value := body.get(name), low=1)), default=1)
    return max(0, prompt_tokens) + cap * count


def _is_count(value: object, *, low: int) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low
