"""CORS (``[cors]``): preflights answered without authentication, headers on every response
to an allowed origin (errors and streams included), nothing for other origins."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDictProxy

from sentinel.app import create_app
from sentinel.config import Config, KeyConfig, hash_key
from sentinel.config.edge import CompressionConfig, CorsConfig
from sentinel.http.compression import GzipReplies
from sentinel.http.context import RequestContextMiddleware
from sentinel.http.cors import EXPOSED_HEADERS, CorsHeaders, CorsPolicy, Preflight
from tests.conftest import CLIENT_KEY, Gateway, StartGateway, Upstream, encodings, make_config

APP = "https://app.example.com"
OTHER = "https://evil.example"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
SDK_HEADERS = (
    "authorization, content-type, x-stainless-arch, x-stainless-lang, x-stainless-os, "
    "x-stainless-package-version, x-stainless-retry-count, x-stainless-runtime, "
    "x-stainless-runtime-version, x-stainless-timeout"
)


def with_cors(config: Config, **cors: Any) -> Config:
    return dataclasses.replace(config, cors=CorsConfig(**{"allow_origins": (APP,), **cors}))


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that sends only what a test gives it (as a browser's fetch would)."""
    async with aiohttp.ClientSession(skip_auto_headers=["Accept-Encoding"]) as session:
        yield session


