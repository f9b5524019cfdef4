"""Tests for ``BearerTokens``: JWTs checked against a real JWKS endpoint, on an injected clock."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import jwt
import orjson
import pytest

from sentinel.config.identity import JwtConfig
from sentinel.config.limits import LimitDefaults
from sentinel.errors import AuthenticationFailed
from sentinel.identity import BearerTokens, IdentityUnavailable
from sentinel.limits.spec import Dimension
from tests.identity.conftest import (
    AUDIENCE,
    ISSUER,
    FakeClock,
    JwksServer,
    SigningKey,
    b64,
    hs256_with_public_key,
)


def bearer(
    session: aiohttp.ClientSession, server: JwksServer, clock: FakeClock, **overrides: Any
) -> BearerTokens:
    settings = JwtConfig(jwks_url=server.url, issuer=ISSUER, audience=AUDIENCE, **overrides)
    return BearerTokens(session, settings, LimitDefaults(tpm=9000), clock=clock)


async def resolve(source: BearerTokens, token: str) -> Any:
    return await source.resolve(token.encode(), b"")


def unsigned(claims: dict[str, Any], header: dict[str, Any]) -> str:
    """A token with the given header and an empty signature (``alg: none``)."""
    return f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(claims))}."


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    found = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 3600}
    found.update(overrides)
    return found


@pytest.fixture
def key_a() -> SigningKey:
    return SigningKey("kid-a")


async def test_a_valid_token_is_its_subject(
    http: aiohttp.ClientSession, jwks_server: JwksServer, clock: FakeClock, key_a: SigningKey
) -> None:
    """A token signed by a published key is the principal ``jwt:<sub>``, [limits] defaults."""
    jwks_server.keys = [key_a.jwk]
    principal = await resolve(bearer(http, jwks_server, clock), key_a.token())
    assert (principal.name, principal.id, principal.is_admin) == ("alice", "jwt:alice", False)
    assert principal.limits.limit(Dimension.TOKENS) == 9000


async def test_an_ec_key_works_too(
    http: aiohttp.ClientSession, jwks_server: JwksServer, clock: FakeClock
) -> None:
    """ES256 tokens verify against a P-256 key."""
    key = SigningKey("kid-ec", kind="ec")
    jwks_server.keys = [key.jwk]
    principal = await resolve(bearer(http, jwks_server, clock), key.token())
    assert principal.id == "jwt:alice"


async def test_the_sentinel_claim_sets_limits_over_the_defaults(
    http: aiohttp.ClientSession, jwks_server: JwksServer, clock: FakeClock, key_a: SigningKey
) -> None:
    """Fields of the ``sentinel`` claim win, [identity.jwt.defaults] fill what it leaves out,
    [limits] what both leave out; ``admin`` in the claim is ignored; name from name_claim."""
    jwks_server.keys = [key_a.jwk]
    source = bearer(
        http,
        jwks_server,
        clock,
        name_claim="email",
        defaults=(("rpm", 10), ("team", "default-team"), ("usd_per_day", "2.5")),
    )
    granted = {"rpm": 3, "models": ["gpt-4o*"], "admin": True, "colour": "blue"}
    token = key_a.token({"email": "alice@example.com", "sentinel": granted})
    principal = await resolve(source, token)
    assert principal.name == "alice@example.com"
    assert principal.id == "jwt:alice"
    assert principal.limits.limit(Dimension.REQUESTS) == 3
    assert principal.limits.limit(Dimension.TOKENS) == 9000
    assert principal.team == "default-team"
    assert principal.models == ("gpt-4o*",)
    assert principal.budgets.usd_per_day == 2_500_000_000
    assert not principal.is_admin


async def test_every_flawed_token_is_the_same_401(
    http: aiohttp.ClientSession, jwks_server: JwksServer, clock: FakeClock, key_a: SigningKey
) -> None:
    """alg none, a wrong key, HS256 keyed with the RSA public key, expired, not yet valid,
    wrong issuer or audience, no exp, no sub, a bad sentinel claim: one identical refusal."""
    jwks_server.keys = [key_a.jwk]
    source = bearer(http, jwks_server, clock, leeway_s=30)
    now = int(time.time())
    impostor = SigningKey("kid-impostor")
    confused = hs256_with_public_key(key_a)
    forged = jwt.encode(claims(), impostor.private, algorithm="RS256", headers={"kid": "kid-a"})
    bad = {
        "alg none": unsigned(claims(), {"alg": "none", "kid": "kid-a"}),
        "alg None": unsigned(claims(), {"alg": "None", "kid": "kid-a"}),
        "wrong key": forged,
        "hs256 with the rsa public key": confused,
        # A minute past the 30 s leeway: the signing above can take seconds on a busy machine,
        # and one second past it (+31) let "not yet valid" become valid before it was tried.
        "expired": key_a.token({"exp": now - 90}),
        "not yet valid": key_a.token({"nbf": now + 90}),
        "wrong issuer": key_a.token({"iss": "https://evil.test/"}),
        "wrong audience": key_a.token({"aud": "another-service"}),
        "no exp": key_a.token({"exp": None}),
        "no sub": key_a.token({"sub": None}),
        "bad sentinel claim": key_a.token({"sentinel": {"rpm": -5}}),
        "sentinel claim not an object": key_a.token({"sentinel": "admin"}),
        "unknown kid": key_a.token(headers={"kid": "kid-nobody"}),
        "garbage": "a.b.c",
    }
    bodies = set()
    for name, token in bad.items():
        with pytest.raises(AuthenticationFailed) as refused:
            await resolve(source, token)
        bodies.add(refused.value.as_json())
        assert refused.value.status == 401, name
    assert bodies == {AuthenticationFailed().as_json()}


async def test_leeway_admits_small_clock_skew(
    http: aiohttp.ClientSession, jwks_server: JwksServer, clock: FakeClock, key_a: SigningKey
) -> None:
    """A token expired or not yet valid by less than leeway_s is accepted."""
    jwks_server.keys = [key_a.jwk]
    source = bearer(http, jwks_server, clock, leeway_s=30)
    now = int(time.time())
    assert await resolve(source, key_a.token({"exp": now - 10}))
    assert await resolve(source, key_a.token({"nbf": now + 10}))


async def test_an_algorithm_outside_the_list_is_refused(
    http: aiohttp.ClientSession, jwks_server: JwksServer, clock: FakeClock, key_a: SigningKey
) -> None:
    """With algorithms = ["ES256"], a good RS256 token is refused."""
    jwks_server.keys = [key_a.jwk]
    with pytest.raises(AuthenticationFailed):
        await resolve(bearer(http, jwks_server, clock, algorithms=("ES256",)), key_a.token())


async def test_an_hmac_key_in_the_jwks_is_never_used(
    http: aiohttp.ClientSession, jwks_server: JwksServer, clock: FakeClock
) -> None:
    """An ``oct`` key published in the JWKS is dropped: HS256 tokens stay refused even if
    HS256 were somehow asked for."""
    secret = b"0123456789abcdef0123456789abcdef"
    jwks_server.keys = [{"kty": "oct", "k": b64(secret), "kid": "k1", "alg": "HS256"}]
    token = jwt.encode(claims(), secret, algorithm="HS256", headers={"kid": "k1"})
    with pytest.raises(AuthenticationFailed):
        await resolve(bearer(http, jwks_server, clock), token)


async def test_verified_tokens_are_not_verified_again(
    http: aiohttp.ClientSession, jwks_server: JwksServer, clock: FakeClock, key_a: SigningKey
) -> None:
    """The hot path checks a token's signature once; the cache is bounded."""
    jwks_server.keys = [key_a.jwk]
    source = bearer(http, jwks_server, clock, max_entries=3)
    token = key_a.token()
    for _ in range(5):
        await resolve(source, token)
    assert source.verifications == 1
    for i in range(10):
        await resolve(source, key_a.token({"sub": f"user-{i}"}))
    assert len(source._verified) == 3


