"""Bad input gets a clear 4xx in OpenAI's error shape: never a 500, never a traceback."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.mock import MockSettings, serve
from sentinel.proxy.apis import ApiEndpoint
from sentinel.proxy.models import ModelsEndpoint
from tests.conftest import CLIENT_KEY, Gateway, make_config, running_gateway

ENDPOINTS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"]
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}


class ThreadedGateway:
    """Mock upstream and Sentinel on their own loop in a thread, for synchronous clients."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        runner, upstream_port = await serve("127.0.0.1", 0, MockSettings(chunks=3))
        try:
            config = make_config(f"http://127.0.0.1:{upstream_port}/v1")
            async with running_gateway(config) as gateway:
                self.port = gateway.port
                self.ready.set()
                await self.stop.wait()
        finally:
            await runner.cleanup()

    def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def threaded() -> Iterator[ThreadedGateway]:
    """One gateway for the whole module, reachable from synchronous code."""
    gateway = ThreadedGateway()
    gateway.thread.start()
    assert gateway.ready.wait(30)
    yield gateway
    gateway.close()


def assert_openai_error(status: int, body: bytes, expected: int | None = None) -> dict[str, Any]:
    """The response is a 4xx with a well-formed OpenAI error object."""
    assert 400 <= status < 500, (status, body)
    if expected is not None:
        assert status == expected, body
    error = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and "Traceback" not in error["message"]
    return dict(error)


CORPUS: list[tuple[str, bytes, str | None]] = [
    ("/v1/chat/completions", b"{not json", None),
    ("/v1/chat/completions", b"", None),
    ("/v1/chat/completions", b"[]", "body"),
    ("/v1/chat/completions", b'"a string"', "body"),
    ("/v1/chat/completions", b'{"messages": []}', "model"),
    ("/v1/chat/completions", b'{"model": 5, "messages": []}', "model"),
    ("/v1/chat/completions", b'{"model": "", "messages": []}', "model"),
    ("/v1/chat/completions", b'{"model": "gpt-4o", "messages": "hi"}', "messages"),
    ("/v1/chat/completions", b'{"model": "gpt-4o", "messages": [], "stream": "yes"}', "stream"),
    (
        "/v1/chat/completions",
        b'{"model": "gpt-4o", "messages": [], "max_tokens": -1}',
        "max_tokens",
    ),
    (
        "/v1/chat/completions",
        b'{"model": "gpt-4o", "messages": [], "max_tokens": 1.5}',
        "max_tokens",
    ),
    (
        "/v1/chat/completions",
        b'{"model": "gpt-4o", "messages": [], "max_tokens": true}',
        "max_tokens",
    ),
    ("/v1/chat/completions", b'{"model": "gpt-4o", "messages": [], "n": 0}', "n"),
    (
        "/v1/chat/completions",
        b'{"model": "gpt-4o", "messages": [], "stream_options": {"include_usage": 1}}',
        "stream_options.include_usage",
    ),
    ("/v1/completions", b'{"model": "gpt-4o", "prompt": 7}', "prompt"),
    ("/v1/embeddings", b'{"model": "text-embedding-3-small"}', "input"),
    ("/v1/embeddings", b'{"model": "text-embedding-3-small", "input": {}}', "input"),
    ("/v1/responses", b'{"model": "gpt-4o", "input": 3}', "input"),
    ("/v1/responses", b'{"model": "gpt-4o", "max_output_tokens": -5}', "max_output_tokens"),
    ("/v1/chat/completions", b"\xff\xfe\x00garbage", None),
    ("/v1/chat/completions", b'{"model": "gpt-4o", "messages": [], "model": 1}', "model"),
]


@pytest.mark.parametrize(("path", "body", "param"), CORPUS)
def test_malformed_bodies(
    threaded: ThreadedGateway, path: str, body: bytes, param: str | None
) -> None:
    """Each malformed body is a 400 invalid_request_error naming the offending param."""
    status, _, payload = threaded.request("POST", path, body, AUTH)
    error = assert_openai_error(status, payload, 400)
    assert error["type"] == "invalid_request_error" and error["param"] == param


