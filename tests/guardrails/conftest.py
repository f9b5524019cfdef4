"""A recording upstream for the guardrails tests: it keeps every JSON body it receives (so a
test sees exactly what was sent on) and answers with a reply the test sets."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import pytest
from aiohttp import web

from sentinel.config import Config
from sentinel.config.guardrails import GuardrailsConfig, read_guardrails
from sentinel.config.table import Table
from tests.conftest import make_config


@dataclass
class Recorder:
    """The upstream: ``bodies`` received, and the reply ``text`` (streamed in ``pieces``)."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    pieces: list[str] = field(default_factory=lambda: ["Hello", " there"])
    logprobs: bool = False
    delay_s: float = 0.0  # between streamed pieces

    def config(self, toml: str) -> Config:
        """A gateway config with these guardrails, sending to this upstream."""
        return replace(make_config(self.url), guardrails=guardrails(toml))


RECORDER = web.AppKey("recorder", Recorder)


def guardrails(toml: str) -> GuardrailsConfig:
    """``[[rules]]`` and ``[pii]`` read from TOML text; a problem fails the test."""
    problems: list[str] = []
    root = Table(tomllib.loads(toml), "", problems, {})
    found = read_guardrails(root.tables("rules"), root.table("pii"))
    assert problems == []
    return found


def _chunk(text: str, finish: str | None, logprobs: bool) -> bytes:
    choice: dict[str, Any] = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
    if logprobs:
        choice["logprobs"] = {"content": [{"token": text, "logprob": -0.1}]}
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    return b"data: " + orjson.dumps({**body, "choices": [choice]}) + b"\n\n"


async def _chat(request: web.Request) -> web.StreamResponse:
    recorder: Recorder = request.app[RECORDER]
    body = await request.json()
    recorder.bodies.append(body)
    text = "".join(recorder.pieces)
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    if not body.get("stream"):
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
            "logprobs": {"content": []} if recorder.logprobs else None,
        }
        reply = {"id": "c1", "object": "chat.completion", "model": "m", "choices": [choice]}
        return web.json_response({**reply, "usage": usage})
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for piece in recorder.pieces:
        await response.write(_chunk(piece, None, recorder.logprobs))
        if recorder.delay_s:
            await asyncio.sleep(recorder.delay_s)
    await response.write(_chunk("", "stop", False))
    usage_chunk = {"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": usage}
    await response.write(b"data: " + orjson.dumps(usage_chunk) + b"\n\ndata: [DONE]\n\n")
    await response.write_eof()
    return response


async def _embeddings(request: web.Request) -> web.Response:
    request.app[RECORDER].bodies.append(await request.json())
    data = [{"object": "embedding", "index": 0, "embedding": [0.0]}]
    usage = {"prompt_tokens": 3, "total_tokens": 3}
    return web.json_response({"object": "list", "data": data, "model": "m", "usage": usage})


async def _other(request: web.Request) -> web.Response:
    body = await request.json() if request.can_read_body else {}
    request.app[RECORDER].bodies.append({"path": request.path, **body})
    return web.json_response({"object": "ok"})


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    """The recording upstream on a free loopback port."""
    found = Recorder()
    app = web.Application()
    app[RECORDER] = found
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/completions", _embeddings)
    app.router.add_post("/v1/embeddings", _embeddings)
    app.router.add_route("*", "/v1/{tail:.*}", _other)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    found.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield found
    finally:
        await runner.cleanup()