async def test_a_cached_token_is_checked_again_once_past_its_exp(
    http: aiohttp.ClientSession, jwks_server: JwksServer, clock: FakeClock, key_a: SigningKey
) -> None:
    """A remembered token is never served from memory past its exp."""
    jwks_server.keys = [key_a.jwk]
    wall = [time.time()]
    settings = JwtConfig(jwks_url=jwks_server.url, issuer=ISSUER, audience=AUDIENCE)
    source = BearerTokens(http, settings, LimitDefaults(), clock=clock, wall=lambda: wall[0])
    exp = int(wall[0]) + 60
    token = key_a.token({"exp": exp})
    await resolve(source, token)
    wall[0] = exp - 0.001
    await resolve(source, token)
    assert source.verifications == 1
    wall[0] = exp
    await resolve(source, token)  # PyJWT's own clock still finds it valid
    assert source.verifications == 2


async def test_a_new_kid_refetches_the_jwks_at_most_every_30_s(
    http: aiohttp.ClientSession, jwks_server: JwksServer, clock: FakeClock, key_a: SigningKey
) -> None:
    """Rotation: a token with a kid not yet known refetches the set; within 30 s of the last
    fetch, unknown kids (a spray of them) cause no fetch and are refused; after it, the set is
    fetched again and the new key works."""
    jwks_server.keys = [key_a.jwk]
    source = bearer(http, jwks_server, clock)
    await resolve(source, key_a.token())
    assert jwks_server.fetches == 1
    key_b = SigningKey("kid-b")
    jwks_server.keys = [key_a.jwk, key_b.jwk]
    clock.advance(10_000)
    for _ in range(20):
        with pytest.raises(AuthenticationFailed):
            await resolve(source, key_b.token())
    assert jwks_server.fetches == 1
    clock.advance(20_000)
    assert (await resolve(source, key_b.token())).id == "jwt:alice"
    assert jwks_server.fetches == 2
    for i in range(20):
        with pytest.raises(AuthenticationFailed):
            await resolve(source, key_b.token(headers={"kid": f"made-up-{i}"}))
    assert jwks_server.fetches == 2


