"""Header rewriting: credentials and hop-by-hop headers stay behind, SDK headers go through."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from sentinel.errors import InvalidRequest
from sentinel.http.headers import relay_headers, scan_request_headers
from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, Gateway, Upstream

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def test_scan_drops_credentials_and_hop_by_hop() -> None:
    """The client's key, cookies and hop-by-hop headers are not forwarded."""
    found = scan_request_headers(
        [
            (b"authorization", b"Bearer sk-client"),
            (b"api-key", b"sk-azure"),
            (b"cookie", b"session=1"),
            (b"connection", b"keep-alive, x-private"),
            (b"x-private", b"1"),
            (b"keep-alive", b"timeout=5"),
            (b"te", b"trailers"),
            (b"upgrade", b"h2c"),
            (b"proxy-authorization", b"Basic eA=="),
            (b"user-agent", b"OpenAI/Python 1.0"),
            (b"x-stainless-lang", b"python"),
            (b"openai-beta", b"assistants=v2"),
            (b"idempotency-key", b"abc"),
            (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ]
    )
    assert found.authorization == b"Bearer sk-client" and found.api_key == b"sk-azure"
    assert set(found.forward) == {
        "user-agent",
        "x-stainless-lang",
        "openai-beta",
        "idempotency-key",
        "traceparent",
    }


@pytest.mark.parametrize("value", [b"a\x00b", b"a\x1bb", b"\xff\xfe", b"x\x7f"])
def test_scan_refuses_unforwardable_values(value: bytes) -> None:
    """A header value with control bytes or invalid UTF-8 is a 400 naming the header."""
    with pytest.raises(InvalidRequest) as raised:
        scan_request_headers([(b"x-custom", value)])
    assert raised.value.param == "x-custom" and raised.value.code == "invalid_header"


def test_relay_drops_invalid_and_private_headers() -> None:
    """Upstream cookies, hop-by-hop and invalid values are dropped; its request id renamed."""
    relayed, dropped = relay_headers(
        (
            (b"Content-Type", b"application/json"),
            (b"Set-Cookie", b"__cf_bm=1"),
            (b"Transfer-Encoding", b"chunked"),
            (b"X-Request-Id", b"req_up"),
            (b"X-Bad", b"a\x01b"),
            (b"Content-Length", b"12"),
        ),
        keep_length=False,
    )
    assert relayed == [
        (b"content-type", b"application/json"),
        (b"x-upstream-request-id", b"req_up"),
    ]
    assert dropped == ["X-Bad"]


async def test_upstream_sees_its_key_never_the_clients(
    gateway: Gateway, upstream: Upstream, http: aiohttp.ClientSession
) -> None:
    """The upstream receives the configured key and the SDK headers, not the client's secret."""
    headers = {
        "Authorization": f"Bearer {CLIENT_KEY}",
        "Cookie": "a=b",
        "X-Stainless-Lang": "python",
        "OpenAI-Beta": "assistants=v2",
        "Idempotency-Key": "idem-1",
        "OpenAI-Organization": "org-client",
    }
    async with http.post(f"{gateway.base_url}/chat/completions", json=CHAT, headers=headers) as r:
        assert r.status == 200
    seen = (await upstream.requests(1))[0]["headers"]
    assert seen["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert CLIENT_KEY not in str(seen)
    assert "cookie" not in seen and "openai-organization" not in seen
    assert seen["x-stainless-lang"] == "python" and seen["idempotency-key"] == "idem-1"
    assert seen["openai-beta"] == "assistants=v2"


async def test_every_response_carries_request_id(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    """Successes, errors and streams all carry x-request-id; a sane client id is kept."""
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    async with http.get(f"{gateway.url}/nowhere") as r:
        assert r.status == 404 and r.headers["x-request-id"].startswith("req_")
    async with http.post(f"{gateway.base_url}/chat/completions", json=CHAT) as r:
        assert r.status == 401 and r.headers["x-request-id"]
    stream = {**CHAT, "stream": True}
    async with http.post(
        f"{gateway.base_url}/chat/completions",
        json=stream,
        headers={**auth, "x-request-id": "client-id-42"},
    ) as r:
        assert r.headers["x-request-id"] == "client-id-42"
        assert r.headers["x-upstream-request-id"]
        await r.read()
    async with http.get(
        f"{gateway.url}/healthz", headers={"x-request-id": "bad id with spaces"}
    ) as r:
        assert r.headers["x-request-id"] != "bad id with spaces"


async def test_raw_control_bytes_in_request_header_get_400(gateway: Gateway) -> None:
    """A header value with a control byte, sent on a raw socket, is a 400 and not a crash."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    body = b'{"model":"gpt-4o-mini","messages":[]}'
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {CLIENT_KEY}\r\n".encode()
        + b"X-Evil: a\x01b\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    response = await reader.read()
    writer.close()
    assert response.startswith(b"HTTP/1.1 400")
    if gateway.config.server.engine == "hypercorn":  # h11 passes the byte on: Sentinel names it
        assert b'"param":"x-evil"' in response
    else:  # llhttp refuses the request itself: the engine's plain 400, before any handler
        assert b"content-length: 0" in response.lower()
