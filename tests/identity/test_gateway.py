"""The identity service and bearer JWTs through a real gateway, on both engines.

The timing rules are proven on an injected clock in ``test_service.py`` and
``test_bearer.py``; the gateway has no injected clock and its settings count whole seconds, so
the two tests here that need time to pass use ``ttl_s = 1`` and wait for it by polling.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from typing import Any

import aiohttp
import openai

from sentinel.config import Config
from sentinel.config.identity import IdentityConfig, IdentityServiceConfig, JwtConfig
from sentinel.errors import AuthenticationFailed
from tests.conftest import (
    SECRETS,
    Gateway,
    RequestLines,
    StartGateway,
    Upstream,
    make_config,
)
from tests.identity.conftest import (
    AUDIENCE,
    IDENTITY_TOKEN,
    ISSUER,
    IdentityServer,
    JwksServer,
    SigningKey,
    hs256_with_public_key,
)

KEY = "sk-idp-gateway-key-0123456789"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
SECRETS.update({KEY, IDENTITY_TOKEN})  # the suite fails on either in any captured output


def with_identity(
    upstream: Upstream,
    service: IdentityServiceConfig | None = None,
    jwt: JwtConfig | None = None,
) -> Config:
    config = make_config(upstream.url)
    return dataclasses.replace(
        config,
        identity=IdentityConfig(service=service, jwt=jwt),
        telemetry=dataclasses.replace(config.telemetry, metrics_public=True),
    )


async def metrics(http: aiohttp.ClientSession, gateway: Gateway) -> dict[str, float]:
    """The unlabelled samples of ``/metrics`` by name."""
    async with http.get(f"{gateway.url}/metrics") as response:
        text = await response.text()
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name and not name.startswith("#") and "{" not in name:
            found[name] = float(value)
    return found


def service_settings(server: IdentityServer, **overrides: Any) -> IdentityServiceConfig:
    return IdentityServiceConfig(url=server.url, token=IDENTITY_TOKEN, **overrides)


async def chat(
    http: aiohttp.ClientSession, gateway: Gateway, key: str
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with http.post(
        f"{gateway.base_url}/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        return (
            response.status,
            await response.json(),
            {k.lower(): v for k, v in response.headers.items()},
        )


async def test_many_first_requests_of_a_key_cause_one_lookup(
    http: aiohttp.ClientSession,
    upstream: Upstream,
    start_gateway: StartGateway,
    identity_server: IdentityServer,
    request_lines: RequestLines,
) -> None:
    """100 concurrent first requests of one key: one lookup, 100 answers, each request line
    naming the principal by name and ``idp:`` id."""
    identity_server.add(KEY, name="alice", team="ml")
    identity_server.hold = asyncio.Event()
    gateway = await start_gateway(with_identity(upstream, service_settings(identity_server)))
    requests = [asyncio.create_task(chat(http, gateway, KEY)) for _ in range(100)]
    async with asyncio.timeout(10):
        while identity_server.total == 0:
            await asyncio.sleep(0.005)
    identity_server.hold.set()
    results = await asyncio.gather(*requests)
    assert [status for status, _, _ in results] == [200] * 100
    assert identity_server.total == 1
    lines = await request_lines.wait(100)
    assert {(line["key"], line["key_id"], line["team"]) for line in lines} == {
        ("alice", "idp:alice", "ml")
    }
    counted = await metrics(http, gateway)
    assert counted["sentinel_identity_lookups_total"] == 1
    assert counted["sentinel_identity_cache_known"] == 1


async def test_the_service_principals_limits_apply(
    http: aiohttp.ClientSession,
    upstream: Upstream,
    start_gateway: StartGateway,
    identity_server: IdentityServer,
) -> None:
    """An rpm from the service is enforced like a TOML key's."""
    identity_server.add(KEY, name="alice", rpm=2)
    gateway = await start_gateway(with_identity(upstream, service_settings(identity_server)))
    statuses = [(await chat(http, gateway, KEY))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_a_key_the_service_does_not_know_is_the_usual_401(
    http: aiohttp.ClientSession,
    upstream: Upstream,
    start_gateway: StartGateway,
    identity_server: IdentityServer,
) -> None:
    """A 404 from the service is refused exactly as any wrong key is."""
    gateway = await start_gateway(with_identity(upstream, service_settings(identity_server)))
    status, body, _ = await chat(http, gateway, KEY)
    assert status == 401
    assert body == refusal_body(AuthenticationFailed())


async def test_unknown_keys_get_503_while_known_keys_work_until_max_stale(
    http: aiohttp.ClientSession,
    upstream: Upstream,
    start_gateway: StartGateway,
    identity_server: IdentityServer,
) -> None:
    """Service down: a key never seen gets 503 identity_unavailable (never 401, never 200);
    a known key keeps working past its ttl until max_stale_s, then gets 503 for good."""
    identity_server.add(KEY, name="alice")
    settings = service_settings(identity_server, ttl_s=1, max_stale_s=2)
    gateway = await start_gateway(with_identity(upstream, settings))
    assert (await chat(http, gateway, KEY))[0] == 200
    warmed = time.monotonic()
    await identity_server.stop()
    status, body, headers = await chat(http, gateway, "sk-never-seen-key-00000000000")
    assert status == 503
    assert body["error"]["code"] == "identity_unavailable"
    assert int(headers["retry-after"]) >= 1
    seen: list[tuple[float, int]] = []
    async with asyncio.timeout(10):
        while not seen or seen[-1][1] == 200:
            seen.append((time.monotonic() - warmed, (await chat(http, gateway, KEY))[0]))
            await asyncio.sleep(0.05)
    assert any(elapsed > 1.0 and status == 200 for elapsed, status in seen)  # stale, served
    assert seen[-1][1] == 503 and seen[-1][0] >= 1.5
    assert {(await chat(http, gateway, KEY))[0] for _ in range(3)} == {503}


async def test_past_ttl_stale_is_served_while_one_refresh_runs(
    http: aiohttp.ClientSession,
    upstream: Upstream,
    start_gateway: StartGateway,
    identity_server: IdentityServer,
) -> None:
    """Once ttl_s has passed, requests are answered at once while a single refresh hangs."""
    identity_server.add(KEY, name="alice")
    settings = service_settings(identity_server, ttl_s=1, max_stale_s=60)
    gateway = await start_gateway(with_identity(upstream, settings))
    assert (await chat(http, gateway, KEY))[0] == 200
    warmed = time.monotonic()
    identity_server.hold = asyncio.Event()
    await asyncio.sleep(max(0.0, 1.05 - (time.monotonic() - warmed)))
    results = await asyncio.gather(*(chat(http, gateway, KEY) for _ in range(20)))
    assert [status for status, _, _ in results] == [200] * 20
    async with asyncio.timeout(10):
        while identity_server.total < 2:  # the refresh may still be on its way
            await asyncio.sleep(0.01)
    results = await asyncio.gather(*(chat(http, gateway, KEY) for _ in range(20)))
    assert [status for status, _, _ in results] == [200] * 20
    assert identity_server.total == 2  # the first lookup and one refresh, still held
    identity_server.hold.set()


async def test_unknown_keys_are_remembered_for_negative_ttl(
    http: aiohttp.ClientSession,
    upstream: Upstream,
    start_gateway: StartGateway,
    identity_server: IdentityServer,
) -> None:
    """A 404 is asked about once per negative_ttl_s: a key created at the service meanwhile
    works once that has passed."""
    settings = service_settings(identity_server, negative_ttl_s=1)
    gateway = await start_gateway(with_identity(upstream, settings))
    assert [(await chat(http, gateway, KEY))[0] for _ in range(3)] == [401] * 3
    assert identity_server.total == 1
    identity_server.add(KEY, name="alice")
    async with asyncio.timeout(10):
        while (await chat(http, gateway, KEY))[0] != 200:
            await asyncio.sleep(0.05)
    assert identity_server.total == 2


async def test_a_429_from_the_service_silences_lookups(
    http: aiohttp.ClientSession,
    upstream: Upstream,
    start_gateway: StartGateway,
    identity_server: IdentityServer,
) -> None:
    """After a 429 with Retry-After: 30, new keys get 503 with that retry-after and no lookup
    is sent; a key known before keeps working."""
    identity_server.add(KEY, name="alice")
    gateway = await start_gateway(with_identity(upstream, service_settings(identity_server)))
    assert (await chat(http, gateway, KEY))[0] == 200
    identity_server.status, identity_server.retry_after = 429, "30"
    status, body, headers = await chat(http, gateway, "sk-new-key-a-000000000000000")
    assert (status, body["error"]["code"], headers["retry-after"]) == (
        503,
        "identity_unavailable",
        "30",
    )
    for i in range(5):
        status, _, headers = await chat(http, gateway, f"sk-new-key-b-{i:016d}")
        assert status == 503 and 29 <= int(headers["retry-after"]) <= 30
    assert identity_server.total == 2
    assert (await chat(http, gateway, KEY))[0] == 200


async def test_the_breaker_stops_lookups_to_a_failing_service(
    http: aiohttp.ClientSession,
    upstream: Upstream,
    start_gateway: StartGateway,
    identity_server: IdentityServer,
) -> None:
    """After breaker_failures failed lookups in a row, new keys get 503 without a lookup."""
    identity_server.status = 500
    settings = service_settings(identity_server, breaker_failures=2, breaker_cooldown_ms=60_000)
    gateway = await start_gateway(with_identity(upstream, settings))
    statuses = [(await chat(http, gateway, f"sk-breaker-{i:020d}"))[0] for i in range(10)]
    assert statuses == [503] * 10
    assert identity_server.total == 2


async def test_a_spray_of_random_keys_is_bounded_and_spares_known_keys(
    http: aiohttp.ClientSession,
    upstream: Upstream,
    start_gateway: StartGateway,
    identity_server: IdentityServer,
) -> None:
    """Hundreds of made-up keys: each a 401, the unknown cache stays at its bound, and the
    known key is still served from the cache (no new lookup), even with the service gone."""
    identity_server.add(KEY, name="alice")
    settings = service_settings(identity_server, max_unknown_entries=50)
    gateway = await start_gateway(with_identity(upstream, settings))
    assert (await chat(http, gateway, KEY))[0] == 200
    for _ in range(10):  # 30 at a time: within max_lookups, so each is answered (401)
        sprayed = await asyncio.gather(
            *(chat(http, gateway, f"sk-spray-{os.urandom(12).hex()}") for _ in range(30))
        )
        assert {status for status, _, _ in sprayed} == {401}
    counted = await metrics(http, gateway)
    assert counted["sentinel_identity_cache_unknown"] == 50
    assert counted["sentinel_identity_cache_known"] == 1
    await identity_server.stop()
    assert (await chat(http, gateway, KEY))[0] == 200


# --- bearer JWTs -------------------------------------------------------------------------------


def jwt_settings(server: JwksServer, **overrides: Any) -> JwtConfig:
    return JwtConfig(jwks_url=server.url, issuer=ISSUER, audience=AUDIENCE, **overrides)


def refusal_body(error: AuthenticationFailed) -> dict[str, Any]:
    return {"error": error.payload()}


async def test_a_jwt_works_with_the_openai_sdk(
    upstream: Upstream,
    start_gateway: StartGateway,
    jwks_server: JwksServer,
    request_lines: RequestLines,
) -> None:
    """The SDK sends the token as its API key; the request is the token's subject's."""
    key = SigningKey("kid-a")
    jwks_server.keys = [key.jwk]
    gateway = await start_gateway(with_identity(upstream, jwt=jwt_settings(jwks_server)))
    sdk = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=key.token(), max_retries=0)
    try:
        reply = await sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    finally:
        await sdk.close()
    assert reply.choices[0].message.content
    (line,) = await request_lines.wait(1)
    assert (line["key"], line["key_id"]) == ("alice", "jwt:alice")
    async with aiohttp.ClientSession() as http:
        counted = await metrics(http, gateway)
    assert counted["sentinel_jwt_verified_total"] == 1
    assert counted["sentinel_jwt_jwks_fetches_total"] == 1


