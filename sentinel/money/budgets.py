"""Which money applies to a principal, and what a request holds against it.

A principal's money is its own dollar budgets (``Principal.budgets``: TOML ``usd_*`` fields,
runtime keys, identity principals), its team's (``[teams.<name>]``) and, once it has ever been
topped up, its prepaid credits. With ``[credits] url`` the credits live in an external ledger
instead (``sentinel.money.ledger``): every principal is credit-metered there, held at the
ledger after the gate admits it, and never through the limit store. ``Budgeting.spec_of``
folds the rest into the ``LimitSpec`` the gate admits with, so money is checked in the very
same atomic call as the token limits.

The hold is the price of the counted prompt at the highest input rate plus the completion cap
at the highest output rate (``hold_nano``), on the dearest of the upstreams the request may
fail over to: whichever answers, the real cost of a reply within its cap fits the hold. A
budgeted request that names no completion cap gets one (``[limits]
default_completion_reserve``) injected into the body the upstream receives, so the hold
bounds the reply. What the prompt counter cannot see (files by id, remote images, audio)
is not held: each request in flight may overshoot by that much (see the README).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from redis.asyncio import Redis, RedisCluster

from sentinel.config import Config
from sentinel.config.budgets import Budgets, format_usd
from sentinel.config.spending import BudgetSettings
from sentinel.errors import PaymentRequired, PermissionDenied
from sentinel.limits.decision import team_state_name
from sentinel.limits.gate import Gate
from sentinel.limits.holds import CREDITS_FIELD, TOTAL_FIELD
from sentinel.limits.memory import MemoryStore
from sentinel.limits.periods import current_period
from sentinel.limits.spec import MONEY, TEAM_MONEY, Dimension, LimitSpec
from sentinel.limits.store import LimitStore
from sentinel.limits.window import KeyState
from sentinel.money.alerts import AlertClaims, BudgetAlerts, RedisClaims, SqliteClaims
from sentinel.money.credits import CreditAccounts, RedisCredits, SqliteCredits
from sentinel.money.ledger import ExternalLedger
from sentinel.money.prices import Price, PriceBook, hold_nano
from sentinel.statefile import STATE_FILE

if TYPE_CHECKING:
    from sentinel.auth.keys import Principal
    from sentinel.upstream.routing import Candidate

__all__ = ["Budgeting", "inject_cap", "open_budgeting"]

log = structlog.get_logger("sentinel.money")

_MAX_SPECS = 100_000


class Budgeting:
    """The money side of admission: the spec with money in it, and the hold; it owns the
    credit accounts (or the external ledger) and the budget alerts."""

    def __init__(
        self,
        settings: BudgetSettings,
        credits: CreditAccounts | None = None,
        alerts: BudgetAlerts | None = None,
        ledger: ExternalLedger | None = None,
    ) -> None:
        self.settings = settings
        self.credits = credits
        self.alerts = alerts
        self.ledger = ledger  # [credits] url: credits held there, and nowhere else
        self._teams = dict(settings.teams)
        # Principal id → (the principal, whether credit-metered, its spec): worked out once
        # per principal object, not per request.
        self._specs: dict[str, tuple[Principal, bool, LimitSpec]] = {}

    async def start(self, gate: Gate) -> None:
        """Watch the gate's settlements for alerts; read which keys are credit-metered (so
        that none is served unmetered after a restart) and keep refreshing it."""
        if self.alerts is not None:
            gate.watch_spending(self.alerts.observe)
            self.alerts.start()
        if self.ledger is not None:
            self.ledger.start()
        if isinstance(self.credits, RedisCredits):
            try:
                await self.credits.refresh()
            except Exception as exc:  # Redis down at startup: the refresh loop keeps trying
                log.warning("credit_accounts_unread", error=str(exc))
            self.credits.start()

    async def aclose(self) -> None:
        """Deliver queued alerts and ledger settlements, and stop the background tasks."""
        if self.ledger is not None:
            await self.ledger.aclose()
        if self.alerts is not None:
            await self.alerts.aclose()
        if isinstance(self.credits, RedisCredits):
            await self.credits.aclose()
        elif isinstance(self.credits, SqliteCredits):
            self.credits.close()

    def team_budgets(self, team: str | None) -> Budgets | None:
        """The budgets of ``team`` (None: it has none)."""
        return self._teams.get(team) if team is not None else None

    def is_metered(self, principal: Principal) -> bool:
        """Whether any money applies to ``principal`` (budgets, its team's, or credits; with
        an external ledger, every principal's requests hold credits)."""
        return self.ledger is not None or self.spec_of(principal) is not principal.limits

    def spec_of(self, principal: Principal) -> LimitSpec:
        """``principal.limits`` with its money folded in (the same object when it has none)."""
        credits = self.credits is not None and self.credits.is_metered(principal.id)
        known = self._specs.get(principal.id)
        if known is not None and known[0] is principal and known[1] is credits:
            return known[2]
        spec = self._fold(principal, credits)
        if len(self._specs) >= _MAX_SPECS:
            self._specs.clear()
        self._specs[principal.id] = (principal, credits, spec)
        return spec

    def _fold(self, principal: Principal, credits: bool) -> LimitSpec:
        team = self.team_budgets(principal.team)
        if not principal.budgets.any and team is None and not credits:
            return principal.limits
        return replace(
            principal.limits,
            budgets=principal.budgets,
            team=principal.team if team is not None else None,
            team_budgets=team or Budgets(),
            credits=credits,
        )

    def check_spending(self, principal: Principal, family: str) -> None:
        """403 ``endpoint_not_allowed`` for a key with money on a token-spending pass-through
        family it was not allowed (``passthrough`` on the key): what such a call costs
        cannot be held before it is made, so a budget could not bound it."""
        if family in principal.passthrough or not self.is_metered(principal):
            return
        raise PermissionDenied(
            f"This key's spending is limited in dollars, and the '{family}' endpoints spend "
            "in ways that cannot be priced before the call; ask an administrator to allow "
            "them for this key.",
            code="endpoint_not_allowed",
        )

    async def view(self, principal: Principal, store: LimitStore) -> dict[str, Any]:
        """``GET /v1/key``'s money: each budget's limit, spent (charged), held (requests in
        flight) and left, the team's, and the credits; exact decimal strings."""
        now_ms = time.time_ns() // 1_000_000
        spec = self.spec_of(principal)
        tz = spec.timezone
        state = await store.state(principal.id) if spec.has_money else KeyState()
        view: dict[str, Any] = {
            "budgets": _windows(spec, MONEY, state, now_ms, tz),
            "team_budgets": None,
            "credits": None,
        }
        if spec.team is not None:
            team = await store.state(team_state_name(spec.team))
            view["team_budgets"] = _windows(spec, TEAM_MONEY, team, now_ms, tz)
        if self.ledger is not None:
            view["credits"] = await self._ledger_view(principal, self.ledger)
        elif spec.credits:
            held = _held(state, now_ms)
            balance = state.credits_in - state.money.get(CREDITS_FIELD, 0)
            view["credits"] = {
                "balance_usd": format_usd(balance),
                "held_usd": format_usd(held),
                "available_usd": format_usd(max(0, balance - held)),
            }
        return view

    async def _ledger_view(self, principal: Principal, ledger: ExternalLedger) -> dict[str, Any]:
        """The credits as the external ledger reports them (nulls when it cannot say)."""
        view: dict[str, Any] = {"ledger": "external", "account": None}
        try:
            view["account"] = account = ledger.account_of(principal)
        except PermissionDenied:
            return {**view, "balance_usd": None, "held_usd": None}
        found = await ledger.balance(account)
        return {**view, **(found or {"balance_usd": None, "held_usd": None})}

    def hold(
        self,
        prices: PriceBook,
        candidates: list[Candidate],
        model: str | None,
        tier: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        first: Price | None = None,
    ) -> int:
        """Nano-USD to hold: the dearest candidate's price of the prompt plus the completion
        cap; 402 ``price_unknown`` when no candidate prices ``model``. No model: nothing.
        ``first``: the first candidate's price, when the caller has looked it up already."""
        if not model:
            return 0
        if first is not None and len(candidates) == 1:  # the usual case, in one step
            return hold_nano(first, max(0, prompt_tokens), max(0, completion_tokens))
        found = [
            price
            for candidate in candidates
            if (price := prices.price_of(candidate.model or model, candidate.name, tier))
            is not None
        ]
        if not found:
            raise PaymentRequired(
                f"The model '{model[:100]}' has no price on this gateway, and this key's "
                "spending is counted in dollars. Ask the gateway's operator to add a [prices] "
                "entry for it.",
                code="price_unknown",
                param="model",
            )
        prompt, completion = max(0, prompt_tokens), max(0, completion_tokens)
        if len(found) == 1:
            return hold_nano(found[0], prompt, completion)
        return max(hold_nano(price, prompt, completion) for price in found)


def _held(state: KeyState, now_ms: int) -> int:
    return sum(amount for amount, expires in state.holds.values() if expires > now_ms)


def _windows(
    spec: LimitSpec, dimensions: tuple[Dimension, ...], state: KeyState, now_ms: int, tz: str
) -> dict[str, Any]:
    """Each configured budget among ``dimensions`` with what is spent, held and left."""
    held = _held(state, now_ms)
    found: dict[str, Any] = {}
    for dimension, limit in spec.budgets_of(dimensions):
        reset: int | None = None
        name = TOTAL_FIELD
        if dimension.calendar is not None:
            period = current_period(dimension, now_ms, tz)
            name, reset = period.name, period.end_ms // 1000
        spent = state.money.get(name, 0)
        found[str(dimension).removeprefix("team_")] = {
            "limit_usd": format_usd(limit),
            "spent_usd": format_usd(spent),
            "held_usd": format_usd(held),
            "left_usd": format_usd(max(0, limit - spent - held)),
            "resets_at": reset,
        }
    return found


def inject_cap(body: dict[str, Any], caps: tuple[str, ...], reserve: int) -> bool:
    """Give a request that names no completion cap ``caps[0] = reserve``; True if it did."""
    if not caps:
        return False
    for name in caps:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return False
    body[caps[0]] = reserve
    return True


def open_budgeting(
    config: Config,
    store: LimitStore,
    redis: Redis | RedisCluster | None,
    session: aiohttp.ClientSession,
) -> Budgeting:
    """The budgeting of this deployment: credits and alert claims in Redis with ``[redis]``,
    else in the state file (credits then held against the embedded ``MemoryStore``); with
    ``[credits] url``, credits in the external ledger instead."""
    credits: CreditAccounts | None = None
    ledger = ExternalLedger(session, config.credits) if config.credits is not None else None
    claims: AlertClaims
    if redis is not None and config.redis is not None:
        if ledger is None:
            credits = RedisCredits(redis, config.redis.timeout_ms)
        claims = RedisClaims(redis)
    else:
        claims = SqliteClaims(config.server.state_dir)
        # As the runtime keys: a gateway that cannot top up and never did writes no state.
        can_top_up = config.admin.is_enabled or (config.server.state_dir / STATE_FILE).exists()
        if isinstance(store, MemoryStore) and can_top_up and ledger is None:
            credits = SqliteCredits(config.server.state_dir, store)
    settings = config.budgets
    alerts = BudgetAlerts(
        settings.alert_thresholds, claims, session=session, webhook=settings.webhook
    )
    return Budgeting(settings, credits, alerts, ledger)
