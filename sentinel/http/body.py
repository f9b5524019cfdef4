"""Request bodies: read within ``max_body_bytes`` and ``body_timeout_ms``, or streamed through
with the same caps; JSON bodies parsed strictly (a key repeated in an object is a 400)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson

from sentinel.deadline import LooseDeadline
from sentinel.errors import InvalidRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from sentinel.http.asgi import Message, Receive
from sentinel.http.compression import inflating

__all__ = ["BodyStream", "ClientGone", "ClientStalled", "parse_json_object", "read_body"]


class ClientGone(Exception):
    """The client disconnected before Sentinel could answer (logged as status 499)."""

    outcome = "client_disconnected"


class ClientStalled(ClientGone):
    """The client stopped reading: one write waited longer than ``write_timeout_ms``."""

    outcome = "client_stalled"


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")


def _too_slow() -> RequestTimeout:
    return RequestTimeout("The request body did not arrive within the time limit.")


async def read_body(
    receive: Receive,
    limit: int,
    declared: int | None,
    deadline: float | None = None,
    *,
    encoding: bytes | None = None,
) -> bytes:
    """The whole request body; 413 as soon as it is known to exceed ``limit``, 408 when it has
    not all arrived by ``deadline`` (``loop.time()`` seconds). A gzip body (``encoding``, its
    ``Content-Encoding``) is inflated as it arrives, inflated size within ``limit`` too; any
    other encoding is a 415."""
    if declared is not None and declared > limit:
        raise _too_large(limit)
    receive = inflating(receive, encoding, limit)
    if deadline is None:
        return await _read_body(receive, limit)
    try:
        with LooseDeadline(deadline):
            return await _read_body(receive, limit)
    except TimeoutError:
        raise _too_slow() from None


async def _read_body(receive: Receive, limit: int) -> bytes:
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise _too_large(limit)
        return body
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


class BodyStream:
    """A request body forwarded as it arrives, counted against ``limit`` on the way."""

    def __init__(
        self, receive: Receive, limit: int, prefix: bytes = b"", deadline: float | None = None
    ) -> None:
        self._receive = receive
        self._limit = limit
        self._prefix = prefix
        self._deadline = deadline
        self.size = 0
        self.exceeded = False
        self.client_gone = False
        self.timed_out = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's chunks; stops early (flagging why) on overflow or disconnect."""
        if self._prefix:
            self.size = len(self._prefix)
            yield self._prefix
        while True:
            message = await self._next()
            if message["type"] == "http.disconnect":
                self.client_gone = True
                raise ClientGone()
            chunk = message.get("body", b"")
            self.size += len(chunk)
            if self.size > self._limit:
                self.exceeded = True
                raise _too_large(self._limit)
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    async def _next(self) -> Message:
        if self._deadline is None:
            return await self._receive()
        try:
            with LooseDeadline(self._deadline):
                return await self._receive()
        except TimeoutError:
            self.timed_out = True
            raise _too_slow() from None

    def failure(self) -> Exception | None:
        """Why the upload stopped early, if it did: that beats whatever aiohttp reports."""
        if self.exceeded:
            return _too_large(self._limit)
        if self.timed_out:
            return _too_slow()
        if self.client_gone:
            return ClientGone()
        return None


def parse_json_object(body: bytes, content_encoding: bytes | None) -> dict[str, Any]:
    """The body as a JSON object, or a 400/415 that says what is wrong with it."""
    if content_encoding is not None and content_encoding.strip().lower() != b"identity":
        raise UnsupportedMediaType(
            "This endpoint takes an uncompressed JSON body; remove Content-Encoding."
        )
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be valid JSON.",
            code="invalid_json",
            detail=str(exc),
        ) from None
    if not isinstance(parsed, dict):
        raise InvalidRequest(
            "The request body must be a JSON object.", code="invalid_type", param="body"
        )
    if _may_repeat_a_key(body, parsed):
        # A parser that keeps the first of two values would run what Sentinel never judged.
        where = _first_duplicate(json.loads(body, object_pairs_hook=_Pairs), "")
        if where is None:
            return parsed  # the quick test's false alarm: no key is repeated
        raise InvalidRequest(
            f"The JSON body repeats the key {where or 'of an object'!r}; "
            "each key may appear only once in an object.",
            code="duplicate_key",
            param=where,
        )
    return parsed


# In JSON a colon outside a string separates a key from its value. The parse keeps one value
# per key, and orjson writes every colon inside a string back as a colon; so a body that
# spells none as a \u003a escape holds exactly as many colons as its re-serialization unless
# it repeats a key (each repeat brings its own colon), and then it holds more.
_COLON_ESCAPE = re.compile(rb"\\u003[aA]")


def _may_repeat_a_key(body: bytes, parsed: dict[str, Any]) -> bool:
    """False only when ``body`` certainly repeats no key (the usual case: two counts and one
    re-serialization, well under a microsecond); True sends it to the exact check."""
    if b"\\u003" in body and _COLON_ESCAPE.search(body) is not None:
        return True
    return body.count(b":") != orjson.dumps(parsed).count(b":")


class _Pairs(list[tuple[str, Any]]):
    """A JSON object with every key it was written with, in order (for the error's path)."""


def _first_duplicate(value: Any, path: str) -> str | None:
    """The JSON path of the first repeated key under ``value`` (``a.b[2].c``), or None."""
    if isinstance(value, _Pairs):
        seen: set[str] = set()
        for key, item in value:
            where = f"{path}.{key}" if path else key
            if key in seen:
                return where
            seen.add(key)
            found = _first_duplicate(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _first_duplicate(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None
