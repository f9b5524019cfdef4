"""gzip both ways: JSON replies for clients that accept it, gzip request bodies within the
size limit (a zip bomb is a 413 after inflating no more than the limit)."""

from __future__ import annotations

import dataclasses
import gzip
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from sentinel.config.edge import CompressionConfig
from sentinel.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from sentinel.http.compression import GzipDecoder, accepts_gzip, inflating
from tests.conftest import CLIENT_KEY, Gateway, StartGateway, Upstream, make_config

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
EMBED = {"model": "text-embedding-3-small", "input": "hello there"}
BIG = {**EMBED, "dimensions": 256, "encoding_format": "float"}  # a reply of several KB
SMALL = {**EMBED, "dimensions": 2, "encoding_format": "float"}  # a reply of a few hundred bytes
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


# --- Accept-Encoding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"gzip", True),
        (b"gzip, deflate, br, zstd", True),
        (b"GZIP;Q=0.5", True),
        (b"x-gzip", True),
        (b"br;q=1.0, gzip;q=0.8, *;q=0.1", True),
        (b"*", True),
        (b"br, *;q=0.1", True),
        (b"", False),
        (b"identity", False),
        (b"deflate, br", False),
        (b"gzip;q=0", False),
        (b"gzip; q=0.000", False),
        (b"*;q=0", False),
        (b"gzip;q=0, *", False),  # a named coding beats the wildcard
        (b"gzip;q=abc", False),  # a q that does not parse is not a yes
        (b"gzip;q=1.5", False),
    ],
)
def test_accepts_gzip(value: bytes, expected: bool) -> None:
    """gzip is used only when listed (or ``*``) with a q above 0."""
    assert accepts_gzip(value) is expected


@given(st.binary(max_size=200))
def test_accepts_gzip_reads_any_value(value: bytes) -> None:
    """Whatever a client sends as Accept-Encoding is an answer, never an error."""
    assert accepts_gzip(value) in (True, False)


# --- the request-body decoder ------------------------------------------------------------------


def _feed_all(decoder: GzipDecoder, data: bytes, cuts: list[int]) -> bytes:
    out = []
    last = 0
    for cut in [*sorted(cuts), len(data)]:
        out.append(decoder.feed(data[last:cut]))
        last = cut
    decoder.finish()
    return b"".join(out)


@given(st.binary(max_size=4000), st.lists(st.integers(min_value=0, max_value=4100), max_size=8))
def test_decoder_inflates_a_body_cut_anywhere(payload: bytes, cuts: list[int]) -> None:
    """Chunks cut at any point inflate to the original body."""
    data = gzip.compress(payload)
    cuts = [min(c, len(data)) for c in cuts]
    assert _feed_all(GzipDecoder(1_000_000), data, cuts) == payload


def test_decoder_reads_every_member() -> None:
    """A body of two concatenated gzip members is both members' bytes."""
    data = gzip.compress(b'{"a": ') + gzip.compress(b"1}")
    assert _feed_all(GzipDecoder(100), data, [3, 25]) == b'{"a": 1}'


def test_decoder_allows_exactly_the_limit() -> None:
    """A body that inflates to exactly the limit is accepted; one byte more is a 413."""
    assert _feed_all(GzipDecoder(1000), gzip.compress(b"x" * 1000), []) == b"x" * 1000
    with pytest.raises(PayloadTooLarge):
        _feed_all(GzipDecoder(1000), gzip.compress(b"x" * 1001), [])


