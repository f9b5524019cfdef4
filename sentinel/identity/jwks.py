"""The issuer's public keys (a JWKS), fetched with the one session and kept between fetches.

The set is fetched at startup in the background, refetched in the background once it is
``jwks_ttl_s`` old, and refetched at once when a token names a ``kid`` the set lacks, but at
most once per ``jwks_refetch_s`` (a spray of made-up ``kid``s costs one fetch per interval).
A failed fetch keeps the set already held. Only signing keys with a public key are kept:
``oct`` (shared-secret) keys are dropped, so no HMAC key can ever come from here.

``key_for`` binds a key to one algorithm, the token's, and only when the key's type fits it
(an RSA key verifies RS*/PS*, a P-256 key ES256, ...) and the key's own ``alg``, if it has
one, is that algorithm. Every refusal is ``TokenRefused``; "no key set at all" is 503.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp
import orjson
import structlog
from jwt import PyJWK, PyJWKError

from sentinel.clock import Clock, MonotonicClock
from sentinel.config.identity import JwtConfig
from sentinel.identity.service import unavailable
from sentinel.upstream.client import read_capped

__all__ = ["KeySet", "TokenRefused"]

log = structlog.get_logger("sentinel.identity")

MAX_JWKS_BYTES = 256 * 1024
MAX_KEYS = 100
_EMPTY_RETRY_MS = 1_000
"""Without any key set, a fetch is tried at most this often."""

_KEY_TYPES = {
    **{alg: ("RSA", None) for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
}
"""The key type (and curve) each algorithm needs."""


class TokenRefused(Exception):
    """This token is not accepted; ``reason`` is for the debug log only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _Key:
    jwk: dict[str, object]
    bound: dict[str, PyJWK] = field(default_factory=dict)  # algorithm -> key bound to it


class KeySet:
    """The keys of ``settings.jwks_url`` by ``kid`` (see the module docstring)."""

    def __init__(
        self, session: aiohttp.ClientSession, settings: JwtConfig, *, clock: Clock | None = None
    ) -> None:
        self._session = session
        self._settings = settings
        self._clock: Clock = clock or MonotonicClock()
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_ms / 1000)
        self._keys: dict[str | None, _Key] | None = None  # None: never fetched
        self._fetched_ms = 0
        self._attempted_ms: int | None = None
        self._last_failed = False
        self._fetch: asyncio.Task[None] | None = None
        self.version = 0  # changes whenever the set of keys changes
        self.fetches = 0  # fetches started (for /metrics)
        self.fetch_failures = 0

    def start(self) -> None:
        """Fetch the set in the background, so the first token need not wait for it."""
        self._start_fetch(self._clock.now_ms())

    async def aclose(self) -> None:
        """Cancel a fetch in flight."""
        if self._fetch is not None:
            self._fetch.cancel()
            await asyncio.gather(self._fetch, return_exceptions=True)

    async def settled(self) -> None:
        """Wait for the fetch in flight, if any, to finish."""
        if self._fetch is not None:
            await asyncio.shield(self._fetch)

    async def key_for(self, kid: str | None, algorithm: str) -> PyJWK:
        """The key ``kid`` names, bound to ``algorithm``; ``TokenRefused`` or 503 otherwise."""
        now = self._clock.now_ms()
        if self._keys is None:
            if self._may_fetch(now, _EMPTY_RETRY_MS):
                await self._fetched(now)
            if self._keys is None:
                raise unavailable(_EMPTY_RETRY_MS, reason="no JWKS")
        else:
            self.refresh_if_old(now)
        key = self._find(kid)
        if key is None and kid is not None:
            if self._may_fetch(now, self._settings.jwks_refetch_s * 1000):
                await self._fetched(now)
                key = self._find(kid)
            if key is None and self._last_failed:
                raise unavailable(_EMPTY_RETRY_MS, reason="JWKS unavailable")
        if key is None:
            raise TokenRefused("unknown kid")
        return _bind(key, algorithm)

    def refresh_if_old(self, now_ms: int | None = None) -> None:
        """Past ``jwks_ttl_s``, start a background refetch (the set held serves meanwhile)."""
        now = self._clock.now_ms() if now_ms is None else now_ms
        if self._keys is None or now < self._fetched_ms + self._settings.jwks_ttl_s * 1000:
            return
        if self._may_fetch(now, self._settings.jwks_refetch_s * 1000):
            self._start_fetch(now)

    def _find(self, kid: str | None) -> _Key | None:
        keys = self._keys or {}
        if kid is None:
            # A token without kid is accepted only where the set leaves no doubt.
            return next(iter(keys.values())) if len(keys) == 1 else None
        return keys.get(kid)

    def _may_fetch(self, now_ms: int, interval_ms: int) -> bool:
        if self._fetch is not None:
            return True  # joining the fetch in flight costs nothing
        return self._attempted_ms is None or now_ms >= self._attempted_ms + interval_ms

    async def _fetched(self, now_ms: int) -> None:
        """Wait for a fetch: the one in flight, or a new one."""
        self._start_fetch(now_ms)
        if self._fetch is not None:
            await asyncio.shield(self._fetch)

    def _start_fetch(self, now_ms: int) -> None:
        """Start a fetch unless one is in flight."""
        if self._fetch is None:
            self._attempted_ms = now_ms
            self.fetches += 1
            self._fetch = asyncio.create_task(self._refresh(), name="jwks-fetch")

    async def _refresh(self) -> None:
        try:
            keys = await self._download()
        except Exception as error:  # a task's boundary: any failure keeps the set held
            self._last_failed = True
            self.fetch_failures += 1
            log.warning("jwks_fetch_failed", reason=f"{type(error).__name__}: {error}"[:200])
        else:
            held = self._keys
            if (
                held is None
                or set(keys) != set(held)
                or any(keys[k].jwk != held[k].jwk for k in keys)
            ):
                self.version += 1  # remembered tokens are checked again against the new set
                self._keys = keys
            self._fetched_ms = self._clock.now_ms()
            self._last_failed = False
        finally:
            self._fetch = None

    async def _download(self) -> dict[str | None, _Key]:
        async with self._session.get(
            self._settings.jwks_url,
            headers={"Accept": "application/json", "Accept-Encoding": "identity"},
            timeout=self._timeout,
            allow_redirects=False,
        ) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            body = await read_capped(response, MAX_JWKS_BYTES)
            if body is None:
                raise ValueError("JWKS too long")
        return read_jwks(orjson.loads(body))


