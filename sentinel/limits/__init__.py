"""Exact request and token limits, quotas and parallel leases, with a fail-closed fallback.

Pure core: ``spec`` (what a key may use), ``periods`` (calendar quotas), ``window`` (the
integer arithmetic, the reference for the Lua scripts) with ``holds`` (its money: dollar
budgets and credits), ``decision`` (plans, decisions, reservations), ``spending`` (what a
settlement charged, for the budget alerts) and ``headers``. Thin
shell: ``MemoryStore``, ``RedisStore`` (the ``limits.lua``) and ``GuardedStore`` (its
breaker is ``sentinel.breaker``'s, on the ``REDIS_BREAKER`` policy), all behind the
``LimitStore`` Protocol.
"""

from sentinel.limits.decision import Decision, RateWindow, Refusal, Reservation
from sentinel.limits.guarded import REDIS_BREAKER, GuardedStore, GuardStats, OnUnavailable
from sentinel.limits.headers import DEGRADED_HEADER, duration, rate_limit_headers, refusal_error
from sentinel.limits.memory import MemoryStore
from sentinel.limits.periods import Period, current_period
from sentinel.limits.redis_store import RedisStore, redis_keys
from sentinel.limits.settings import key_spec, timing_of
from sentinel.limits.spec import Admission, Dimension, LimitSpec, local_share, reservation_tokens
from sentinel.limits.store import LimitStore, MergingStore, StoreUnavailable
from sentinel.limits.window import KeyState, Timing, WindowUsage

__all__ = [
    "DEGRADED_HEADER",
    "REDIS_BREAKER",
    "Admission",
    "Decision",
    "Dimension",
    "GuardStats",
    "GuardedStore",
    "KeyState",
    "LimitSpec",
    "LimitStore",
    "MemoryStore",
    "MergingStore",
    "OnUnavailable",
    "Period",
    "RateWindow",
    "RedisStore",
    "Refusal",
    "Reservation",
    "StoreUnavailable",
    "Timing",
    "WindowUsage",
    "current_period",
    "duration",
    "key_spec",
    "local_share",
    "rate_limit_headers",
    "redis_keys",
    "refusal_error",
    "reservation_tokens",
    "timing_of",
]