async def test_every_refused_token_gets_the_same_401(
    http: aiohttp.ClientSession,
    upstream: Upstream,
    start_gateway: StartGateway,
    jwks_server: JwksServer,
) -> None:
    """alg none, a wrong key, HS256 keyed with the public key, expired, not yet valid, wrong
    iss and aud: the status and body of a plain wrong API key, every time."""
    key = SigningKey("kid-a")
    jwks_server.keys = [key.jwk]
    gateway = await start_gateway(with_identity(upstream, jwt=jwt_settings(jwks_server)))
    now = int(time.time())
    impostor = SigningKey("kid-impostor")
    tokens = [
        "eyJhbGciOiJub25lIiwia2lkIjoia2lkLWEifQ."
        + key.token().split(".")[1]
        + ".",  # alg none with a real payload
        impostor.token(headers={"kid": "kid-a"}),
        hs256_with_public_key(key),
        key.token({"exp": now - 120}),
        key.token({"nbf": now + 120}),
        key.token({"iss": "https://evil.test/"}),
        key.token({"aud": "other"}),
        key.token(headers={"kid": "kid-unknown"}),
    ]
    _, expected, _ = await chat(http, gateway, "sk-wrong-key-0000000000000000")
    for token in tokens:
        status, body, _ = await chat(http, gateway, token)
        assert (status, body) == (401, expected)


