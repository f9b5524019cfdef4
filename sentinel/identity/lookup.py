"""One question to the identity service: a key's digest in; a principal, "unknown" or a failure out.

The protocol (README, "Identity service")::

    POST <url>   {"key_sha256": "<64 lowercase hex>"}   Authorization: Bearer <token>
    200 {"name": ..., "team"?, "models"?, limits?, budgets?}   the key's principal
    404                                                        no such key
    429 + Retry-After                                          asked too often: back off
    anything else, a timeout, a bad body                       a failure (never "unknown")

Only 200 and 404 are answers; everything else is a ``Failed`` that the cache must not learn
from. Fields the service sends beyond the principal fields are ignored (``admin`` above all:
it never comes from outside the TOML file), and named in ``Found.ignored`` for the log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp
import orjson

from sentinel.auth.fields import FIELD_NAMES, FieldProblem, PrincipalFields, read_fields
from sentinel.upstream.client import read_capped
from sentinel.usage.sinks.webhook import parse_retry_after

__all__ = [
    "MAX_ANSWER_BYTES",
    "Answer",
    "Failed",
    "Found",
    "Unknown",
    "ask",
    "read_answer",
]

MAX_ANSWER_BYTES = 64 * 1024
"""A principal is a few hundred bytes; a longer answer is a broken service, not a principal."""
DEFAULT_BACKOFF_MS = 1_000
"""How long a 429 without a usable ``Retry-After`` silences the lookups."""
MAX_BACKOFF_MS = 3_600_000
"""The longest ``Retry-After`` honoured (an hour): a bad header must not silence it forever."""


@dataclass(frozen=True, slots=True)
class Found:
    """The service knows the key: its principal's fields."""

    fields: PrincipalFields
    ignored: tuple[str, ...] = ()  # fields of the answer that are not principal fields


@dataclass(frozen=True, slots=True)
class Unknown:
    """The service does not know the key (404)."""


@dataclass(frozen=True, slots=True)
class Failed:
    """No answer: ``reason`` for the log; ``backoff_ms`` when the service asked for quiet (429)."""

    reason: str
    backoff_ms: int | None = None


Answer = Found | Unknown | Failed


async def ask(
    session: aiohttp.ClientSession,
    url: str,
    digest: bytes,
    *,
    token: str | None,
    deadline: aiohttp.ClientTimeout,
) -> Answer:
    """POST ``digest`` to ``url`` within ``deadline``; every failure is a ``Failed``."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Accept-Encoding": "identity",  # the session does not decompress
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = orjson.dumps({"key_sha256": digest.hex()})
    try:
        async with session.post(
            url, data=body, headers=headers, timeout=deadline, allow_redirects=False
        ) as response:
            status = response.status
            retry_after = response.headers.get("Retry-After")
            if status != 200:
                return read_answer(status, b"", retry_after)
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding != "identity":
                return Failed(f"answer encoded as {encoding[:20]!r}")
            data = await read_capped(response, MAX_ANSWER_BYTES)
    except TimeoutError:
        return Failed("timeout")
    except aiohttp.ClientError as error:
        return Failed(type(error).__name__)
    if data is None:
        return Failed("answer too long")
    return read_answer(status, data, retry_after)


def read_answer(status: int, body: bytes, retry_after: str | None = None) -> Answer:
    """What a response of ``status`` with ``body`` means (pure: the protocol in one place)."""
    if status == 404:
        return Unknown()
    if status == 429:
        seconds = parse_retry_after(retry_after, time.time())
        backoff = DEFAULT_BACKOFF_MS if seconds is None else max(1, int(seconds * 1000))
        return Failed("HTTP 429", backoff_ms=min(backoff, MAX_BACKOFF_MS))
    if status != 200:
        return Failed(f"HTTP {status}")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Failed("answer is not JSON")
    if not isinstance(data, dict):
        return Failed("answer is not a JSON object")
    ignored = tuple(sorted(str(name)[:64] for name in data if name not in FIELD_NAMES))
    try:
        fields = read_fields({k: v for k, v in data.items() if k in FIELD_NAMES})
    except FieldProblem as problem:
        return Failed(f"bad field {problem.field!r}: {problem.message[:200]}")
    return Found(fields, ignored[:16])
