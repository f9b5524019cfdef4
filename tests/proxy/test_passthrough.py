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


async def _upload(http: aiohttp.ClientSession, gateway: Gateway) -> dict[str, object]:
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", b'{"custom_id": "1"}\n', filename="in.jsonl")
    async with http.post(f"{gateway.base_url}/files", data=form, headers=AUTH) as r:
        assert r.status == 200, await r.text()
        created: dict[str, object] = await r.json()
    return created


async def test_other_methods_and_query_pass_through(
    gateway: Gateway, upstream: Upstream, http: aiohttp.ClientSession
) -> None:
    """GET with a query string and DELETE reach the upstream unchanged; the list of files is
    the key's own, answered by Sentinel."""
    created = await _upload(http, gateway)
    async with http.get(f"{gateway.base_url}/files?purpose=batch&limit=2", headers=AUTH) as r:
        assert r.status == 200
        listed = await r.json()
    assert [entry["id"] for entry in listed["data"]] == [created["id"]]
    url = f"{gateway.base_url}/files/{created['id']}"
    async with http.get(f"{url}/content?format=raw", headers=AUTH) as r:
        assert r.status == 200
    assert (await upstream.requests(1))[0]["query"] == "format=raw"
    async with http.delete(url, headers=AUTH) as r:
        assert r.status == 200
        echoed = await r.json()
    assert echoed["method"] == "DELETE" and echoed["path"] == f"/v1/files/{created['id']}"
    async with http.get(url, headers=AUTH) as r:
        assert r.status == 404  # deleted: released from the owner index


async def test_get_on_chat_completions_is_the_stored_completions_family(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    """GET /v1/chat/completions is not a 405: it is the stored-completions family, which is
    not enabled by default."""
    async with http.get(f"{gateway.base_url}/chat/completions", headers=AUTH) as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "endpoint_not_enabled"


async def test_passthrough_requires_a_key(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    """Pass-through paths are authenticated like the rest."""
    async with http.get(f"{gateway.base_url}/files") as r:
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "invalid_api_key"
