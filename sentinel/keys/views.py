"""JSON views of keys that are not runtime records: config keys, and a caller's own key.

``own_key_view`` is ``GET /v1/key``: what a key may do and what remains of each limit. It is
a plain function of the principal and its usage so that other features (dollar budgets) can
add their own fields to the same view.
"""

from __future__ import annotations

from typing import Any

from sentinel.auth.keys import Principal
from sentinel.config import KeyConfig
from sentinel.config.budgets import BUDGET_FIELDS, format_usd
from sentinel.config.limits import LIMIT_FIELDS
from sentinel.limits.spec import Dimension
from sentinel.limits.window import WindowUsage

__all__ = ["config_key_view", "own_key_view"]

_DIMENSIONS = {
    "rpm": Dimension.REQUESTS,
    "tpm": Dimension.TOKENS,
    "max_parallel": Dimension.PARALLEL,
    "tokens_per_day": Dimension.DAY,
    "tokens_per_week": Dimension.WEEK,
    "tokens_per_month": Dimension.MONTH,
}


def config_key_view(key: KeyConfig) -> dict[str, Any]:
    """A ``[[keys]]`` entry as the keys API lists it: read-only, ``"source": "config"``."""
    return {
        "object": "key",
        "id": f"cfg:{key.name}",
        "name": key.name,
        "team": key.team,
        "status": "active",
        "source": "config",
        "created_at": None,
        "expires_at": None,
        "revoked_at": None,
        "last_used_at": None,
        "key_prefix": None,
        "models": None if key.models is None else list(key.models),
        **{name: getattr(key, name, None) for name in LIMIT_FIELDS},
        **{name: _usd(getattr(key, name, None)) for name in BUDGET_FIELDS},
        "metadata": {},
        "version": None,
    }


def own_key_view(
    principal: Principal, usage: WindowUsage | None, *, source: str, expires_at: int | None
) -> dict[str, Any]:
    """The caller's own key: who it is, its models, each limit with what is used and what
    remains (``used`` and ``remaining`` are null when the limit store cannot say), budgets."""
    limits: dict[str, dict[str, int | None] | None] = {}
    for name, dimension in _DIMENSIONS.items():
        limit = principal.limits.limit(dimension)
        if limit is None:
            limits[name] = None
            continue
        used = None if usage is None else int(getattr(usage, dimension.value))
        limits[name] = {
            "limit": limit,
            "used": used,
            "remaining": None if used is None else max(0, limit - used),
        }
    return {
        "object": "key",
        "id": principal.id,
        "name": principal.name,
        "team": principal.team,
        "source": source,
        "models": None if principal.models is None else list(principal.models),
        "limits": limits,
        "budgets": principal.budgets.as_strings(),
        "expires_at": expires_at,
    }


def _usd(value: object) -> str | None:
    return format_usd(value) if isinstance(value, int) else None