async def _send_oversized(port: int, head: bytes, chunks: Iterator[bytes]) -> bytes:
    """Send a request whose body is too large; read whatever the gateway answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the gateway answered and closed before the upload ended: expected
    response = await reader.read()
    writer.close()
    return response


def _head(path: str, extra: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\n{extra}\r\n"
    ).encode()


def _status_and_body(response: bytes) -> tuple[int, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_oversized_body_with_length(gateway: Gateway) -> None:
    """A declared Content-Length over the limit is a 413 before the body is read."""
    size = 11 * 1024 * 1024
    head = _head(
        "/v1/chat/completions", f"Content-Type: application/json\r\nContent-Length: {size}\r\n"
    )
    response = await _send_oversized(gateway.port, head, iter([b"x" * 65536]))
    assert_openai_error(*_status_and_body(response), 413)


async def test_oversized_chunked_body(gateway: Gateway) -> None:
    """A chunked body with no Content-Length is cut off at the limit with a 413."""
    head = _head(
        "/v1/chat/completions", "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    )
    piece = b"x" * (1024 * 1024)
    chunks = (b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(12))
    response = await _send_oversized(gateway.port, head, chunks)
    assert_openai_error(*_status_and_body(response), 413)


async def test_oversized_passthrough_upload(gateway: Gateway) -> None:
    """A streamed multipart upload over the limit is a 413 too."""
    head = _head(
        "/v1/audio/transcriptions",
        "Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n",
    )
    piece = b"y" * (1024 * 1024)
    chunks = (b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(12))
    response = await _send_oversized(gateway.port, head, chunks)
    assert_openai_error(*_status_and_body(response), 413)


@pytest.mark.parametrize("method", ["TRACE", "PROPFIND"])
def test_unsupported_methods(threaded: ThreadedGateway, method: str) -> None:
    """Methods outside the REST set are a 405 method_not_allowed."""
    status, _, payload = threaded.request(method, "/v1/files", None, AUTH)
    assert assert_openai_error(status, payload, 405)["code"] == "method_not_allowed"


def test_wrong_method_on_health(threaded: ThreadedGateway) -> None:
    """Routing errors outside /v1 are in OpenAI's shape too."""
    status, _, payload = threaded.request("POST", "/healthz", b"", {})
    assert_openai_error(status, payload, 405)


def test_unreadable_encoding_is_unsupported(threaded: ThreadedGateway) -> None:
    """A body in an encoding Sentinel cannot read (gzip it can) is a clear 415."""
    headers = {**AUTH, "Content-Encoding": "br"}
    status, _, payload = threaded.request("POST", "/v1/chat/completions", b"\x1f\x8b", headers)
    assert_openai_error(status, payload, 415)


def test_truncated_gzip_body_is_a_400(threaded: ThreadedGateway) -> None:
    """A gzip body cut short is a 400 naming Content-Encoding."""
    headers = {**AUTH, "Content-Encoding": "gzip"}
    status, _, payload = threaded.request("POST", "/v1/chat/completions", b"\x1f\x8b", headers)
    assert assert_openai_error(status, payload, 400)["param"] == "content-encoding"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
fields = st.sampled_from(
    [
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "prompt",
        "input",
        "max_output_tokens",
        "instructions",
    ]
)
bodies = st.dictionaries(fields, json_values, max_size=6)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=st.sampled_from(ENDPOINTS), body=bodies)
def test_random_bodies_never_500(
    threaded: ThreadedGateway, path: str, body: dict[str, Any]
) -> None:
    """Any JSON object of plausible fields gets a 2xx or an OpenAI-shaped 4xx, never a 5xx."""
    status, _, payload = threaded.request("POST", path, json.dumps(body).encode(), AUTH)
    if status >= 400:
        assert_openai_error(status, payload)
    else:
        assert status == 200


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=st.sampled_from(ENDPOINTS), raw=st.binary(max_size=200))
def test_random_bytes_never_500(threaded: ThreadedGateway, path: str, raw: bytes) -> None:
    """Arbitrary bytes as a body get an OpenAI-shaped 4xx or a 2xx."""
    status, _, payload = threaded.request("POST", path, raw, AUTH)
    if status >= 400:
        assert_openai_error(status, payload)


@pytest.mark.parametrize(
    ("method", "path", "endpoint"),
    [
        ("POST", "/v1/chat/completions", ApiEndpoint),  # called straight from the middleware
        ("GET", "/v1/models", ModelsEndpoint),  # through Starlette's router
    ],
)
async def test_a_bug_answers_openais_500_without_a_traceback(
    gateway: Gateway,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    path: str,
    endpoint: type,
) -> None:
    """An exception Sentinel did not expect, on any route, is OpenAI's 500 with the request's
    id; its text and traceback stay in the log."""

    async def broken(self: object, scope: object, receive: object, send: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(endpoint, "__call__", broken)
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    async with http.request(method, gateway.url + path, data=body, headers=AUTH) as response:
        text = await response.text()
        assert response.status == 500
        assert response.headers["x-request-id"].startswith("req_")
    assert json.loads(text)["error"]["code"] == "internal_error"
    assert "secret internals" not in text and "Traceback" not in text
