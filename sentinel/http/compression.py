"""gzip in both directions: JSON replies compressed for clients that accept it, and gzip
request bodies inflated as they arrive, never past ``max_body_bytes``.

Replies: ``GzipReplies`` compresses a reply only when it is JSON, sent whole (its start, then
one body message), at least ``[compression] min_bytes`` long, not already encoded (a
pass-through reply keeps the encoding the upstream chose for the client's own
``Accept-Encoding``), and smaller once compressed. Anything else, event streams above all,
goes through untouched: a stream's start has no ``content-length``, so it is never held.
The ``send`` of a client whose ``Accept-Encoding`` does not take gzip is never wrapped.

Requests: ``inflating`` wraps ``receive`` so that each chunk of a gzip body is inflated as it
arrives by a ``GzipDecoder``, which never produces more than ``limit + 1`` bytes in all: a zip
bomb is a 413 after at most the limit was inflated, a malformed or truncated body a 400, and
any other ``Content-Encoding`` a 415.
"""

from __future__ import annotations

import asyncio
import functools
import re
import zlib

from sentinel.config.edge import CompressionConfig
from sentinel.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from sentinel.http.asgi import ASGIApp, Message, Receive, Scope, Send

__all__ = ["GzipDecoder", "GzipReplies", "accepts_gzip", "inflating"]

_GZIP_WBITS = 16 + zlib.MAX_WBITS  # the gzip container, not raw deflate or zlib
_IN_THREAD_BYTES = 256 * 1024  # larger replies are compressed off the event loop
_QVALUE = re.compile(rb"\s*q\s*=\s*(0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)\s*", re.IGNORECASE)
_GZIP_NAMES = (b"gzip", b"x-gzip")  # RFC 9110 §8.4.1.3: x-gzip is gzip


# --- replies ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def accepts_gzip(accept_encoding: bytes) -> bool:
    """Whether an ``Accept-Encoding`` value takes gzip: listed (or ``*``) with a q above 0.

    Cached: a handful of distinct values (one per client library) is all a gateway sees.
    """
    named: float | None = None
    star: float | None = None
    for item in accept_encoding.split(b","):
        coding, _, params = item.partition(b";")
        coding = coding.strip().lower()
        if coding in _GZIP_NAMES:
            named = max(named or 0.0, _quality(params))
        elif coding == b"*":
            star = _quality(params)
    quality = named if named is not None else star
    return quality is not None and quality > 0


def _quality(params: bytes) -> float:
    """The ``q`` of one coding's parameters: 1 when absent, 0 when it does not parse."""
    for param in params.split(b";"):
        if param.strip()[:1].lower() != b"q":
            continue
        match = _QVALUE.fullmatch(param)
        return float(match.group(1)) if match is not None else 0.0
    return 1.0


def _accepts_gzip(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request's (first) ``Accept-Encoding`` takes gzip."""
    for name, value in headers:
        if name == b"accept-encoding":
            return accepts_gzip(value)
    return False


class GzipReplies:
    """Pure ASGI middleware: gzip whole JSON replies for clients that accept it (see the module
    docstring)."""

    def __init__(self, app: ASGIApp, config: CompressionConfig) -> None:
        self.app = app
        self._min_bytes = max(config.min_bytes, 1)
        self._level = config.level

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] == "HEAD"
            or not _accepts_gzip(scope["headers"])
        ):
            await self.app(scope, receive, send)
            return
        min_bytes, level = self._min_bytes, self._level
        held: Message | None = None
        passing = False

        # A closure, not a class: it runs on every chunk of every stream of a client that
        # accepts gzip, and a closure's ``passing`` is the cheapest test there is.
        async def send_gzipped(message: Message) -> None:
            nonlocal held, passing
            if passing:
                await send(message)
            elif message["type"] == "http.response.start" and held is None:
                if _is_compressible(message.get("headers", ()), min_bytes):
                    held = message  # protocol: the start may wait for the first body
                else:
                    passing = True
                    await send(message)
            else:
                passing = True
                start, held = held, None
                for part in await _gzipped(start, message, level):
                    await send(part)

        await self.app(scope, receive, send_gzipped)


