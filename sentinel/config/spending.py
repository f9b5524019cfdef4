"""``[budgets]`` and ``[teams.<name>]``: dollar budget alerts and the budgets of teams.

A key's own budgets are ``usd_per_day``, ``usd_per_week``, ``usd_per_month`` and ``usd_total``
on its ``[[keys]]`` entry (``read_budgets``). A team's are the same four fields under
``[teams.<name>]``: every key whose ``team`` is that name draws on one shared set of team
counters, checked in the same atomic admission as the key's own::

    [teams.research]
    usd_per_month = "500.00"

    [budgets]
    alert_thresholds = [0.5, 0.8, 1.0]   # fractions of each budget; one alert per window each
    [budgets.webhook]                    # optional: where alerts are POSTed (as [usage.webhook])
    url = "https://alerts.internal/sentinel"

Team counters live under the team's own Redis hash tag, so with ``[redis] cluster = true`` team
budgets are a configuration error (one script may only touch one cluster slot). Plain data:
``sentinel.money`` enforces it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from sentinel.config.budgets import BUDGET_FIELDS, Budgets, parse_usd
from sentinel.config.table import NAME, Table
from sentinel.config.usage import WebhookSettings

__all__ = ["BASIS", "BudgetSettings", "read_budget_settings", "read_budgets"]

BASIS = 10_000
"""Alert thresholds are held in basis points of a budget (``0.8`` → ``8000``)."""
_DEFAULT_THRESHOLDS = (5_000, 8_000, 10_000)


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    """``[budgets]`` and ``[teams.*]``: alert thresholds (basis points), where alerts go,
    and each team's budgets in nano-USD."""

    alert_thresholds: tuple[int, ...] = _DEFAULT_THRESHOLDS
    webhook: WebhookSettings | None = None
    teams: tuple[tuple[str, Budgets], ...] = ()

    def team(self, name: str | None) -> Budgets | None:
        """The budgets of team ``name``; None when it has none."""
        if name is None:
            return None
        for team, budgets in self.teams:
            if team == name:
                return budgets
        return None


def read_budgets(t: Table) -> Budgets:
    """The four ``usd_*`` fields of ``t`` (decimal strings), each problem with its path."""
    found: dict[str, int | None] = {}
    for name in BUDGET_FIELDS:
        value = t.take(name)
        found[name] = None
        if value is None:
            continue
        try:
            found[name] = parse_usd(value)
        except ValueError as error:
            t.problem(name, str(error))
    return Budgets(**found)


def read_budget_settings(
    budgets: Table,
    teams: Table,
    *,
    read_webhook: Callable[[Table], WebhookSettings],
    cluster: bool,
) -> BudgetSettings:
    """``[budgets]`` (thresholds, webhook) and every ``[teams.<name>]`` table."""
    thresholds = _thresholds(budgets)
    webhook = read_webhook(budgets.table("webhook")) if budgets.has("webhook") else None
    budgets.finish()
    found: list[tuple[str, Budgets]] = []
    for name in teams.keys():
        table = teams.table(name)
        if not NAME.fullmatch(name):
            teams.problem(name, "a team name is 1 to 64 of A-Z a-z 0-9 _ . -")
        team = read_budgets(table)
        table.finish()
        if team.any:
            found.append((name, team))
    if found and cluster:
        teams.problem(
            None,
            "team budgets need a single Redis server or a sentinel-managed one: a team's "
            "counters and its keys' live under different hash tags, which a cluster cannot "
            "update in one script",
        )
    return BudgetSettings(thresholds, webhook, tuple(found))


def _thresholds(t: Table) -> tuple[int, ...]:
    raw = t.take("alert_thresholds")
    if raw is None:
        return _DEFAULT_THRESHOLDS
    if not isinstance(raw, list):
        t.problem("alert_thresholds", "expected an array of fractions such as [0.5, 0.8, 1.0]")
        return _DEFAULT_THRESHOLDS
    found: list[int] = []
    for i, value in enumerate(raw):
        try:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise InvalidOperation
            fraction = Decimal(str(value))
        except InvalidOperation:
            t.problem(f"alert_thresholds[{i}]", f"expected a fraction, got {str(value)[:40]!r}")
            continue
        basis = fraction * BASIS
        if not fraction.is_finite() or not 0 < fraction <= 1 or basis != int(basis):
            t.problem(
                f"alert_thresholds[{i}]",
                f"expected a fraction above 0 and at most 1 (4 decimals), got {value!r}",
            )
            continue
        found.append(int(basis))
    return tuple(sorted(set(found)))
