"""A real identity service and a real JWKS endpoint (aiohttp on loopback), an issuer of test
tokens signed with keys made here by ``cryptography``, and a clock that moves when told."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.support.loopback import LoopbackSite
from tests.support.processes import free_port

IDENTITY_TOKEN = "identity-service-token-4242424242"
ISSUER = "https://issuer.test/"
AUDIENCE = "sentinel"


class FakeClock:
    """Monotonic milliseconds that only move when told to."""

    def __init__(self, now_ms: int = 1_000_000) -> None:
        self._now_ms = now_ms

    def now_ms(self) -> int:
        return self._now_ms

    def advance(self, ms: int) -> None:
        self._now_ms += ms


def digest_hex(key: str) -> str:
    """The hex SHA-256 of ``key``: what the service is asked about."""
    return hashlib.sha256(key.encode()).hexdigest()


class IdentityServer:
    """An identity service answering ``POST /resolve`` from ``principals``; a test switches
    ``status`` (forced answer), ``retry_after`` and ``hold`` (answers wait on it) at will."""

    def __init__(self) -> None:
        self.port = free_port()
        self.principals: dict[str, dict[str, Any]] = {}  # digest hex -> answer
        self.lookups: Counter[str] = Counter()  # digest hex -> times asked
        self.bodies: list[bytes] = []
        self.authorizations: list[str | None] = []
        self.status: int | None = None
        self.retry_after: str | None = None
        self.hold: asyncio.Event | None = None
        self.answering = 0  # requests being answered now
        self.most_answering = 0  # the most answered at once
        self._site = LoopbackSite(
            self.port, lambda app: app.router.add_post("/resolve", self._handle)
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/resolve"

    @property
    def total(self) -> int:
        """Lookups received, all keys together."""
        return sum(self.lookups.values())

    def add(self, key: str, **principal: Any) -> None:
        self.principals[digest_hex(key)] = principal

    async def start(self) -> None:
        await self._site.start()

    async def stop(self) -> None:
        """Stop listening: lookups get connection refused."""
        await self._site.stop()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append(body)
        self.authorizations.append(request.headers.get("Authorization"))
        digest = orjson.loads(body)["key_sha256"]
        self.lookups[digest] += 1
        self.answering += 1
        self.most_answering = max(self.most_answering, self.answering)
        try:
            if self.hold is not None:
                await self.hold.wait()
        finally:
            self.answering -= 1
        if self.status is not None:
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return web.Response(status=self.status, headers=headers)
        principal = self.principals.get(digest)
        if principal is None:
            return web.Response(status=404)
        return web.Response(body=orjson.dumps(principal), content_type="application/json")


@pytest.fixture
async def identity_server() -> AsyncIterator[IdentityServer]:
    """A running identity service that knows nobody yet."""
    server = IdentityServer()
    await server.start()
    try:
        yield server
    finally:
        if server.hold is not None:
            server.hold.set()
        await server.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# --- JWTs ----------------------------------------------------------------------------------------


class SigningKey:
    """A private key of the test issuer and its public JWK."""

    def __init__(self, kid: str, kind: str = "rsa") -> None:
        self.kid = kid
        if kind == "rsa":
            self.private: Any = _rsa_key(kid)
            self.algorithm = "RS256"
            public = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.algorithm = "ES256"
            public = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        self.jwk: dict[str, Any] = {**public, "kid": kid, "use": "sig"}

    def token(
        self, claims: dict[str, Any] | None = None, *, headers: dict[str, Any] | None = None
    ) -> str:
        """A token signed by this key: valid for an hour unless ``claims`` say otherwise."""
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 3600}
        body.update(claims or {})
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(
            body,
            self.private,
            algorithm=self.algorithm,
            headers={"kid": self.kid, **(headers or {})},
        )


def b64(data: bytes) -> str:
    """Base64url without padding, as JWTs spell their segments."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_public_key(key: SigningKey, claims: dict[str, Any] | None = None) -> str:
    """The classic algorithm confusion: an HMAC over the token keyed with the RSA public key
    (the PEM a naive verifier would take as the HMAC secret)."""
    pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(orjson.dumps({"alg": "HS256", "kid": key.kid, "typ": "JWT"}))
    payload = key.token(claims).split(".")[1]
    mac = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(mac)}"


@functools.cache
def _rsa_key(kid: str) -> rsa.RSAPrivateKey:
    """2048-bit RSA keys are slow to make: one per kid for the whole run."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class JwksServer:
    """Serves ``GET /jwks`` from ``keys``; counts fetches; ``status`` forces an answer."""

    def __init__(self) -> None:
        self.port = free_port()
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        self.status: int | None = None
        self._site = LoopbackSite(self.port, lambda app: app.router.add_get("/jwks", self._handle))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks"

    async def start(self) -> None:
        await self._site.start()

    async def stop(self) -> None:
        await self._site.stop()

    async def _handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.status is not None:
            return web.Response(status=self.status)
        return web.Response(body=orjson.dumps({"keys": self.keys}), content_type="application/json")


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    """A running JWKS endpoint publishing no keys yet."""
    server = JwksServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