async def _gzipped(start: Message | None, message: Message, level: int) -> tuple[Message, ...]:
    """What to send for a held ``start`` and the ``message`` after it: gzipped when that
    message is the whole body and compressing it gains anything, else both as they are."""
    if start is None:
        return (message,)
    body: bytes = message.get("body", b"")
    if message["type"] != "http.response.body" or message.get("more_body", False):
        return start, message  # not sent whole: relayed as it comes
    compressed = await _gzip(body, level)
    if len(compressed) >= len(body):
        return start, message
    start["headers"] = _gzip_headers(start["headers"], len(compressed))
    return start, {"type": "http.response.body", "body": compressed, "more_body": False}


def _is_compressible(headers: list[tuple[bytes, bytes]], min_bytes: int) -> bool:
    """A JSON reply of known length, at least ``min_bytes``, that nobody encoded yet."""
    is_json = False
    length = 0
    for name, value in headers:
        if name == b"content-type":
            is_json = value.startswith(b"application/json")
        elif name == b"content-length":
            length = int(value) if value.isdigit() else 0
        elif name == b"content-encoding":
            return False
    return is_json and length >= min_bytes


def _gzip_headers(headers: list[tuple[bytes, bytes]], length: int) -> list[tuple[bytes, bytes]]:
    kept = [(name, value) for name, value in headers if name != b"content-length"]
    kept.append((b"content-length", str(length).encode("ascii")))
    kept.append((b"content-encoding", b"gzip"))
    kept.append((b"vary", b"accept-encoding"))
    return kept


async def _gzip(body: bytes, level: int) -> bytes:
    """``body`` as gzip (no name, time 0); a large one in a thread (zlib lets go of the GIL),
    so that a 2 MB embeddings reply does not hold up every stream of the process."""
    if len(body) < _IN_THREAD_BYTES:
        return zlib.compress(body, level, _GZIP_WBITS)
    return await asyncio.to_thread(zlib.compress, body, level, _GZIP_WBITS)


# --- requests --------------------------------------------------------------------------------


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is larger than the limit of {limit} bytes once decompressed."
    )


def _malformed(detail: str) -> InvalidRequest:
    return InvalidRequest(
        "The request body is not valid gzip, as its Content-Encoding says it is.",
        code="invalid_encoding",
        param="content-encoding",
        detail=detail,
    )


class GzipDecoder:
    """Inflates a gzip body fed chunk by chunk; never more than ``limit + 1`` bytes in all.

    Bodies of several gzip members (concatenated files) are read member by member.
    """

    __slots__ = ("_inflater", "_limit", "size")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._inflater = zlib.decompressobj(_GZIP_WBITS)
        self.size = 0  # inflated bytes so far

    def feed(self, chunk: bytes) -> bytes:
        """The inflated bytes of ``chunk``; 413 as soon as the total passes the limit, 400
        when it is not gzip."""
        parts: list[bytes] = []
        data = chunk
        while data:
            if self._inflater.eof:  # the next member of a multi-member body
                self._inflater = zlib.decompressobj(_GZIP_WBITS)
            room = self._limit - self.size + 1
            try:
                out = self._inflater.decompress(data, room)
            except zlib.error as error:
                raise _malformed(str(error)) from None
            self.size += len(out)
            if self.size > self._limit:
                raise _too_large(self._limit)
            parts.append(out)
            # Input left over: the next member's, or what ``room`` stopped (never: that
            # much output was already over the limit).
            inflater = self._inflater
            data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def finish(self) -> None:
        """The body ended: 400 unless its last member was complete."""
        if not self._inflater.eof:
            raise _malformed("truncated")


def inflating(receive: Receive, encoding: bytes | None, limit: int) -> Receive:
    """``receive`` with a gzip body inflated as it arrives (``encoding`` is the request's
    ``Content-Encoding``); ``receive`` itself for an unencoded body; 415 for any other."""
    if encoding is None:
        return receive
    name = encoding.strip().lower()
    if name in (b"", b"identity"):
        return receive
    if name not in _GZIP_NAMES:
        raise UnsupportedMediaType(
            "This endpoint takes a JSON body that is uncompressed or gzip-compressed; "
            "use Content-Encoding: gzip or none.",
            code="unsupported_content_encoding",
            param="content-encoding",
        )
    decoder = GzipDecoder(limit)

    async def receive_inflated() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            body = decoder.feed(message.get("body", b""))
            if not message.get("more_body", False):
                decoder.finish()
            message = {**message, "body": body}
        return message

    return receive_inflated
