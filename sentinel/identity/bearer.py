"""Bearer JWTs as a ``PrincipalSource``: a token signed by the issuer's key is its own principal.

Only three-segment bearer tokens reach this source (``Authenticator`` routes them). A token is
accepted when all of this holds, and refused with the one ``AuthenticationFailed`` otherwise:

- its header's ``alg`` is one of ``[identity.jwt] algorithms`` (asymmetric only: ``none`` and
  HMAC never are), and the JWKS key its ``kid`` names fits that algorithm (``KeySet``), so an
  RSA public key can never be used as an HMAC secret;
- PyJWT verifies the signature with that key bound to that algorithm, and ``iss``, ``aud``,
  ``exp`` (required), ``nbf`` and ``iat`` with ``leeway_s``;
- it carries a ``sub`` (the id is ``jwt:<sub>``) and a name in ``name_claim``, and its
  ``sentinel`` claim, if any, is an object of valid principal fields.

Limits, models, team and budgets come from the ``sentinel`` claim, field by field, else from
``[identity.jwt.defaults]``, else from ``[limits]``; ``admin`` never comes from a token. A
verified token is remembered (by its SHA-256, bounded LRU, never past its ``exp``, forgotten
when the key set changes), so the hot path verifies each token's signature once.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import aiohttp
import jwt
import structlog

from sentinel.auth.fields import (
    FIELD_NAMES,
    FieldProblem,
    PrincipalFields,
    principal_of,
    read_fields,
)
from sentinel.auth.keys import Principal
from sentinel.clock import Clock
from sentinel.config.budgets import BUDGET_FIELDS, Budgets
from sentinel.config.identity import JwtConfig
from sentinel.config.limits import LIMIT_FIELDS, LimitDefaults
from sentinel.errors import AuthenticationFailed
from sentinel.identity.jwks import KeySet, TokenRefused

__all__ = ["BearerTokens"]

_T = TypeVar("_T")

log = structlog.get_logger("sentinel.identity")

_CLAIM_FIELDS = FIELD_NAMES - {"name"}
_SUBJECT = re.compile(r"[^\x00-\x1f\x7f]{1,256}")
"""A subject or name: 1 to 256 characters, no control characters (they reach log lines)."""


class BearerTokens:
    """Principals of bearer JWTs (see the module docstring)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: JwtConfig,
        defaults: LimitDefaults,
        *,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._wall = wall  # Unix seconds, to compare with exp
        self._defaults = defaults
        self.keys = KeySet(session, settings, clock=clock)
        self._claim_defaults = read_fields(
            {k: list(v) if isinstance(v, tuple) else v for k, v in settings.defaults},
            need_name=False,
        )
        # token SHA-256 -> (principal, exp in Unix seconds, key set version)
        self._verified: OrderedDict[bytes, tuple[Principal, float, int]] = OrderedDict()
        self.verifications = 0  # signatures checked (for /metrics)
        self.refused = 0  # tokens refused with 401

    def start(self) -> None:
        """Fetch the key set in the background."""
        self.keys.start()

    async def aclose(self) -> None:
        """Stop the key set's fetch in flight."""
        await self.keys.aclose()

    async def resolve(self, key: bytes, digest: bytes) -> Principal | None:
        """The principal of the token ``key``; ``AuthenticationFailed`` when it is refused."""
        token_hash = hashlib.sha256(key).digest()
        cached = self._verified.get(token_hash)
        if cached is not None:
            self.keys.refresh_if_old()
            principal, expires, version = cached
            if self._wall() < expires and version == self.keys.version:
                self._verified.move_to_end(token_hash)
                return principal
            del self._verified[token_hash]
        try:
            principal, expires = await self._verify(key)
        except TokenRefused as refused:
            self.refused += 1
            log.debug("jwt_refused", reason=refused.reason)
            raise AuthenticationFailed() from None
        self._remember(token_hash, principal, expires)
        return principal

    async def _verify(self, token: bytes) -> tuple[Principal, float]:
        """The principal of ``token`` and its ``exp``; ``TokenRefused`` for any flaw."""
        settings = self._settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRefused("malformed") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if not isinstance(algorithm, str) or algorithm not in settings.algorithms:
            raise TokenRefused("algorithm not allowed")
        if kid is not None and not isinstance(kid, str):
            raise TokenRefused("kid is not a string")
        signing_key = await self.keys.key_for(kid, algorithm)
        self.verifications += 1
        try:
            claims = jwt.decode(
                token,
                signing_key,
                algorithms=[algorithm],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway_s,
                options={
                    "require": ["exp", "iss", "aud", "sub"],
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.PyJWTError as error:
            raise TokenRefused(type(error).__name__) from None
        return self._principal(claims), float(claims["exp"])

    def _principal(self, claims: dict[str, Any]) -> Principal:
        subject, name = claims.get("sub"), claims.get(self._settings.name_claim)
        if not isinstance(subject, str) or not _SUBJECT.fullmatch(subject):
            raise TokenRefused("bad sub")
        if not isinstance(name, str) or not _SUBJECT.fullmatch(name):
            raise TokenRefused("bad name claim")
        granted = claims.get("sentinel", {})
        if not isinstance(granted, dict):
            raise TokenRefused("sentinel claim is not an object")
        try:
            fields = read_fields(
                {k: v for k, v in granted.items() if k in _CLAIM_FIELDS}, need_name=False
            )
        except FieldProblem as problem:
            raise TokenRefused(f"bad sentinel claim field {problem.field!r}") from None
        merged = replace(_merge(fields, self._claim_defaults), name=name)
        return principal_of(merged, f"jwt:{subject}", self._defaults)

    def _remember(self, token_hash: bytes, principal: Principal, expires: float) -> None:
        self._verified[token_hash] = (principal, expires, self.keys.version)
        while len(self._verified) > self._settings.max_entries:
            self._verified.popitem(last=False)


def _merge(claimed: PrincipalFields, defaults: PrincipalFields) -> PrincipalFields:
    """``claimed``'s fields, each one it leaves out taken from ``defaults``."""
    claimed_budgets, default_budgets = claimed.budgets, defaults.budgets
    return PrincipalFields(
        name=claimed.name,
        team=_first(claimed.team, defaults.team),
        models=_first(claimed.models, defaults.models),
        limits={n: _first(claimed.limits.get(n), defaults.limits.get(n)) for n in LIMIT_FIELDS},
        budgets=Budgets(
            **{
                n: _first(getattr(claimed_budgets, n), getattr(default_budgets, n))
                for n in BUDGET_FIELDS
            }
        ),
    )


def _first(value: _T | None, fallback: _T | None) -> _T | None:
    return value if value is not None else fallback
