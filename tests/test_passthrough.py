"""Every other /v1 path passes through, with bodies streamed both ways."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import aiohttp

from tests.conftest import CLIENT_KEY, Gateway, Upstream

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


async def test_multipart_upload_streams_through(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    """A chunked multipart audio upload reaches the upstream byte for byte."""
    audio = bytes(range(256)) * 8192  # 2 MiB
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.mp3"\r\n'
        b"Content-Type: audio/mpeg\r\n\r\n" + audio + b"\r\n--XyZ--\r\n"
    )

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the body arrives in pieces
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    headers = {**AUTH, "Content-Type": "multipart/form-data; boundary=XyZ"}
    async with http.post(
        f"{gateway.base_url}/audio/transcriptions", data=chunked(), headers=headers
    ) as r:
        assert r.status == 200
        answer = await r.json()
    assert answer["bytes_received"] == len(body)
    assert answer["sha256"] == hashlib.sha256(body).hexdigest()


async def test_binary_speech_is_relayed_with_length(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    """Binary audio comes back complete, with its content type and length."""
    async with http.post(
        f"{gateway.base_url}/audio/speech",
        json={"model": "tts-1", "input": "hi", "voice": "alloy"},
        headers={**AUTH, "x-mock-bytes": "300000"},
    ) as r:
        assert r.status == 200
        assert r.headers["content-type"].startswith("audio/")
        data = await r.read()
    assert len(data) == 300000


async def test_json_passthrough_routes_and_echoes(
    gateway: Gateway, upstream: Upstream, http: aiohttp.ClientSession
) -> None:
    """Images and moderations pass through with their JSON bodies intact."""
    for path, body in [
        ("/images/generations", {"model": "dall-e-3", "prompt": "a cat"}),
        ("/moderations", {"model": "omni-moderation-latest", "input": "hi"}),
    ]:
        async with http.post(f"{gateway.base_url}{path}", json=body, headers=AUTH) as r:
            assert r.status == 200, await r.text()
    paths = [entry["path"] for entry in await upstream.requests(2)]
    assert paths == ["/v1/images/generations", "/v1/moderations"]


async def test_other_methods_and_query_pass_through(
    gateway: Gateway, upstream: Upstream, http: aiohttp.ClientSession
) -> None:
    """GET with a query string and DELETE reach the upstream unchanged."""
    async with http.get(f"{gateway.base_url}/files?purpose=batch&limit=2", headers=AUTH) as r:
        assert r.status == 200
    async with http.delete(f"{gateway.base_url}/vector_stores/vs_1", headers=AUTH) as r:
        assert r.status == 200
        echoed = await r.json()
    assert echoed["method"] == "DELETE" and echoed["path"] == "/v1/vector_stores/vs_1"
    first = (await upstream.requests(2))[0]
    assert first["query"] == "purpose=batch&limit=2"


async def test_get_on_chat_completions_is_passed_through(
    gateway: Gateway, upstream: Upstream, http: aiohttp.ClientSession
) -> None:
    """GET /v1/chat/completions (stored completions) is not a 405: it goes upstream."""
    async with http.get(f"{gateway.base_url}/chat/completions", headers=AUTH) as r:
        assert r.status == 200
    assert (await upstream.requests(1))[0]["method"] == "GET"


async def test_passthrough_requires_a_key(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    """Pass-through paths are authenticated like the rest."""
    async with http.get(f"{gateway.base_url}/files") as r:
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "invalid_api_key"