def test_zip_bomb_stops_at_the_limit() -> None:
    """10 MB of zeros (about 10 KB compressed) under a 1 MB limit: a 413 after at most
    limit + 1 bytes were inflated, with memory to match."""
    limit = 1024 * 1024
    bomb = gzip.compress(bytes(10 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 20_000
    decoder = GzipDecoder(limit)
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge) as info:
            for i in range(0, len(bomb), 4096):
                decoder.feed(bomb[i : i + 4096])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoder.size == limit + 1
    assert peak < 3 * limit
    assert info.value.status == 413


@pytest.mark.parametrize(
    "data",
    [
        b"this is not gzip at all",
        gzip.compress(b'{"a": 1}')[:-6],  # truncated
        gzip.compress(b'{"a": 1}') + b"trailing junk",
        b"",
        zlib.compress(b'{"a": 1}'),  # zlib, not gzip
    ],
    ids=["garbage", "truncated", "trailing", "empty", "zlib"],
)
def test_malformed_gzip_is_a_400(data: bytes) -> None:
    """Anything but complete gzip members is a 400 naming the header."""
    with pytest.raises(InvalidRequest) as info:
        _feed_all(GzipDecoder(1000), data, [])
    assert info.value.code == "invalid_encoding"
    assert info.value.param == "content-encoding"


async def test_inflating_passes_plain_bodies_and_refuses_other_encodings() -> None:
    """No or identity encoding: ``receive`` itself; br, deflate, stacked codings: 415."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    assert inflating(receive, None, 10) is receive
    assert inflating(receive, b" Identity ", 10) is receive
    for encoding in (b"br", b"deflate", b"gzip, gzip", b"zstd"):
        with pytest.raises(UnsupportedMediaType) as info:
            inflating(receive, encoding, 10)
        assert info.value.code == "unsupported_content_encoding"
    inflated = inflating(_one(gzip.compress(b"{}")), b"GZIP", 10)
    assert (await inflated())["body"] == b"{}"


def _one(body: bytes) -> Any:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


# --- through a real gateway --------------------------------------------------------------------


@pytest.fixture
async def raw() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that shows the wire: no automatic decompression, no automatic Accept-Encoding."""
    async with aiohttp.ClientSession(
        auto_decompress=False, skip_auto_headers=["Accept-Encoding"]
    ) as session:
        yield session


async def _post(
    raw: aiohttp.ClientSession,
    gateway: Gateway,
    path: str,
    body: bytes,
    headers: dict[str, str],
) -> tuple[int, Any, bytes]:
    async with raw.post(
        f"{gateway.base_url}{path}",
        data=body,
        headers={**AUTH, "Content-Type": "application/json", **headers},
    ) as response:
        return response.status, response.headers, await response.read()


async def test_large_json_replies_are_gzipped(
    upstream: Upstream, start_gateway: StartGateway, raw: aiohttp.ClientSession
) -> None:
    """A reply above the threshold comes gzipped, with its own length and Vary."""
    gateway = await start_gateway(make_config(upstream.url))
    status, headers, body = await _post(
        raw, gateway, "/embeddings", orjson.dumps(BIG), {"Accept-Encoding": "gzip, deflate"}
    )
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Vary"] == "accept-encoding"
    assert int(headers["Content-Length"]) == len(body)
    reply = orjson.loads(gzip.decompress(body))
    assert len(reply["data"][0]["embedding"]) == 256
    assert len(body) < len(orjson.dumps(reply)) // 2


async def test_small_replies_are_sent_as_they_are(
    upstream: Upstream, start_gateway: StartGateway, raw: aiohttp.ClientSession
) -> None:
    """A reply below the threshold is not compressed."""
    gateway = await start_gateway(make_config(upstream.url))
    status, headers, body = await _post(
        raw, gateway, "/embeddings", orjson.dumps(SMALL), {"Accept-Encoding": "gzip"}
    )
    assert status == 200 and "Content-Encoding" not in headers
    assert orjson.loads(body)["object"] == "list"


async def test_accept_encoding_decides(
    upstream: Upstream, start_gateway: StartGateway, raw: aiohttp.ClientSession
) -> None:
    """Only clients whose Accept-Encoding takes gzip get it; the others get plain JSON."""
    gateway = await start_gateway(make_config(upstream.url))
    cases = {
        None: False,
        "identity": False,
        "gzip;q=0": False,
        "br": False,
        "*;q=0": False,
        "gzip": True,
        "*": True,
        "br;q=1, gzip;q=0.5": True,
    }
    for accept, compressed in cases.items():
        headers = {} if accept is None else {"Accept-Encoding": accept}
        status, got, body = await _post(raw, gateway, "/embeddings", orjson.dumps(BIG), headers)
        assert status == 200
        assert (got.get("Content-Encoding") == "gzip") is compressed, accept
        plain = gzip.decompress(body) if compressed else body
        assert orjson.loads(plain)["object"] == "list"


async def test_streams_are_never_compressed(
    upstream: Upstream, start_gateway: StartGateway, raw: aiohttp.ClientSession
) -> None:
    """An event stream stays incremental and unencoded, whatever the client accepts."""
    gateway = await start_gateway(make_config(upstream.url))
    body = orjson.dumps({**CHAT, "stream": True, "max_tokens": 500})
    async with raw.post(
        f"{gateway.base_url}/chat/completions",
        data=body,
        headers={**AUTH, "Content-Type": "application/json", "Accept-Encoding": "gzip"},
    ) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        assert "Content-Encoding" not in response.headers
        text = (await response.read()).decode()
    assert text.rstrip().endswith("data: [DONE]")


async def test_compression_can_be_switched_off(
    upstream: Upstream, start_gateway: StartGateway, raw: aiohttp.ClientSession
) -> None:
    """``[compression] responses = false``: never compressed."""
    config = dataclasses.replace(
        make_config(upstream.url), compression=CompressionConfig(responses=False)
    )
    gateway = await start_gateway(config)
    _, headers, body = await _post(
        raw, gateway, "/embeddings", orjson.dumps(BIG), {"Accept-Encoding": "gzip"}
    )
    assert "Content-Encoding" not in headers
    assert orjson.loads(body)["object"] == "list"


async def test_openai_sdk_reads_gzipped_replies(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    """The official SDK (which accepts gzip) reads compressed replies unchanged."""
    gateway = await start_gateway(make_config(upstream.url))
    async with openai.AsyncOpenAI(api_key=CLIENT_KEY, base_url=gateway.base_url) as client:
        raw_reply = await client.embeddings.with_raw_response.create(
            model="text-embedding-3-small", input="hello there", dimensions=256
        )
    assert raw_reply.headers["content-encoding"] == "gzip"
    assert len(raw_reply.parse().data[0].embedding) == 256


@pytest.mark.parametrize(
    "path",
    ["/chat/completions", "/completions", "/embeddings", "/responses", "/moderations"],
)
async def test_gzip_request_bodies_are_inflated_for_the_upstream(
    upstream: Upstream, start_gateway: StartGateway, raw: aiohttp.ClientSession, path: str
) -> None:
    """A gzip body on an endpoint Sentinel reads is judged inflated and sent inflated,
    without Content-Encoding."""
    gateway = await start_gateway(make_config(upstream.url))
    payload = {
        "/chat/completions": CHAT,
        "/completions": {"model": "gpt-3.5-turbo-instruct", "prompt": "hi"},
        "/embeddings": EMBED,
        "/responses": {"model": "gpt-4o-mini", "input": "hi"},
        "/moderations": {"model": "omni-moderation-latest", "input": "hi"},
    }[path]
    plain = orjson.dumps(payload)
    status, _, body = await _post(
        raw, gateway, path, gzip.compress(plain), {"Content-Encoding": "gzip"}
    )
    assert status == 200, body
    seen = (await upstream.requests(1))[-1]
    assert seen["path"] == f"/v1{path}"
    assert "content-encoding" not in seen["headers"]
    assert seen["body_bytes"] == len(plain)


async def test_zip_bomb_is_a_413(
    upstream: Upstream, start_gateway: StartGateway, raw: aiohttp.ClientSession
) -> None:
    """10 MB of zeros in 10 KB of gzip, under a 1 MB limit: a 413, nothing sent upstream."""
    config = make_config(upstream.url)
    config = dataclasses.replace(
        config, server=dataclasses.replace(config.server, max_body_bytes=1024 * 1024)
    )
    gateway = await start_gateway(config)
    bomb = gzip.compress(b'{"model": "gpt-4o-mini", "input": "' + bytes(10 * 1024 * 1024))
    status, _, body = await _post(raw, gateway, "/embeddings", bomb, {"Content-Encoding": "gzip"})
    assert status == 413
    assert orjson.loads(body)["error"]["code"] == "request_too_large"
    assert (await upstream.stats())["requests"] == 0


async def test_bad_encodings_are_refused_in_openai_shape(
    upstream: Upstream, start_gateway: StartGateway, raw: aiohttp.ClientSession
) -> None:
    """Malformed gzip is a 400, another encoding a 415; neither reaches the upstream."""
    gateway = await start_gateway(make_config(upstream.url))
    plain = orjson.dumps(CHAT)
    cases = [
        (b"not gzip", "gzip", 400, "invalid_encoding"),
        (gzip.compress(plain)[:-4], "gzip", 400, "invalid_encoding"),
        (plain, "br", 415, "unsupported_content_encoding"),
        (zlib.compress(plain), "deflate", 415, "unsupported_content_encoding"),
    ]
    for data, encoding, expected, code in cases:
        status, _, body = await _post(
            raw, gateway, "/chat/completions", data, {"Content-Encoding": encoding}
        )
        assert status == expected
        error = orjson.loads(body)["error"]
        assert error["code"] == code and error["type"] == "invalid_request_error"
    assert (await upstream.stats())["requests"] == 0


# --- replies the upstream already encoded ------------------------------------------------------


@pytest.fixture
async def encoding_upstream() -> AsyncIterator[str]:
    """An upstream whose model replies are gzipped already, as OpenAI's are for a client
    that accepts gzip, and that sends its own (permissive) CORS headers."""

    async def model(request: web.Request) -> web.Response:
        body = orjson.dumps({"id": request.match_info["m"], "object": "model", "pad": "x" * 4000})
        return web.Response(
            body=gzip.compress(body),
            content_type="application/json",
            headers={"Content-Encoding": "gzip", "Access-Control-Allow-Origin": "*"},
        )

    app = web.Application()
    app.router.add_get("/v1/models/{m}", model)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


async def test_upstream_encoded_replies_pass_through_once(
    encoding_upstream: str, start_gateway: StartGateway, raw: aiohttp.ClientSession
) -> None:
    """A pass-through reply the upstream gzipped is relayed as it came: not compressed
    twice, and without the upstream's own CORS headers."""
    gateway = await start_gateway(make_config(encoding_upstream))
    async with raw.get(
        f"{gateway.base_url}/models/gpt-4o", headers={**AUTH, "Accept-Encoding": "gzip"}
    ) as response:
        assert response.status == 200
        assert response.headers.getall("Content-Encoding") == ["gzip"]
        assert "Access-Control-Allow-Origin" not in response.headers
        body = await response.read()
    assert orjson.loads(gzip.decompress(body))["id"] == "gpt-4o"