async def test_a_removed_key_stops_working_after_the_set_changes(
    http: aiohttp.ClientSession, jwks_server: JwksServer, clock: FakeClock, key_a: SigningKey
) -> None:
    """After jwks_ttl_s the set is refetched; a key gone from it no longer verifies, even
    for a token verified (and remembered) before."""
    jwks_server.keys = [key_a.jwk]
    source = bearer(http, jwks_server, clock, jwks_ttl_s=300)
    token = key_a.token()
    await resolve(source, token)
    key_b = SigningKey("kid-b")
    jwks_server.keys = [key_b.jwk]
    clock.advance(300_000)
    await resolve(source, token)  # served; the background refetch starts
    await source.keys.settled()
    with pytest.raises(AuthenticationFailed):
        await resolve(source, token)


async def test_a_failed_refetch_keeps_the_set_held(
    http: aiohttp.ClientSession, jwks_server: JwksServer, clock: FakeClock, key_a: SigningKey
) -> None:
    """When the JWKS endpoint fails, the keys fetched before keep verifying."""
    jwks_server.keys = [key_a.jwk]
    source = bearer(http, jwks_server, clock, jwks_ttl_s=60)
    await resolve(source, key_a.token())
    jwks_server.status = 500
    clock.advance(60_000)
    await resolve(source, key_a.token({"sub": "bob"}))
    await source.keys.settled()
    assert jwks_server.fetches == 2
    assert (await resolve(source, key_a.token({"sub": "carol"}))).id == "jwt:carol"


async def test_without_any_key_set_tokens_get_503(
    http: aiohttp.ClientSession, jwks_server: JwksServer, clock: FakeClock, key_a: SigningKey
) -> None:
    """A JWKS never fetched cannot refuse a token honestly: 503, not 401."""
    jwks_server.status = 503
    with pytest.raises(IdentityUnavailable):
        await resolve(bearer(http, jwks_server, clock), key_a.token())


async def test_an_unknown_kid_while_the_jwks_fails_is_503(
    http: aiohttp.ClientSession, jwks_server: JwksServer, clock: FakeClock, key_a: SigningKey
) -> None:
    """A new kid that cannot be looked up because the endpoint is failing is not called
    invalid: 503; known kids keep working."""
    jwks_server.keys = [key_a.jwk]
    source = bearer(http, jwks_server, clock)
    await resolve(source, key_a.token())
    jwks_server.status = 500
    clock.advance(30_000)
    with pytest.raises(IdentityUnavailable):
        await resolve(source, SigningKey("kid-b").token())
    assert await resolve(source, key_a.token({"sub": "bob"}))
