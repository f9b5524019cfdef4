"""A deliberately lenient OpenAI-compatible upstream for security tests.

It plays the provider that sits behind nginx or a framework that merges slashes: it answers
every method on every path, routing by what the path *ends with* once trailing slashes,
duplicate slashes and ``;params`` are dropped (see ``lenient_path``). So whatever target
Sentinel forwards, something answers, and the test reads the raw request line, headers and
body it forwarded from ``requests``. Every answer carries the headers a real provider leaks
(``LEAKED_HEADERS``) so that tests can check Sentinel strips them.

It is aiohttp's low-level ``web.Server``: no router, no URL normalisation, bodies recorded
as they arrived (no decompression), and it runs in the test's own event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeAlias

import orjson
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

__all__ = [
    "LEAKED_HEADERS",
    "USAGE_CHAT",
    "USAGE_IMAGES",
    "USAGE_RESPONSES",
    "LenientUpstream",
    "SeenRequest",
    "lenient_path",
    "start_lenient",
]

USAGE_CHAT = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
USAGE_RESPONSES = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
USAGE_IMAGES = {"input_tokens": 50, "output_tokens": 100, "total_tokens": 150}

LEAKED_HEADERS: dict[str, str] = {
    "openai-organization": "org-secret-account",
    "openai-project": "proj_secret",
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-remaining-requests": "9999",
    "x-ratelimit-limit-tokens": "100",
    "x-ratelimit-remaining-tokens": "99",
    "x-ratelimit-reset-requests": "6ms",
    "set-cookie": "__cf_bm=secret; path=/",
    "openai-processing-ms": "12",
}
"""Sent on every answer, with ``x-request-id: req_upstream_<n>`` besides."""

_CLIENT_MAX_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True)
class _Stream:
    """An answer sent as ``text/event-stream``, one write per frame."""

    frames: list[bytes]


_Answer: TypeAlias = tuple[int, Any]
"""A status and its body: JSON-able, raw ``bytes`` or a ``_Stream``."""


@dataclass(frozen=True)
class SeenRequest:
    """One request exactly as it reached the upstream."""

    n: int
    """Its sequence number (from 1); the ``<n>`` in the ids and ``x-request-id`` it got."""
    method: str
    target: str
    """The request-line target as received, query included, nothing decoded."""
    version: str
    """``"HTTP/1.1"`` or ``"HTTP/1.0"``."""
    headers: list[tuple[str, str]]
    """Every header line in order, names in their original case, repeats kept."""
    body: bytes
    """The body after de-chunking, not decompressed."""

    @property
    def path(self) -> str:
        """The target as this lenient server understood it (see ``lenient_path``)."""
        return lenient_path(self.target)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.body)


def lenient_path(target: str) -> str:
    """The path a lenient server routes on: no query, scheme or authority, no ``;params``
    in any segment, no empty segments (so no duplicate or trailing slashes).

    Percent-escapes and dot segments are left alone: ``/v1/%2e%2e/x`` stays as it is.
    """
    path = target.split("?", 1)[0].split("#", 1)[0]
    if "://" in path:  # absolute-form target: http://host/path
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    segments = (segment.split(";", 1)[0] for segment in path.split("/"))
    return "/" + "/".join(segment for segment in segments if segment)


class LenientUpstream:
    """The running server on ``127.0.0.1:port``; start it with ``start_lenient()``."""

    def __init__(self) -> None:
        self.requests: list[SeenRequest] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.port = 0
        self._counter = itertools.count(1)
        self._runner: web.ServerRunner | None = None

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``, for targets outside ``/v1``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The base URL to configure as an upstream, ``http://127.0.0.1:<port>/v1``."""
        return f"{self.origin}/v1"

    @property
    def targets(self) -> list[str]:
        """The raw targets received so far, in order."""
        return [seen.target for seen in self.requests]

    @property
    def last(self) -> SeenRequest:
        """The latest request received."""
        return self.requests[-1]

    def clear(self) -> None:
        """Forget the recorded requests; files, batches and the id counter stay."""
        self.requests.clear()

    async def start(self) -> None:
        """Listen on a free loopback port; ``port`` holds it afterwards."""
        server = web.Server(
            self._handle,
            request_factory=self._make_request,
            auto_decompress=False,
            access_log=None,
            max_line_size=65536,
            max_field_size=65536,
            max_headers=1024,
        )
        self._runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def aclose(self) -> None:
        """Stop listening and drop open connections; safe to call twice."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LenientUpstream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        # web.Server's default factory caps bodies at 1 MiB; security tests send more.
        loop = asyncio.get_running_loop()
        return web.BaseRequest(
            message, payload, protocol, writer, task, loop, client_max_size=_CLIENT_MAX_SIZE
        )

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        n = next(self._counter)
        seen = SeenRequest(
            n=n,
            method=request.method,
            target=request.raw_path,
            version=f"HTTP/{request.version.major}.{request.version.minor}",
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
            body=await request.read(),
        )
        self.requests.append(seen)
        headers = {**LEAKED_HEADERS, "x-request-id": f"req_upstream_{n}"}
        body = _json_object(seen.body)
        status, content = self._answer(seen, body)
        if isinstance(content, _Stream):
            stream = web.StreamResponse(status=status, headers=headers)
            stream.content_type = "text/event-stream"
            stream.headers["cache-control"] = "no-cache"
            await stream.prepare(request)
            for frame in content.frames:
                await stream.write(frame)
            await stream.write_eof()
            return stream
        if isinstance(content, bytes):
            return web.Response(status=status, body=content, headers=headers)
        return web.Response(
            status=status,
            body=orjson.dumps(content),
            content_type="application/json",
            headers=headers,
        )

    def _answer(self, seen: SeenRequest, body: dict[str, Any]) -> _Answer:
        """Route on the last segments of the lenient path; anything unknown is echoed."""
        segments = ["", "", *seen.path.split("/")[1:]]
        prev2, prev, last = segments[-3:]
        n, now, streams = seen.n, int(time.time()), body.get("stream") is True
        if seen.method == "POST":
            if (prev, last) == ("chat", "completions"):
                return 200, _chat_stream(n, now, body) if streams else _chat(n, now, body)
            if last == "responses":
                return 200, _responses_stream(n, now, body) if streams else _resp(n, now, body)
            if (prev, last) == ("images", "generations"):
                data = [{"url": "https://img.invalid/1.png"}]
                return 200, {"created": now, "data": data, "usage": USAGE_IMAGES}
            if last == "files":
                return 200, self._create_file(n, now, seen.body)
            if last == "batches":
                return 200, self._create_batch(n, now, body)
        if seen.method == "GET":
            if last in ("files", "batches"):
                items = list(self._store(last).values())
                return 200, {"object": "list", "data": items, "has_more": False}
            if prev2 == "files" and last == "content":
                found = self._find("files", prev)
                return found if found[0] != 200 else (200, f"content of {prev}".encode())
            if prev in ("files", "batches"):
                return self._find(prev, last)
        if seen.method == "DELETE" and prev == "files":
            found = self._find("files", last)
            if found[0] == 200:
                del self.files[last]
                found = 200, {"id": last, "object": "file", "deleted": True}
            return found
        return 200, {"ok": True, "method": seen.method, "target": seen.target}

    def _store(self, kind: str) -> dict[str, dict[str, Any]]:
        return self.files if kind == "files" else self.batches

    def _find(self, kind: str, item_id: str) -> tuple[int, Any]:
        item = self._store(kind).get(item_id)
        if item is None:
            return _not_found("File" if kind == "files" else "Batch", item_id)
        return 200, item

    def _create_file(self, n: int, now: int, content: bytes) -> dict[str, Any]:
        file: dict[str, Any] = {
            "id": f"file-lenient-{n}",
            "object": "file",
            "bytes": len(content),
            "created_at": now,
            "filename": "x",
            "purpose": "assistants",
        }
        self.files[file["id"]] = file
        return file

    def _create_batch(self, n: int, now: int, body: dict[str, Any]) -> dict[str, Any]:
        batch: dict[str, Any] = {
            "id": f"batch_lenient_{n}",
            "object": "batch",
            "status": "validating",
            "input_file_id": body.get("input_file_id"),
            "output_file_id": f"file-lenient-out-{n}",
            "created_at": now,
        }
        self.batches[batch["id"]] = batch
        return batch


async def start_lenient() -> LenientUpstream:
    """A lenient upstream listening on a free loopback port; ``aclose()`` it when done."""
    upstream = LenientUpstream()
    await upstream.start()
    return upstream


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _not_found(kind: str, item_id: str) -> tuple[int, Any]:
    message = f"No such {kind} object: {item_id}"
    error = {"message": message, "type": "invalid_request_error", "param": "id", "code": None}
    return 404, {"error": error}


def _chat(n: int, now: int, body: dict[str, Any]) -> dict[str, Any]:
    message = {"role": "assistant", "content": "Hello from the lenient upstream."}
    return {
        "id": f"chatcmpl-lenient-{n}",
        "object": "chat.completion",
        "created": now,
        "model": body.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": USAGE_CHAT,
    }


def _resp(n: int, now: int, body: dict[str, Any]) -> dict[str, Any]:
    text = {"type": "output_text", "text": "Hello from the lenient upstream.", "annotations": []}
    message: dict[str, Any] = {
        "type": "message",
        "id": f"msg_lenient_{n}",
        "status": "completed",
        "role": "assistant",
        "content": [text],
    }
    return {
        "id": f"resp_lenient_{n}",
        "object": "response",
        "created_at": now,
        "status": "completed",
        "model": body.get("model"),
        "output": [message],
        "usage": USAGE_RESPONSES,
    }


def _sse(data: Any, event: str | None = None) -> bytes:
    frame = b"data: " + (data if isinstance(data, bytes) else orjson.dumps(data)) + b"\n\n"
    return frame if event is None else b"event: " + event.encode() + b"\n" + frame


def _chat_stream(n: int, now: int, body: dict[str, Any]) -> _Stream:
    """Two content chunks, a usage chunk when ``stream_options.include_usage``, ``[DONE]``."""
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    base: dict[str, Any] = {
        "id": f"chatcmpl-lenient-{n}",
        "object": "chat.completion.chunk",
        "created": now,
        "model": body.get("model"),
    }
    if include_usage:
        base["usage"] = None  # as OpenAI sends it on every chunk but the last
    deltas = [({"role": "assistant", "content": "Hello"}, None), ({"content": " world"}, "stop")]
    chunks = [
        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        for delta, finish in deltas
    ]
    if include_usage:
        chunks.append({**base, "choices": [], "usage": USAGE_CHAT})
    return _Stream([*map(_sse, chunks), _sse(b"[DONE]")])


def _responses_stream(n: int, now: int, body: dict[str, Any]) -> _Stream:
    """``response.created``, one text delta, ``response.completed`` carrying the usage."""
    final = _resp(n, now, body)
    created = {**final, "status": "in_progress", "output": [], "usage": None}
    events = [
        ("response.created", {"type": "response.created", "response": created}),
        ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "Hi"}),
        ("response.completed", {"type": "response.completed", "response": final}),
    ]
    return _Stream([_sse(data, event) for event, data in events])
