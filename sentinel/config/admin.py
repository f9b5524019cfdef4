"""``[admin]``: the admin API's bearer tokens, each with a name for the audit log.

``token`` is the historical single token, named ``admin``; ``[[admin.tokens]]`` adds named
ones (``name``, ``token``), so that every change in the audit says which token made it. Names
and tokens are unique: two names sharing one token would make the audit ambiguous. The audit
is bounded by ``audit_retention_days`` and ``audit_max_entries``, whichever cuts first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from sentinel.config.table import Table, name_problem

__all__ = ["ADMIN_TOKEN_NAME", "AdminConfig", "AdminToken", "admin_client_env", "read_admin"]

ADMIN_TOKEN_NAME = "admin"  # noqa: S105 (a name, not a secret)
"""The name of ``[admin] token`` in the audit."""


def admin_client_env(env: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """``$SENTINEL_ADMIN_URL`` and ``$SENTINEL_ADMIN_TOKEN`` (None where unset or empty): the
    defaults of the ``sentinel keys`` commands, which talk to the admin API as a client."""
    env = os.environ if env is None else env
    return env.get("SENTINEL_ADMIN_URL") or None, env.get("SENTINEL_ADMIN_TOKEN") or None


@dataclass(frozen=True, slots=True)
class AdminToken:
    """One named admin token (``[[admin.tokens]]``)."""

    name: str
    token: str


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """``[admin]``: the bearer tokens of the admin API (none disables it) and the audit's bounds."""

    token: str | None = None
    tokens: tuple[AdminToken, ...] = ()
    audit_retention_days: int = 90
    audit_max_entries: int = 100_000

    def named_tokens(self) -> tuple[AdminToken, ...]:
        """Every admin token with its name: ``[admin] token`` as ``admin``, then the others."""
        first = (AdminToken(ADMIN_TOKEN_NAME, self.token),) if self.token else ()
        return first + self.tokens

    @property
    def is_enabled(self) -> bool:
        """Whether any admin token is configured (without one the admin API does not exist)."""
        return bool(self.token) or bool(self.tokens)


def read_admin(t: Table) -> AdminConfig:
    """The ``[admin]`` table; every problem is recorded on ``t`` with its path."""
    d = AdminConfig()
    token = t.secret("token")
    tokens: list[AdminToken] = []
    names = {ADMIN_TOKEN_NAME} if token else set()
    values = {token} if token else set()
    for entry in t.tables("tokens"):
        name = entry.string("name", required=True, check=name_problem)
        value = entry.secret("token", min_length=16)
        if value is None and not entry.has("token"):
            entry.problem("token", "is required")
        entry.finish()
        if not name or value is None:
            continue
        if name in names:
            entry.problem("name", f"duplicate admin token name {name!r}")
        elif value in values:
            entry.problem("token", "the same token is configured under another name")
        else:
            tokens.append(AdminToken(name, value))
        names.add(name)
        values.add(value)
    admin = AdminConfig(
        token=token,
        tokens=tuple(tokens),
        audit_retention_days=t.integer("audit_retention_days", d.audit_retention_days, minimum=1),
        audit_max_entries=t.integer("audit_max_entries", d.audit_max_entries, minimum=100),
    )
    t.finish()
    return admin
