"""Who is calling: a presented credential becomes a ``Principal`` or one 401.

Sources are asked in a fixed order (DESIGN.md, "Identity of a principal"): the TOML file's keys
(a dict hit), then each ``PrincipalSource`` the lifespan adds (runtime keys, then the identity
service); a three-segment bearer token goes only to the JWT source, if any. The first source that
knows the credential decides; one that is unsure (its backend is down and the key was never
seen) raises its own 503 rather than answering "unknown", so an outage never admits anyone and
never turns into a misleading 401. Every refusal is the same ``AuthenticationFailed``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

from sentinel.auth.keys import KeyRing, Principal
from sentinel.config.table import MAX_KEY_BYTES
from sentinel.errors import AuthenticationFailed

__all__ = ["MAX_TOKEN_BYTES", "Authenticator", "PrincipalSource", "looks_like_jwt"]

MAX_TOKEN_BYTES = 8192
"""Bearer JWTs may be longer than keys; anything longer is refused unparsed."""


class PrincipalSource(Protocol):
    """Somewhere principals come from besides the TOML file."""

    async def resolve(self, key: bytes, digest: bytes) -> Principal | None:
        """The principal of ``key`` (whose SHA-256 is ``digest``), None if unknown here.

        Raise a ``SentinelError`` (503) when the answer cannot be known right now.
        """
        ...


def looks_like_jwt(key: bytes) -> bool:
    """Whether ``key`` has a JWT's three dot-separated segments (the only shape treated as one)."""
    return key.count(b".") == 2


class Authenticator:
    """The lookup chain: config keys, then ``sources`` in order; JWTs only to ``jwt``."""

    def __init__(
        self,
        ring: KeyRing,
        sources: Sequence[PrincipalSource] = (),
        jwt: PrincipalSource | None = None,
    ) -> None:
        self.ring = ring
        self._sources = tuple(sources)
        self._jwt = jwt

    async def authenticate(self, key: bytes | None) -> Principal:
        """The principal for ``key``; ``AuthenticationFailed`` for anything unknown."""
        if key is None:
            raise AuthenticationFailed()
        if self._jwt is not None and looks_like_jwt(key):
            if len(key) > MAX_TOKEN_BYTES:
                raise AuthenticationFailed()
            principal = await self._jwt.resolve(key, b"")
            if principal is None:
                raise AuthenticationFailed()
            return principal
        if len(key) > MAX_KEY_BYTES:
            raise AuthenticationFailed()
        digest = hashlib.sha256(key).digest()
        principal = self.ring.lookup(digest)
        if principal is not None:
            return principal
        for source in self._sources:
            principal = await source.resolve(key, digest)
            if principal is not None:
                return principal
        raise AuthenticationFailed()