async def test_the_sentinel_claim_limits_are_enforced(
    http: aiohttp.ClientSession,
    upstream: Upstream,
    start_gateway: StartGateway,
    jwks_server: JwksServer,
) -> None:
    """rpm = 2 in the ``sentinel`` claim: the third request is 429."""
    key = SigningKey("kid-a")
    jwks_server.keys = [key.jwk]
    gateway = await start_gateway(with_identity(upstream, jwt=jwt_settings(jwks_server)))
    token = key.token({"sub": "limited", "sentinel": {"rpm": 2}})
    statuses = [(await chat(http, gateway, token))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_a_rotated_signing_key_is_picked_up(
    http: aiohttp.ClientSession,
    upstream: Upstream,
    start_gateway: StartGateway,
    jwks_server: JwksServer,
) -> None:
    """A token signed by a key published after startup works once the set is refetched
    (at most once per jwks_refetch_s); a spray of made-up kids costs at most a fetch or two."""
    old, new = SigningKey("kid-a"), SigningKey("kid-b")
    jwks_server.keys = [old.jwk]
    gateway = await start_gateway(
        with_identity(upstream, jwt=jwt_settings(jwks_server, jwks_refetch_s=1))
    )
    assert (await chat(http, gateway, old.token()))[0] == 200
    jwks_server.keys = [old.jwk, new.jwk]
    async with asyncio.timeout(10):
        while (await chat(http, gateway, new.token()))[0] != 200:
            await asyncio.sleep(0.1)
    before, started = jwks_server.fetches, time.monotonic()
    for i in range(50):
        status, _, _ = await chat(http, gateway, new.token(headers={"kid": f"made-up-{i}"}))
        assert status == 401
    # one fetch per jwks_refetch_s at most, however many made-up kids arrive
    assert jwks_server.fetches - before <= 1 + int(time.monotonic() - started)
    assert (await chat(http, gateway, old.token()))[0] == 200
