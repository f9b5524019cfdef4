"""The built-in mock upstream: OpenAI's shapes and framing, its knobs, faults and observability."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from multidict import CIMultiDictProxy
from openai.types.chat import ChatCompletionMessageParam

from sentinel.mock import MockSettings, serve
from sentinel.mock.server import parse_bind
from sentinel.mock.settings import Fault, parse_fault
from tests.conftest import Upstream

ROOT = Path(__file__).resolve().parents[2]
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello mock world"}]
CHAT = {"model": "gpt-4o-mini", "messages": MESSAGES}
STREAM = {**CHAT, "stream": True}
WITH_USAGE = {**STREAM, "stream_options": {"include_usage": True}}


@pytest.fixture
async def sdk(upstream: Upstream) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official SDK pointed straight at the mock (five chunks per reply)."""
    client = openai.AsyncOpenAI(base_url=upstream.url, api_key="x", max_retries=0)
    yield client
    await client.close()


async def _post(
    upstream: Upstream, path: str, body: object, headers: dict[str, str] | None = None
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    async with upstream.session.post(f"{upstream.url}{path}", json=body, headers=headers) as r:
        return r.status, r.headers, await r.read()


def _frames(raw: bytes) -> list[bytes]:
    assert raw.endswith(b"\n\n")
    return raw[:-2].split(b"\n\n")


def _chunks(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(f.removeprefix(b"data: ")) for f in _frames(raw) if f != b"data: [DONE]"]


async def _eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` until it holds, for at most five seconds."""
    deadline = asyncio.get_running_loop().time() + 5
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.005)


# --- chat completions ----------------------------------------------------------------------


async def test_chat_json_through_sdk(sdk: openai.AsyncOpenAI) -> None:
    """A chat completion echoes the model and the last user message, with full usage."""
    reply = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.choices[0].message.content == "gpt-4o-mini: hello mock world gpt-4o-mini:"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (6, 5)
    assert reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens == 0
    assert reply.usage.completion_tokens_details is not None
    assert reply.usage.completion_tokens_details.reasoning_tokens == 0


async def test_chat_prompt_tokens_are_words_plus_three_per_message(upstream: Upstream) -> None:
    """prompt_tokens is 3 per message plus the whitespace-separated words of the text content."""
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "one two three"}]},
    ]
    body = {"model": "mock-1", "messages": messages}
    _, _, raw = await _post(upstream, "/chat/completions", body)
    assert orjson.loads(raw)["usage"]["prompt_tokens"] == 3 + 2 + 3 + 3


async def test_chat_stream_without_usage_through_sdk(sdk: openai.AsyncOpenAI) -> None:
    """A plain stream opens with the role, carries the pieces, ends with stop and no usage."""
    stream = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in chunks)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text == "gpt-4o-mini: hello mock world gpt-4o-mini:"


async def test_chat_stream_with_usage_through_sdk(sdk: openai.AsyncOpenAI) -> None:
    """With include_usage the last chunk has no choices and the usage."""
    stream = await sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 11


async def test_chat_stream_framing_is_openais(upstream: Upstream) -> None:
    """Frames are ``data: {json}\\n\\n``; every chunk has ``"usage":null`` until the usage one."""
    status, headers, raw = await _post(upstream, "/chat/completions", WITH_USAGE)
    assert status == 200 and headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert headers["Transfer-Encoding"] == "chunked" and headers["x-request-id"].startswith("req_")
    frames = _frames(raw)
    assert frames[-1] == b"data: [DONE]" and len(frames) == 1 + 5 + 1 + 1 + 1
    assert all(frame.startswith(b'data: {"id":"chatcmpl-') for frame in frames[:-1])
    assert all(frame.endswith(b',"usage":null}') for frame in frames[:-2])
    chunks = _chunks(raw)
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5


async def test_stream_without_include_usage_has_no_usage_key(upstream: Upstream) -> None:
    """A stream that did not ask for usage has no ``usage`` key at all, as OpenAI sends it."""
    _, _, raw = await _post(upstream, "/chat/completions", STREAM)
    assert b"usage" not in raw


async def test_max_tokens_cuts_the_reply_with_length(upstream: Upstream) -> None:
    """max_completion_tokens smaller than the chunks ends the reply early with ``length``."""
    body = {**CHAT, "max_completion_tokens": 2}
    _, _, raw = await _post(upstream, "/chat/completions", body)
    reply = orjson.loads(raw)
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 2


# --- completions, responses, embeddings, models ----------------------------------------------


async def test_completions_json_through_sdk(sdk: openai.AsyncOpenAI) -> None:
    """A legacy completion is a text_completion with the prompt's words as prompt_tokens."""
    reply = await sdk.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once upon")
    assert reply.object == "text_completion" and reply.choices[0].text
    assert reply.usage is not None and reply.usage.prompt_tokens == 2


async def test_completions_stream_with_usage(upstream: Upstream) -> None:
    """A completions stream has text chunks, a stop chunk, a usage chunk and [DONE]."""
    body = {
        "model": "m",
        "prompt": "a b",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    _, _, raw = await _post(upstream, "/completions", body)
    chunks = _chunks(raw)
    assert raw.endswith(b"data: [DONE]\n\n")
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == "m: a b m: a"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 2 + 5


async def test_responses_json_through_sdk(sdk: openai.AsyncOpenAI) -> None:
    """A response has output_text and usage with the detail objects."""
    reply = await sdk.responses.create(model="gpt-4o-mini", input="hi there")
    assert reply.output_text == "gpt-4o-mini: hi there gpt-4o-mini: hi"
    assert reply.usage is not None and reply.usage.input_tokens == 2
    assert reply.usage.output_tokens_details.reasoning_tokens == 0


async def test_responses_stream_usage_through_sdk(sdk: openai.AsyncOpenAI) -> None:
    """The SDK reads the stream's usage from response.completed, the last event."""
    stream = await sdk.responses.create(model="gpt-4o-mini", input="hi there", stream=True)
    events = [event async for event in stream]
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == 5
    usage = events[-1].response.usage
    assert usage is not None and usage.input_tokens_details.cached_tokens == 0
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (2, 5, 7)


async def test_responses_stream_framing(upstream: Upstream) -> None:
    """Each event is ``event: <type>\\ndata: {json}\\n\\n`` in sequence, with no [DONE]."""
    _, _, raw = await _post(upstream, "/responses", {"model": "m", "input": "x", "stream": True})
    assert b"[DONE]" not in raw
    for seq, frame in enumerate(_frames(raw)):
        event_line, data_line = frame.split(b"\n")
        data = orjson.loads(data_line.removeprefix(b"data: "))
        assert event_line == b"event: " + data["type"].encode()
        assert data["sequence_number"] == seq


async def test_embeddings_through_sdk(sdk: openai.AsyncOpenAI) -> None:
    """Embeddings (base64, as the SDK asks) are one vector per input, the same for the same text."""
    result = await sdk.embeddings.create(model="text-embedding-3-small", input=["a", "b", "a"])
    vectors = [item.embedding for item in result.data]
    assert [len(v) for v in vectors] == [1536] * 3
    assert vectors[0] == vectors[2] != vectors[1]
    assert result.usage.prompt_tokens == 3


async def test_embeddings_float_with_dimensions(upstream: Upstream) -> None:
    """``dimensions`` sets the vector size of float embeddings."""
    body = {"model": "text-embedding-3-large", "input": "x", "dimensions": 8}
    _, _, raw = await _post(upstream, "/embeddings", body)
    assert len(orjson.loads(raw)["data"][0]["embedding"]) == 8


async def test_models_list_through_sdk(sdk: openai.AsyncOpenAI) -> None:
    """The model list has the chat, embedding and mock models."""
    ids = {model.id async for model in await sdk.models.list()}
    assert {"gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "mock-1"} <= ids


async def test_model_retrieve_through_sdk(sdk: openai.AsyncOpenAI) -> None:
    """One listed model can be retrieved."""
    model = await sdk.models.retrieve("mock-1")
    assert model.id == "mock-1" and model.object == "model"


async def test_unknown_model_is_404(sdk: openai.AsyncOpenAI) -> None:
    """An unlisted model id is a NotFoundError model_not_found."""
    with pytest.raises(openai.NotFoundError) as raised:
        await sdk.models.retrieve("nope")
    assert raised.value.code == "model_not_found"


# --- validation and knobs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/chat/completions", b"{nope", None),
        ("/chat/completions", b"[]", None),
        ("/chat/completions", b'{"messages": []}', "model"),
        ("/chat/completions", b'{"model": "m", "messages": "hi"}', "messages"),
        ("/completions", b'{"model": "m", "prompt": 7}', "prompt"),
        ("/responses", b'{"model": "m", "input": 7}', "input"),
        ("/embeddings", b'{"model": "m"}', "input"),
    ],
)
async def test_bad_bodies_are_openai_400s(
    upstream: Upstream, path: str, body: bytes, param: str | None
) -> None:
    """A malformed body is a 400 invalid_request_error naming the parameter."""
    async with upstream.session.post(f"{upstream.url}{path}", data=body) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


async def test_chunks_header_overrides_the_setting(upstream: Upstream) -> None:
    """``x-mock-chunks`` sets the number of content chunks for one request."""
    _, _, raw = await _post(upstream, "/chat/completions", CHAT, {"x-mock-chunks": "12"})
    assert orjson.loads(raw)["usage"]["completion_tokens"] == 12


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-mock-chunks", "-1"),
        ("x-mock-chunks", "many"),
        ("x-mock-chunk-delay-ms", "nan"),
        ("x-mock-latency-ms", "-5"),
        ("x-mock-fault", "explode"),
        ("x-mock-fault", "status:200"),
    ],
)
async def test_bad_override_is_400(upstream: Upstream, header: str, value: str) -> None:
    """An unusable ``x-mock-*`` value is an OpenAI-shaped 400 naming the header."""
    status, _, raw = await _post(upstream, "/chat/completions", CHAT, {header: value})
    assert status == 400
    assert orjson.loads(raw)["error"]["param"] == header


async def test_latency_header_delays_the_headers(upstream: Upstream) -> None:
    """``x-mock-latency-ms`` holds the response back at least that long."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, _, _ = await _post(upstream, "/models", None, {"x-mock-latency-ms": "60"})
    assert status == 200 and loop.time() - started >= 0.06


async def test_chunk_delay_paces_the_stream(upstream: Upstream) -> None:
    """``x-mock-chunk-delay-ms`` spaces the frames, which then arrive in separate reads."""
    headers = {"x-mock-chunk-delay-ms": "20"}
    async with upstream.session.post(
        f"{upstream.url}/chat/completions", json=STREAM, headers=headers
    ) as r:
        reads = [chunk async for chunk in r.content.iter_any()]
    assert len(reads) > 1
    assert _frames(b"".join(reads))[-1] == b"data: [DONE]"


def test_settings_reject_bad_values() -> None:
    """MockSettings validates every knob when it is built."""
    for bad in ({"chunks": -1}, {"latency_ms": float("inf")}, {"fault": "status:99"}):
        with pytest.raises(ValueError):
            MockSettings(**bad)


def test_fault_grammar() -> None:
    """Faults parse into a kind and an argument; unknown names are refused."""
    assert parse_fault("die-after:3") == Fault("die-after", 3)
    assert parse_fault("no-usage") == Fault("no-usage")
    for bad in ("die-after", "reset:1", "status:abc", "die-after:٣"):
        with pytest.raises(ValueError):
            parse_fault(bad)


def test_parse_bind() -> None:
    """HOST:PORT and [v6]:PORT split; anything else is a ValueError."""
    assert parse_bind("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_bind("[::1]:0") == ("::1", 0)
    for bad in ("9000", ":9000", "host:port", "h:70000"):
        with pytest.raises(ValueError):
            parse_bind(bad)


# --- faults ----------------------------------------------------------------------------------


async def test_status_429_fault_has_retry_headers(upstream: Upstream) -> None:
    """``status:429`` answers OpenAI's rate-limit error with retry-after and retry-after-ms."""
    status, headers, raw = await _post(
        upstream, "/chat/completions", CHAT, {"x-mock-fault": "status:429"}
    )
    assert status == 429
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("1", "1000")
    assert orjson.loads(raw)["error"]["code"] == "rate_limit_exceeded"


async def test_status_500_fault_through_sdk(sdk: openai.AsyncOpenAI) -> None:
    """``status:500`` is an InternalServerError in the SDK."""
    with pytest.raises(openai.InternalServerError):
        await sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            extra_headers={"x-mock-fault": "status:500"},
        )


async def test_default_fault_from_settings_and_its_override(http: aiohttp.ClientSession) -> None:
    """A fault in the settings hits every request, unless ``x-mock-fault: none`` lifts it."""
    runner, port = await serve("127.0.0.1", 0, MockSettings(fault="status:503"))
    try:
        url = f"http://127.0.0.1:{port}/v1/models"
        async with http.get(url) as r:
            assert r.status == 503
        async with http.get(url, headers={"x-mock-fault": "none"}) as r:
            assert r.status == 200
    finally:
        await runner.cleanup()


async def test_reset_fault_drops_the_connection(upstream: Upstream) -> None:
    """``reset`` closes the connection without any response."""
    with pytest.raises((aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
        await _post(upstream, "/chat/completions", CHAT, {"x-mock-fault": "reset"})


async def test_stall_fault_sends_nothing_until_the_client_leaves(upstream: Upstream) -> None:
    """``stall`` never answers; when the client gives up, the connection is released."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.2)) as client:
        with pytest.raises(TimeoutError):
            await client.post(
                f"{upstream.url}/chat/completions", json=CHAT, headers={"x-mock-fault": "stall"}
            )

    async def released() -> bool:
        return int((await upstream.stats())["open_connections"]) == 0

    await _eventually(released)


async def test_shutdown_ends_a_stall(http: aiohttp.ClientSession) -> None:
    """Stopping the server ends a stalled request instead of waiting on it."""
    runner, port = await serve("127.0.0.1", 0, MockSettings(fault="stall"))
    url = f"http://127.0.0.1:{port}"
    stalled = asyncio.create_task(http.post(f"{url}/v1/models", json={}))

    async def arrived() -> bool:
        async with http.get(f"{url}/mock/stats") as r:
            return bool((await r.json())["requests"])

    try:
        await _eventually(arrived)
    finally:
        await asyncio.wait_for(runner.cleanup(), 5)
    with pytest.raises(aiohttp.ClientError):
        await stalled


async def test_die_after_cuts_the_stream_without_terminator(upstream: Upstream) -> None:
    """``die-after:2`` sends two frames, then the body ends without its chunked terminator."""
    received = b""
    headers = {"x-mock-fault": "die-after:2"}
    async with upstream.session.post(
        f"{upstream.url}/chat/completions", json=STREAM, headers=headers
    ) as r:
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in r.content.iter_any():
                received += chunk
    assert len(_frames(received)) == 2


async def test_die_after_cuts_a_json_body_short(upstream: Upstream) -> None:
    """On a JSON reply ``die-after:1`` sends the first part of the body, then closes."""
    headers = {"x-mock-fault": "die-after:1"}
    with pytest.raises(aiohttp.ClientPayloadError):
        await _post(upstream, "/chat/completions", CHAT, headers)


async def test_die_after_through_sdk_is_an_error(sdk: openai.AsyncOpenAI) -> None:
    """The SDK sees a stream cut by ``die-after`` as a transport error after some chunks."""
    stream = await sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-mock-fault": "die-after:3"},
    )
    received = []
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 3


async def test_stall_after_sends_frames_then_hangs(upstream: Upstream) -> None:
    """``stall-after:2`` sends two frames and then nothing, holding the stream open."""
    headers = {"x-mock-fault": "stall-after:2"}
    timeout = aiohttp.ClientTimeout(sock_read=0.2)
    async with upstream.session.post(
        f"{upstream.url}/chat/completions", json=STREAM, headers=headers, timeout=timeout
    ) as r:
        first = await r.content.readuntil(b"\n\n")
        second = await r.content.readuntil(b"\n\n")
        assert (await upstream.stats())["active_streams"] == 1
        with pytest.raises(TimeoutError):
            await r.content.read()
    assert first.startswith(b"data: ") and second.startswith(b"data: ")


async def test_no_usage_fault_omits_usage_everywhere(upstream: Upstream) -> None:
    """``no-usage`` leaves usage out of JSON replies and of streams that asked for it."""
    headers = {"x-mock-fault": "no-usage"}
    _, _, raw_json = await _post(upstream, "/chat/completions", CHAT, headers)
    _, _, raw_stream = await _post(upstream, "/chat/completions", WITH_USAGE, headers)
    assert "usage" not in orjson.loads(raw_json)
    assert b"usage" not in raw_stream and raw_stream.endswith(b"data: [DONE]\n\n")


async def test_no_done_fault_ends_cleanly_without_done(upstream: Upstream) -> None:
    """``no-done`` finishes the stream with the stop chunk and no [DONE]."""
    _, _, raw = await _post(upstream, "/chat/completions", STREAM, {"x-mock-fault": "no-done"})
    assert b"[DONE]" not in raw
    assert _chunks(raw)[-1]["choices"][0]["finish_reason"] == "stop"


async def test_no_done_fault_drops_responses_completed(upstream: Upstream) -> None:
    """Under ``no-done`` a Responses stream lacks its terminal response.completed."""
    body = {"model": "m", "input": "x", "stream": True}
    _, _, raw = await _post(upstream, "/responses", body, {"x-mock-fault": "no-done"})
    assert b"response.output_item.done" in raw and b"response.completed" not in raw


async def test_slow_body_sends_json_in_parts(upstream: Upstream) -> None:
    """``slow-body`` delivers a complete JSON body with its length, in several reads."""
    headers = {"x-mock-fault": "slow-body"}
    async with upstream.session.post(
        f"{upstream.url}/chat/completions", json=CHAT, headers=headers
    ) as r:
        reads = [chunk async for chunk in r.content.iter_any()]
        length = int(r.headers["Content-Length"])
    body = b"".join(reads)
    assert len(reads) > 1 and len(body) == length
    assert orjson.loads(body)["object"] == "chat.completion"


# --- observability ---------------------------------------------------------------------------


async def test_requests_record_headers_query_and_body(upstream: Upstream) -> None:
    """/mock/requests lists the last requests oldest first, header names lower-cased."""
    body = orjson.dumps(CHAT)
    headers = {"X-Custom-Thing": "yes"}
    async with upstream.session.post(
        f"{upstream.url}/chat/completions", data=body, headers=headers
    ) as r:
        assert r.status == 200
    async with upstream.session.get(f"{upstream.url}/files?purpose=batch") as r:
        assert r.status == 200
    first, second = await upstream.requests(2)
    assert first["path"] == "/v1/chat/completions" and first["method"] == "POST"
    assert first["headers"]["x-custom-thing"] == "yes"
    assert first["body_bytes"] == len(body)
    assert second["query"] == "purpose=batch" and second["body_bytes"] == 0


async def test_stats_count_requests_by_path_but_not_mock_paths(upstream: Upstream) -> None:
    """/mock/stats counts /v1 requests per path; its own calls are not counted."""
    await _post(upstream, "/chat/completions", CHAT)
    await _post(upstream, "/embeddings", {"model": "m", "input": "x"})
    await upstream.requests()
    stats = await upstream.stats()
    assert stats["requests"] == 2
    assert stats["by_path"] == {"/v1/chat/completions": 1, "/v1/embeddings": 1}


async def test_reset_clears_counts_and_records(upstream: Upstream) -> None:
    """POST /mock/reset forgets every request seen so far."""
    await _post(upstream, "/chat/completions", CHAT)
    async with upstream.session.post(f"http://127.0.0.1:{upstream.port}/mock/reset") as r:
        assert r.status == 200
    assert (await upstream.stats())["requests"] == 0
    assert await upstream.requests() == []


async def test_records_are_a_ring_of_200(upstream: Upstream) -> None:
    """Only the last 200 requests are kept, and ``limit`` is capped there."""
    for _ in range(205):
        async with upstream.session.get(f"{upstream.url}/models") as r:
            await r.read()
    records = await upstream.requests(1000)
    assert len(records) == 200


async def test_open_connections_return_to_zero(upstream: Upstream) -> None:
    """Connections are counted while clients hold them and released when clients close."""
    clients = [aiohttp.ClientSession() for _ in range(3)]
    for client in clients:
        async with client.get(f"{upstream.url}/models") as r:
            await r.read()
    assert (await upstream.stats())["open_connections"] == 3
    for client in clients:
        await client.close()

    async def released() -> bool:
        return int((await upstream.stats())["open_connections"]) == 0

    await _eventually(released)


async def test_client_leaving_mid_stream_ends_the_stream(upstream: Upstream) -> None:
    """A client that leaves a paced stream leaves no active stream or connection behind."""
    headers = {"x-mock-chunks": "1000", "x-mock-chunk-delay-ms": "5"}
    async with aiohttp.ClientSession() as client:
        async with client.post(
            f"{upstream.url}/chat/completions", json=STREAM, headers=headers
        ) as r:
            await r.content.readuntil(b"\n\n")
            assert (await upstream.stats())["active_streams"] == 1

    async def released() -> bool:
        stats = await upstream.stats()
        return int(stats["active_streams"]) == int(stats["open_connections"]) == 0

    await _eventually(released)


# --- pass-through targets --------------------------------------------------------------------


async def test_transcription_hashes_the_streamed_multipart_body(upstream: Upstream) -> None:
    """A multipart upload is answered with its exact size and SHA-256."""
    form = aiohttp.FormData()
    form.add_field("model", "whisper-1")
    form.add_field("file", os.urandom(300_000), filename="a.mp3", content_type="audio/mpeg")
    payload = form()
    collected = bytearray()

    class Sink:
        async def write(self, chunk: bytes) -> None:
            collected.extend(chunk)

    await payload.write(Sink())  # type: ignore[arg-type]
    headers = {"Content-Type": payload.content_type}
    async with upstream.session.post(
        f"{upstream.url}/audio/transcriptions", data=bytes(collected), headers=headers
    ) as r:
        answer = await r.json()
    assert answer["bytes_received"] == len(collected)
    assert answer["sha256"] == hashlib.sha256(collected).hexdigest()
    assert answer["text"]


async def test_speech_streams_the_requested_bytes(upstream: Upstream) -> None:
    """Speech is audio/mpeg of ``x-mock-bytes`` bytes, sent chunked."""
    body = {"model": "tts-1", "input": "hi", "voice": "alloy"}
    status, headers, data = await _post(upstream, "/audio/speech", body, {"x-mock-bytes": "200001"})
    assert status == 200 and headers["Content-Type"] == "audio/mpeg"
    assert headers["Transfer-Encoding"] == "chunked" and len(data) == 200_001


async def test_speech_defaults_to_one_mebibyte(upstream: Upstream) -> None:
    """Without ``x-mock-bytes`` speech is exactly 1 MiB."""
    _, _, data = await _post(upstream, "/audio/speech", {"model": "tts-1", "input": "hi"})
    assert len(data) == 1024 * 1024


async def test_images_and_moderations(sdk: openai.AsyncOpenAI) -> None:
    """Image generation and moderation answers parse in the SDK."""
    images = await sdk.images.generate(model="dall-e-3", prompt="a cat", n=2)
    assert images.data is not None and len(images.data) == 2
    moderation = await sdk.moderations.create(input=["a", "b"])
    assert [result.flagged for result in moderation.results] == [False, False]


async def test_file_upload_and_list(sdk: openai.AsyncOpenAI) -> None:
    """A file upload reports its size and purpose; the list is a page."""
    uploaded = await sdk.files.create(file=("data.jsonl", b"{}\n" * 1000), purpose="batch")
    assert (uploaded.bytes, uploaded.filename, uploaded.purpose) == (3000, "data.jsonl", "batch")
    page = await sdk.files.list()
    assert page.data == []


async def test_any_other_path_is_echoed(upstream: Upstream) -> None:
    """Any other method and /v1 path is echoed back with the body's size and hash."""
    async with upstream.session.delete(
        f"{upstream.url}/vector_stores/vs_1?force=1", data=b"abc"
    ) as r:
        echoed = await r.json()
    assert (echoed["method"], echoed["path"], echoed["query"]) == (
        "DELETE",
        "/v1/vector_stores/vs_1",
        "force=1",
    )
    assert echoed["body_bytes"] == 3 and echoed["body_sha256"] == hashlib.sha256(b"abc").hexdigest()


# --- the blocking entry point ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_run_serves_until_sigterm() -> None:
    """``run`` blocks serving and stops cleanly on SIGTERM, writing nothing but log events."""
    port = _free_port()
    code = f"from sentinel.mock import MockSettings, run; run('127.0.0.1:{port}', MockSettings())"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as client:

            async def serving() -> bool:
                try:
                    async with client.get(f"http://127.0.0.1:{port}/v1/models") as r:
                        return r.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await _eventually(serving)
        child.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(child.communicate(), 30)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert child.returncode == 0 and stderr == b""
    assert all(b"mock_upstream_" in line for line in stdout.splitlines())
