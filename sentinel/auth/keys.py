"""API-key authentication: a presented key becomes a ``Principal`` or a 401.

Keys are stored only as SHA-256 digests. A presented key is hashed and looked up by digest,
then compared with ``hmac.compare_digest``; a missing, malformed or unknown key raises the same
``AuthenticationFailed`` with the same body, so nothing distinguishes the three cases.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from sentinel.config import KeyConfig
from sentinel.config.budgets import Budgets
from sentinel.config.limits import LimitDefaults
from sentinel.config.table import MAX_KEY_BYTES
from sentinel.errors import AuthenticationFailed, PermissionDenied
from sentinel.limits.settings import key_spec
from sentinel.limits.spec import Dimension, LimitSpec

__all__ = ["MAX_KEY_BYTES", "KeyRing", "Principal", "presented_key"]


_TOKEN_DIMENSIONS = (Dimension.TOKENS, Dimension.DAY, Dimension.WEEK, Dimension.MONTH)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: its name, its limits and the models it may use.

    ``id`` is stable and namespaced by where the key comes from (``cfg:<name>`` for the
    config file's keys): object ownership is keyed by it, never by a display name.
    """

    name: str
    limits: LimitSpec
    models: tuple[str, ...] | None = None  # globs; None allows every model
    id: str = ""  # default: cfg:<name>
    team: str | None = None
    is_admin: bool = False  # sees every tenant's objects
    passthrough: frozenset[str] = frozenset()  # spending families allowed despite token limits
    budgets: Budgets = field(default_factory=Budgets)  # nano-USD (enforced by sentinel.money)
    is_limited: bool = field(init=False)
    """Whether any limit applies (an unlimited key never touches the limit store)."""
    has_token_limits: bool = field(init=False)
    """Whether a token rate or quota applies: endpoints whose tokens go uncounted would
    bypass it."""

    def __post_init__(self) -> None:
        # Worked out once, not per request.
        limited = any(self.limits.limit(dimension) is not None for dimension in Dimension)
        object.__setattr__(self, "is_limited", limited)
        tokens = any(self.limits.limit(dimension) is not None for dimension in _TOKEN_DIMENSIONS)
        object.__setattr__(self, "has_token_limits", tokens)
        if not self.id:
            object.__setattr__(self, "id", f"cfg:{self.name}")

    def may_spend_through(self, family: str) -> bool:
        """Whether this key may call a token-spending ``family`` whose tokens its limits
        cannot see: always without token limits, else only when the key names it."""
        return not self.has_token_limits or family in self.passthrough

    def check_spending(self, family: str) -> None:
        """Raise 403 ``endpoint_not_allowed`` unless ``may_spend_through(family)``."""
        if not self.may_spend_through(family):
            raise PermissionDenied(
                f"This key has token limits, and the '{family}' endpoints spend tokens "
                "that the limits cannot see; ask an administrator to allow them for this key.",
                code="endpoint_not_allowed",
            )

    def may_use(self, model: str | None) -> bool:
        """Whether the allow-list (if any) admits ``model``; no model passes only without one."""
        if self.models is None:
            return True
        return model is not None and any(fnmatchcase(model, glob) for glob in self.models)

    def check_model(self, model: str | None) -> None:
        """Raise 403 ``model_not_allowed`` unless the allow-list admits ``model``."""
        if self.may_use(model):
            return
        shown = repr(model[:200]) if model is not None else "the default model"
        raise PermissionDenied(
            f"This key is not allowed to use {shown}.", code="model_not_allowed", param="model"
        )


def presented_key(authorization: bytes | None, api_key: bytes | None) -> bytes | None:
    """The key a client sent, from ``Authorization: Bearer …`` or Azure's ``api-key``."""
    if authorization is not None:
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        token = token.strip()
        return token or None
    if api_key is not None:
        return api_key.strip() or None
    return None


class KeyRing:
    """The configured keys, indexed by digest, answering ``authenticate``."""

    def __init__(self, keys: tuple[KeyConfig, ...], defaults: LimitDefaults | None = None) -> None:
        defaults = defaults or LimitDefaults()
        self._by_digest: dict[bytes, tuple[bytes, Principal]] = {
            k.key_sha256: (
                k.key_sha256,
                Principal(
                    k.name,
                    key_spec(
                        defaults,
                        rpm=k.rpm,
                        tpm=k.tpm,
                        max_parallel=k.max_parallel,
                        tokens_per_day=k.tokens_per_day,
                        tokens_per_week=k.tokens_per_week,
                        tokens_per_month=k.tokens_per_month,
                    ),
                    k.models,
                    is_admin=k.admin,
                    team=k.team,
                    passthrough=frozenset(k.passthrough),
                    budgets=k.budgets,
                ),
            )
            for k in keys
        }

    def authenticate(self, key: bytes | None) -> Principal:
        """The principal for ``key``; ``AuthenticationFailed`` for anything else."""
        if key is None or len(key) > MAX_KEY_BYTES:
            raise AuthenticationFailed()
        principal = self.lookup(hashlib.sha256(key).digest())
        if principal is None:
            raise AuthenticationFailed()
        return principal

    def lookup(self, digest: bytes) -> Principal | None:
        """The config key whose SHA-256 is ``digest``, or None."""
        entry = self._by_digest.get(digest)
        # The lookup is by digest, so its timing says nothing about any stored key; the
        # constant-time compare keeps the accept path free of early exits all the same.
        if entry is None or not hmac.compare_digest(entry[0], digest):
            return None
        return entry[1]

    def names(self) -> frozenset[str]:
        """The names of the config keys (runtime names may not clash with them)."""
        return frozenset(principal.name for _, principal in self._by_digest.values())

    def principals(self) -> tuple[Principal, ...]:
        """Every config key's principal, in file order."""
        return tuple(principal for _, principal in self._by_digest.values())
