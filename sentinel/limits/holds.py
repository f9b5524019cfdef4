"""The money arithmetic of an admission: holds against dollar budgets and prepaid credits.

Part of the reference implementation (``window.py`` calls ``check_money`` from ``admit``;
``limits.lua`` mirrors it step by step). A budget checks ``charged + held + hold <= limit``
on its current period's counter; credits check ``held + hold <= topped up - charged``. Holds
that expired are dropped first, so a replica killed mid-request frees its hold after the
lease TTL. What each check leaves is returned, for the budget headers and the fallback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sentinel.limits.spec import Dimension

if TYPE_CHECKING:
    from sentinel.limits.window import AdmitPlan, KeyState

__all__ = [
    "CREDITS_FIELD",
    "NO_MONEY",
    "TOTAL_FIELD",
    "Consider",
    "MoneyCheck",
    "MoneyChecks",
    "check_money",
    "purge_holds",
]

Consider = Callable[[Dimension, bool, bool, int], None]
"""The verdict's ``consider(dimension, refused, can never fit, retry after ms)``."""

CREDITS_FIELD = "credits"
"""The money counter of what was charged against prepaid credits (never resets)."""
TOTAL_FIELD = "usd_total"
"""The money counter of the ``usd_total`` budget (never resets)."""


@dataclass(frozen=True, slots=True)
class MoneyCheck:
    """One dollar budget as an admission sees it: its counter, limit and reset (0: never)."""

    dimension: Dimension
    name: str
    limit: int
    end_ms: int
    packed: tuple[int, str, int, int] = field(init=False, repr=False, compare=False)
    """The check as ``limits.lua`` reads it (code, counter, limit, end), worked out once."""

    def __post_init__(self) -> None:
        packed = (self.dimension.code, self.name, self.limit, self.end_ms)
        object.__setattr__(self, "packed", packed)


_CREDITS_CHECK = MoneyCheck(Dimension.CREDITS, CREDITS_FIELD, 0, 0)
"""Where the credits sit among the money checks (never renewing)."""


@dataclass(frozen=True, slots=True)
class MoneyChecks:
    """Every money check of one key in the current periods, and what each admission derives
    from them, worked out once (the limits' calendar keeps it for the key's spec until the
    first of its periods ends): every admission of the key's plans, replies and
    reservations then shares these tuples."""

    money: tuple[MoneyCheck, ...]
    """The key's own budgets."""
    team: tuple[MoneyCheck, ...]
    """Its team's budgets."""
    credits: bool
    """Whether the key is credit-metered."""
    checks: tuple[MoneyCheck, ...]
    """All of them in the order ``limits.lua`` replies: the key's, the credits, the team's."""
    dimensions: tuple[Dimension, ...]
    """The dimension of each of ``checks``."""
    money_dimensions: tuple[Dimension, ...]
    team_dimensions: tuple[Dimension, ...]
    limits: tuple[int, ...]
    """The limit of each of ``checks`` (nano-USD; 0 for credits)."""
    args: str
    """The checks as ``limits.lua``'s admit reads them: the key's, whether credit-metered,
    the team's, as one string of words separated by spaces (Redis parses each string once
    and keeps it)."""

    @classmethod
    def of(
        cls, money: tuple[MoneyCheck, ...], team: tuple[MoneyCheck, ...], credits: bool
    ) -> MoneyChecks:
        """The checks ``money``, ``team`` and (if ``credits``) the credits'."""
        checks = (*money, *((_CREDITS_CHECK,) if credits else ()), *team)
        words = (
            len(money),
            *(word for check in money for word in check.packed),
            int(credits),
            len(team),
            *(word for check in team for word in check.packed),
        )
        return cls(
            money=money,
            team=team,
            credits=credits,
            checks=checks,
            dimensions=tuple(c.dimension for c in checks),
            money_dimensions=tuple(c.dimension for c in money),
            team_dimensions=tuple(c.dimension for c in team),
            limits=tuple(c.limit for c in checks),
            args=" ".join(str(word) for word in words),
        )


NO_MONEY = MoneyChecks.of((), (), False)
"""The checks of a key without money."""


def check_money(
    state: KeyState, team: KeyState | None, plan: AdmitPlan, consider: Consider
) -> list[int]:
    """Consider every money check; what each leaves before this request's hold."""
    remaining: list[int] = []
    if plan.holds_money:
        held = purge_holds(state.holds, plan.now_ms)
        for check in plan.checks.money:
            remaining.append(_check_budget(state, check, held, plan, consider))
        if plan.checks.credits:
            topped_up = plan.credit_share if plan.credit_share is not None else state.credits_in
            free = topped_up - state.money.get(CREDITS_FIELD, 0) - held
            # Only a top-up helps: no wait does, so it is reported as never fitting.
            consider(Dimension.CREDITS, plan.nano_usd > free, True, 0)
            remaining.append(free)
    if plan.checks.team and team is not None:
        held = purge_holds(team.holds, plan.now_ms)
        for check in plan.checks.team:
            remaining.append(_check_budget(team, check, held, plan, consider))
    return remaining


def _check_budget(
    state: KeyState, check: MoneyCheck, held: int, plan: AdmitPlan, consider: Consider
) -> int:
    if check.end_ms and check.name not in state.money:  # a new period: drop the earlier ones
        _purge_named(state.money, check.name)
    used = state.money.get(check.name, 0) + held
    over = plan.nano_usd > check.limit
    refused = over or used + plan.nano_usd > check.limit
    if check.end_ms:
        consider(check.dimension, refused, over, check.end_ms - plan.now_ms)
    else:  # usd_total never renews: no wait helps
        consider(check.dimension, refused, True, 0)
    return check.limit - used


def purge_holds(holds: dict[str, tuple[int, int]], now_ms: int) -> int:
    """Drop expired holds; the nano-USD the live ones hold."""
    for hold in [h for h, (_, expires) in holds.items() if expires <= now_ms]:
        del holds[hold]
    return sum(amount for amount, _ in holds.values())


def _purge_named(counters: dict[str, int], name: str) -> None:
    prefix = name.split(":", 1)[0] + ":"
    for other in [n for n in counters if n.startswith(prefix) and n != name]:
        del counters[other]
