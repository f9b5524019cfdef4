"""A runtime key as stored: its fields, its status, and the digests that open it.

A ``KeyRecord`` never holds a secret: only the SHA-256 digest of the current secret and, after
a rotation with a grace period, the digests of earlier secrets with the time each stops
working. ``version`` counts the record's changes; stores use it for compare-and-set and caches
for "newer wins". Times are Unix seconds.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson

from sentinel.auth.fields import PrincipalFields
from sentinel.config.budgets import BUDGET_FIELDS, Budgets, format_usd, parse_usd
from sentinel.config.limits import LIMIT_FIELDS

__all__ = [
    "KEY_ID_PREFIX",
    "KeyRecord",
    "Status",
    "new_key_id",
    "new_secret",
    "prefix_of",
    "secret_digest",
]

KEY_ID_PREFIX = "key_"
SECRET_PREFIX = "sk-"  # noqa: S105 (the prefix every secret starts with)
_SECRET_BYTES = 32  # token_urlsafe(32): 43 url-safe characters
_SHOWN_CHARS = 8  # of the secret in key_prefix: "sk-" and five random characters

Status = Literal["active", "revoked", "expired"]


def new_key_id() -> str:
    """A fresh ``key_…`` id (random: ids reveal nothing about order or count)."""
    return KEY_ID_PREFIX + secrets.token_hex(12)


def new_secret() -> str:
    """A fresh secret: ``sk-`` and 43 url-safe random characters (256 bits)."""
    return SECRET_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


def secret_digest(secret: str) -> bytes:
    """The SHA-256 of ``secret``, the only form in which a store ever holds it."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


def prefix_of(secret: str) -> str:
    """What a view shows of ``secret`` to recognise it by: its first characters and an ellipsis."""
    return secret[:_SHOWN_CHARS] + "…"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One runtime key; ``digest`` and ``grace`` are hex SHA-256 digests, never shown."""

    id: str
    name: str
    digest: str
    key_prefix: str | None  # None for an imported digest: no secret was ever seen
    created_at: int
    team: str | None = None
    models: tuple[str, ...] | None = None
    limits: Mapping[str, int | None] = field(default_factory=dict)
    budgets: Mapping[str, int | None] = field(default_factory=dict)  # nano-USD
    metadata: Mapping[str, Any] = field(default_factory=dict)
    expires_at: int | None = None
    revoked_at: int | None = None
    grace: tuple[tuple[str, int], ...] = ()  # (digest of an earlier secret, valid until)
    version: int = 1

    def status(self, now: float) -> Status:
        """``revoked`` once revoked, ``expired`` from ``expires_at`` on, else ``active``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def digests(self, now: float) -> dict[str, int | None]:
        """Each digest that may open this key at ``now``, with the time it stops (None: never
        before the key itself expires)."""
        found: dict[str, int | None] = {d: until for d, until in self.grace if until > now}
        found[self.digest] = None
        return found

    def fields(self) -> PrincipalFields:
        """The principal fields the authenticator builds this key's ``Principal`` from."""
        return PrincipalFields(
            name=self.name,
            team=self.team,
            models=self.models,
            limits={n: self.limits.get(n) for n in LIMIT_FIELDS},
            budgets=Budgets(**{n: self.budgets.get(n) for n in BUDGET_FIELDS}),
        )

    def changed(self, **changes: Any) -> KeyRecord:
        """This record with ``changes`` applied and its version one higher."""
        return replace(self, **changes, version=self.version + 1)

    def dump(self) -> bytes:
        """The stored JSON form (digests included: they are what a lookup matches)."""
        return orjson.dumps(
            {
                "id": self.id,
                "name": self.name,
                "digest": self.digest,
                "key_prefix": self.key_prefix,
                "created_at": self.created_at,
                "team": self.team,
                "models": self.models,
                "limits": {n: v for n, v in self.limits.items() if v is not None},
                # Exact decimal strings, as written: whole nano-USD in memory.
                "budgets": {n: format_usd(v) for n, v in self.budgets.items() if v is not None},
                "metadata": self.metadata,
                "expires_at": self.expires_at,
                "revoked_at": self.revoked_at,
                "grace": [list(g) for g in self.grace],
                "version": self.version,
            }
        )

    @classmethod
    def load(cls, raw: bytes | str) -> KeyRecord:
        """A record from its stored JSON form."""
        data = orjson.loads(raw)
        models = data.get("models")
        return cls(
            id=data["id"],
            name=data["name"],
            digest=data["digest"],
            key_prefix=data.get("key_prefix"),
            created_at=int(data["created_at"]),
            team=data.get("team"),
            models=None if models is None else tuple(models),
            limits=dict(data.get("limits") or {}),
            budgets={n: parse_usd(v) for n, v in (data.get("budgets") or {}).items()},
            metadata=data.get("metadata") or {},
            expires_at=data.get("expires_at"),
            revoked_at=data.get("revoked_at"),
            grace=tuple((str(d), int(u)) for d, u in data.get("grace") or ()),
            version=int(data.get("version", 1)),
        )

    def view(self, now: float, last_used_at: int | None = None) -> dict[str, Any]:
        """The admin view: every field but the digests, budgets as exact decimal strings."""
        budgets = Budgets(**{n: self.budgets.get(n) for n in BUDGET_FIELDS}).as_strings()
        return {
            "object": "key",
            "id": self.id,
            "name": self.name,
            "team": self.team,
            "status": self.status(now),
            "source": "api",
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "last_used_at": last_used_at,
            "key_prefix": self.key_prefix,
            "models": None if self.models is None else list(self.models),
            **{n: self.limits.get(n) for n in LIMIT_FIELDS},
            **budgets,
            "metadata": dict(self.metadata),
            "version": self.version,
        }