def read_jwks(data: object) -> dict[str | None, _Key]:
    """The usable signing keys of a JWKS document, by ``kid``; ``ValueError`` if it is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError('expected {"keys": [...]}')
    found: dict[str | None, _Key] = {}
    for jwk in data["keys"][:MAX_KEYS]:
        if not isinstance(jwk, dict) or jwk.get("kty") not in ("RSA", "EC", "OKP"):
            continue  # "oct" among them: a shared secret is never a verification key here
        if jwk.get("use", "sig") != "sig" or "d" in jwk:
            continue  # an encryption key, or a private key published by mistake
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        try:
            PyJWK(jwk)  # a key that does not load is dropped now, not at the first token
        except (PyJWKError, ValueError, TypeError) as error:
            log.warning("jwks_key_dropped", kid=str(kid)[:64], reason=type(error).__name__)
            continue
        found[kid] = _Key(jwk)
    if None in found and len(found) > 1:
        del found[None]  # without kid, a key is usable only as the set's one key
    return found


def _bind(key: _Key, algorithm: str) -> PyJWK:
    """``key`` bound to ``algorithm``, or ``TokenRefused`` when they do not fit each other."""
    bound = key.bound.get(algorithm)
    if bound is not None:
        return bound
    wanted = _KEY_TYPES.get(algorithm)
    jwk = key.jwk
    if wanted is None or jwk.get("kty") != wanted[0]:
        raise TokenRefused("algorithm does not fit the key")
    if wanted[1] is not None and jwk.get("crv") != wanted[1]:
        raise TokenRefused("algorithm does not fit the key's curve")
    if jwk.get("alg", algorithm) != algorithm:
        raise TokenRefused("algorithm is not the key's")
    try:
        bound = PyJWK(jwk, algorithm=algorithm)
    except (PyJWKError, ValueError, TypeError):
        raise TokenRefused("key does not load") from None
    key.bound[algorithm] = bound
    return bound