async def preflight(
    browser: aiohttp.ClientSession,
    gateway: Gateway,
    path: str = "/v1/chat/completions",
    origin: str = APP,
    headers: str | None = SDK_HEADERS,
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    asked = {"Origin": origin, "Access-Control-Request-Method": "POST"}
    if headers is not None:
        asked["Access-Control-Request-Headers"] = headers
    async with browser.options(f"{gateway.url}{path}", headers=asked) as response:
        return response.status, response.headers, await response.read()


def allow_origin(headers: CIMultiDictProxy[str]) -> list[str]:
    return headers.getall("Access-Control-Allow-Origin", [])


# --- the policy ------------------------------------------------------------------------------


def test_requested_headers_are_echoed_when_allowed() -> None:
    """Known headers and any ``x-stainless-*`` are echoed lower-cased; others left out."""
    policy = CorsPolicy(CorsConfig(allow_origins=(APP,), allow_headers=("x-team",)))
    asked = b"Authorization, X-Stainless-OS,x-stainless-,x-stainless-a\x01, X-Team, x-evil, cookie"
    assert policy.allowed_headers(asked) == ["authorization", "x-stainless-os", "x-team"]
    assert policy.allowed_headers(None) == []


def test_origins_are_matched_exactly() -> None:
    """An origin is allowed only as configured: no prefix, case or port games."""
    policy = CorsPolicy(CorsConfig(allow_origins=(APP,)))
    assert policy.allows(APP.encode())
    for near in (APP + ":443", APP + ".evil.example", "http://app.example.com", APP.upper()):
        assert not policy.allows(near.encode())
    assert CorsPolicy(CorsConfig(allow_origins=("*",))).allows(b"https://anything.example")


def test_layers_are_installed_only_when_configured() -> None:
    """Without [cors] (and with compression off) the app is the request context itself:
    no wrapper costs anything; with [cors], the outer headers layer and the preflight
    responder behind the request context."""
    plain = make_config("http://127.0.0.1:9/v1")
    bare = create_app(
        dataclasses.replace(plain, compression=CompressionConfig(responses=False)), encodings()
    )
    assert isinstance(bare, RequestContextMiddleware)
    assert not isinstance(bare.app, Preflight)
    full = create_app(with_cors(plain), encodings())
    assert isinstance(full, CorsHeaders) and isinstance(full.app, GzipReplies)
    context = full.app.app
    assert isinstance(context, RequestContextMiddleware) and isinstance(context.app, Preflight)


# --- preflights --------------------------------------------------------------------------------


async def test_preflight_from_an_allowed_origin(
    upstream: Upstream, start_gateway: StartGateway, browser: aiohttp.ClientSession
) -> None:
    """Answered 204 by Sentinel without a key: the origin, the methods, every header the
    OpenAI SDK sends, a max age; nothing reaches the upstream."""
    gateway = await start_gateway(with_cors(make_config(upstream.url), max_age_s=120))
    status, headers, body = await preflight(browser, gateway)
    assert status == 204 and body == b""
    assert allow_origin(headers) == [APP]
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert headers["Access-Control-Allow-Headers"] == SDK_HEADERS
    assert headers["Access-Control-Max-Age"] == "120"
    assert "origin" in headers.getall("Vary")
    assert "Access-Control-Allow-Credentials" not in headers
    assert headers["x-request-id"]
    assert (await upstream.stats())["requests"] == 0


async def test_preflight_leaves_out_headers_that_are_not_allowed(
    upstream: Upstream, start_gateway: StartGateway, browser: aiohttp.ClientSession
) -> None:
    """A header outside the allowed set is not echoed, so the browser refuses to send it."""
    gateway = await start_gateway(with_cors(make_config(upstream.url)))
    status, headers, _ = await preflight(browser, gateway, headers="content-type, x-evil")
    assert status == 204
    assert headers["Access-Control-Allow-Headers"] == "content-type"
    status, headers, _ = await preflight(browser, gateway, headers=None)
    assert status == 204 and "Access-Control-Allow-Headers" not in headers


async def test_preflight_from_another_origin_is_refused(
    upstream: Upstream, start_gateway: StartGateway, browser: aiohttp.ClientSession
) -> None:
    """403 in OpenAI's shape and no CORS headers: the browser stops there."""
    gateway = await start_gateway(with_cors(make_config(upstream.url)))
    for origin in (OTHER, "null", APP + ":8443"):
        status, headers, body = await preflight(browser, gateway, origin=origin)
        assert status == 403
        error = orjson.loads(body)["error"]
        assert error["code"] == "cors_origin_not_allowed"
        assert error["type"] == "invalid_request_error"
        assert allow_origin(headers) == []
        assert not any(name.lower().startswith("access-control-") for name in headers)
        assert headers["Vary"] == "origin"


async def test_preflight_for_a_non_canonical_path_is_a_404(
    upstream: Upstream, start_gateway: StartGateway, browser: aiohttp.ClientSession
) -> None:
    """The canonical-path check runs first: a path in another spelling is never answered
    as if it were a route."""
    gateway = await start_gateway(with_cors(make_config(upstream.url)))
    for path in ("/v1/chat/completions/", "/v1//chat/completions", "/v1/chat;x/completions"):
        status, headers, body = await preflight(browser, gateway, path=path)
        assert status == 404, path
        assert orjson.loads(body)["error"]["code"] == "unknown_url"
        assert "Access-Control-Allow-Methods" not in headers


async def test_plain_options_is_not_a_preflight(
    upstream: Upstream, start_gateway: StartGateway, browser: aiohttp.ClientSession
) -> None:
    """OPTIONS without Access-Control-Request-Method goes the ordinary way (a key needed)."""
    gateway = await start_gateway(with_cors(make_config(upstream.url)))
    async with browser.options(
        f"{gateway.base_url}/chat/completions", headers={"Origin": APP}
    ) as response:
        assert response.status in (401, 405)
        assert allow_origin(response.headers) == [APP]


async def test_without_cors_a_preflight_gets_no_cors_headers(
    upstream: Upstream, start_gateway: StartGateway, browser: aiohttp.ClientSession
) -> None:
    """No [cors]: no layer, no CORS headers; the preflight meets authentication."""
    gateway = await start_gateway(make_config(upstream.url))
    status, headers, _ = await preflight(browser, gateway)
    assert status == 401
    assert not any(name.lower().startswith("access-control-") for name in headers)


# --- actual requests ---------------------------------------------------------------------------


async def _call(
    browser: aiohttp.ClientSession,
    gateway: Gateway,
    body: dict[str, Any],
    *,
    origin: str | None = APP,
    key: str = CLIENT_KEY,
    path: str = "/chat/completions",
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    headers = {"Authorization": f"Bearer {key}"}
    if origin is not None:
        headers["Origin"] = origin
    async with browser.post(f"{gateway.base_url}{path}", json=body, headers=headers) as response:
        return response.status, response.headers, await response.read()


def assert_cors(headers: CIMultiDictProxy[str], origin: str = APP) -> None:
    assert allow_origin(headers) == [origin]
    assert headers["Access-Control-Expose-Headers"] == ", ".join(EXPOSED_HEADERS)
    assert "origin" in headers.getall("Vary")


async def test_responses_to_an_allowed_origin_carry_cors_headers(
    upstream: Upstream, start_gateway: StartGateway, browser: aiohttp.ClientSession
) -> None:
    """Success, 401, 404 and 429 (with its retry and rate-limit headers exposed) alike."""
    config = make_config(upstream.url)
    limited = KeyConfig(name="limited", key_sha256=hash_key("sk-limited-key-000000"), rpm=1)
    config = with_cors(dataclasses.replace(config, keys=(*config.keys, limited)))
    gateway = await start_gateway(config)
    status, headers, _ = await _call(browser, gateway, CHAT)
    assert status == 200
    assert_cors(headers)
    status, headers, _ = await _call(browser, gateway, CHAT, key="sk-wrong-key-123456")
    assert status == 401
    assert_cors(headers)
    status, headers, _ = await _call(browser, gateway, CHAT, path="/no/such/thing")
    assert status == 404
    assert_cors(headers)
    assert (await _call(browser, gateway, CHAT, key="sk-limited-key-000000"))[0] == 200
    status, headers, _ = await _call(browser, gateway, CHAT, key="sk-limited-key-000000")
    assert status == 429
    assert_cors(headers)
    assert {"retry-after", "retry-after-ms", "x-ratelimit-remaining-requests"} <= {
        name.lower() for name in headers
    }
    exposed = headers["Access-Control-Expose-Headers"].split(", ")
    assert {"retry-after", "retry-after-ms", "x-ratelimit-remaining-requests"} <= set(exposed)


async def test_streams_carry_cors_headers(
    upstream: Upstream, start_gateway: StartGateway, browser: aiohttp.ClientSession
) -> None:
    """An event stream to an allowed origin carries them on its start."""
    gateway = await start_gateway(with_cors(make_config(upstream.url)))
    headers = {"Authorization": f"Bearer {CLIENT_KEY}", "Origin": APP}
    async with browser.post(
        f"{gateway.base_url}/chat/completions", json={**CHAT, "stream": True}, headers=headers
    ) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        assert_cors(response.headers)
        assert (await response.read()).rstrip().endswith(b"data: [DONE]")


async def test_other_origins_and_no_origin_get_no_cors_headers(
    upstream: Upstream, start_gateway: StartGateway, browser: aiohttp.ClientSession
) -> None:
    """CORS is not authentication: the request is served, but the browser may not read it
    (only ``Vary: Origin``); a request without Origin (a server, the SDK) meets no layer."""
    gateway = await start_gateway(with_cors(make_config(upstream.url)))
    status, headers, _ = await _call(browser, gateway, CHAT, origin=OTHER)
    assert status == 200
    assert allow_origin(headers) == [] and headers["Vary"] == "origin"
    status, headers, _ = await _call(browser, gateway, CHAT, origin=None)
    assert status == 200
    assert not any(name.lower().startswith("access-control-") for name in headers)
    assert "Vary" not in headers


async def test_credentials_are_allowed_only_for_exact_origins(
    upstream: Upstream, start_gateway: StartGateway, browser: aiohttp.ClientSession
) -> None:
    """With credentials the origin is echoed and Allow-Credentials sent; with ``*`` the
    answer is ``*`` with no credentials and no Vary."""
    gateway = await start_gateway(with_cors(make_config(upstream.url), allow_credentials=True))
    status, headers, _ = await preflight(browser, gateway)
    assert status == 204
    assert allow_origin(headers) == [APP]
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Access-Control-Allow-Headers"] != "*"
    status, headers, _ = await _call(browser, gateway, CHAT)
    assert headers["Access-Control-Allow-Credentials"] == "true"

    anyone = await start_gateway(with_cors(make_config(upstream.url), allow_origins=("*",)))
    status, headers, _ = await preflight(browser, anyone, origin=OTHER)
    assert status == 204
    assert allow_origin(headers) == ["*"]
    assert "Access-Control-Allow-Credentials" not in headers
    assert "Vary" not in headers
    status, headers, _ = await _call(browser, anyone, CHAT, origin=OTHER)
    assert status == 200 and allow_origin(headers) == ["*"]
