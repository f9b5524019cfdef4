"""Putting replies on the wire: the fast path, paced parts, and the faults that break the transport.

A reply is either one body or a list of parts (SSE frames, audio chunks). With no delay and no
fault it goes out in a single write; otherwise parts are written one by one, ``chunk_delay``
apart, and ``die-after:<n>`` / ``stall-after:<n>`` cut the reply after ``n`` parts. Stalls end
when the client goes away (``serve`` and ``run`` enable aiohttp's handler cancellation) or when
the app shuts down.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sentinel.mock.errors import JSON_TYPE
from sentinel.mock.observer import Observer, RequestRecord
from sentinel.mock.prompts import parse_body
from sentinel.mock.settings import Knobs, MockSettings

__all__ = ["Call", "MockState", "reset_connection", "send_json", "send_parts", "stall"]

SSE_TYPE = "text/event-stream; charset=utf-8"
SLOW_BODY_PARTS = 8
SLOW_BODY_DELAY_S = 0.01  # between parts when no chunk delay is set
_CUT_FAULTS = frozenset({"die-after", "stall-after"})
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


@dataclass(slots=True)
class MockState:
    """Everything the handlers share, built once by ``create_app``."""

    settings: MockSettings
    knobs: Knobs
    observer: Observer
    closing: asyncio.Event
    """Set when the app shuts down: stalled and paced replies stop."""


@dataclass(slots=True)
class Call:
    """One request in flight, with the knobs it runs under."""

    request: web.Request
    state: MockState
    knobs: Knobs
    record: RequestRecord
    number: int

    @property
    def request_id(self) -> str:
        """An OpenAI-like ``x-request-id`` for the response."""
        return f"req_{self.number:032x}"

    def headers(self, content_type: str = JSON_TYPE) -> dict[str, str]:
        """Response headers: the content type and ``x-request-id``."""
        return {"Content-Type": content_type, "x-request-id": self.request_id}

    async def read(self) -> bytes:
        """The whole request body, its size noted in the record."""
        body = await self.request.read()
        self.record.body_bytes = len(body)
        return body

    async def digest(self) -> tuple[int, str]:
        """Read the body as it streams in, without keeping it: its size and SHA-256."""
        sha256 = hashlib.sha256()
        size = 0
        async for chunk in self.request.content.iter_any():
            sha256.update(chunk)
            size += len(chunk)
        self.record.body_bytes = size
        return size, sha256.hexdigest()

    async def json(self) -> dict[str, Any]:
        """The request body as a JSON object, or a 400."""
        return parse_body(await self.read())


async def send_json(call: Call, body: bytes) -> web.StreamResponse:
    """A JSON reply; under ``slow-body`` or a cut fault it is written in parts."""
    fault = call.knobs.fault
    headers = call.headers()
    if fault is None or not (fault.kind in _CUT_FAULTS or fault.kind == "slow-body"):
        return web.Response(body=body, headers=headers)
    size = max(1, -(-len(body) // SLOW_BODY_PARTS))
    parts = [body[start : start + size] for start in range(0, len(body), size)]
    response = web.StreamResponse(headers=headers)
    response.content_length = len(body)
    delay = call.knobs.chunk_delay_s
    if fault.kind == "slow-body":
        delay = delay or SLOW_BODY_DELAY_S
    return await _write_parts(call, response, parts, delay)


async def send_parts(
    call: Call, parts: Sequence[bytes], content_type: str = SSE_TYPE, *, coalesce: bool = True
) -> web.StreamResponse:
    """A streamed (chunked) reply made of ``parts``, paced and cut as the knobs say.

    With ``coalesce`` and nothing to pace or cut, the parts go out in one write.
    """
    knobs = call.knobs
    fault = knobs.fault
    plain = knobs.chunk_delay_s == 0 and (fault is None or fault.kind not in _CUT_FAULTS)
    if coalesce and plain:
        response = web.Response(body=b"".join(parts), headers=call.headers(content_type))
        response.enable_chunked_encoding()
        return response
    stream = web.StreamResponse(headers=call.headers(content_type))
    return await _write_parts(call, stream, parts, knobs.chunk_delay_s)


async def _write_parts(
    call: Call, response: web.StreamResponse, parts: Sequence[bytes], delay: float
) -> web.StreamResponse:
    fault = call.knobs.fault
    cut = fault.arg if fault is not None and fault.kind in _CUT_FAULTS else None
    closing = call.state.closing
    observer = call.state.observer
    observer.active_streams += 1
    try:
        await response.prepare(call.request)
        for index, part in enumerate(parts if cut is None else parts[:cut]):
            if index and delay:
                await asyncio.sleep(delay)
            if closing.is_set():
                return _close(call.request, response)
            await response.write(part)
        if fault is None or cut is None:
            await response.write_eof()
            return response
        if fault.kind == "stall-after":
            await closing.wait()
        return _close(call.request, response)
    except ConnectionError:  # the client left mid-reply: nothing more to send
        return response
    finally:
        observer.active_streams -= 1


def _close(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Flush what was written, then FIN: the body ends without its terminator."""
    if request.transport is not None:
        request.transport.close()
    return response


def reset_connection(request: web.Request) -> web.StreamResponse:
    """Drop the connection with a TCP reset and no response at all."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except OSError:  # pragma: no cover - then abort() sends a plain FIN
                pass
        transport.abort()
    return web.Response()  # never sent: the transport is gone


async def stall(call: Call) -> web.StreamResponse:
    """Send nothing until the client leaves (the handler is cancelled) or the app stops."""
    await call.state.closing.wait()
    return reset_connection(call.request)
