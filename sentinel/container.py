"""The one typed container of long-lived objects, handed to requests via lifespan state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from sentinel.auth.authenticator import Authenticator
from sentinel.config import Config
from sentinel.guardrails import Guardrails
from sentinel.http.asgi import Scope
from sentinel.http.context import RequestContext
from sentinel.keys import KeyAdmin
from sentinel.limits.gate import Gate
from sentinel.money.budgets import Budgeting
from sentinel.money.prices import PriceBook
from sentinel.streaming.drain import Drainer
from sentinel.tenancy import OwnerIndex
from sentinel.tokens import PromptCounter
from sentinel.upstream.board import HealthBoard
from sentinel.upstream.failover import Failover
from sentinel.upstream.routing import Router
from sentinel.usage.estimate import DriftStats
from sentinel.usage.tracker import UsageTracker

__all__ = ["SERVICES_KEY", "Services", "services_of"]

SERVICES_KEY = "services"


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a request may use, opened by the lifespan and closed after it."""

    config: Config
    auth: Authenticator  # config keys, then runtime keys and the identity service
    router: Router
    session: aiohttp.ClientSession
    tokens: PromptCounter
    drift: DriftStats
    gate: Gate
    tracker: UsageTracker
    record_usage: Callable[[RequestContext, int], None]  # the usage record of a finished request
    drainer: Drainer | None  # with [usage] drain_on_disconnect
    board: HealthBoard  # breakers, latency and in-flight calls per upstream
    failover: Failover
    owners: OwnerIndex  # who owns each object created through the gateway
    prices: PriceBook  # shipped OpenAI prices, [money] prices_file, [prices]
    keys: KeyAdmin | None = None  # runtime keys and their admin (None: no store for them)
    guardrails: Guardrails | None = None  # [[rules]] and [pii] (None: nothing is screened)
    budgeting: Budgeting | None = None  # dollar budgets, credits, alerts (None: no money)


def services_of(scope: Scope) -> Services:
    """The services of the app serving ``scope`` (lifespan state, copied per request)."""
    services: Services = scope["state"][SERVICES_KEY]
    return services
