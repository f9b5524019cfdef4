"""The request path's two calls into the guardrails: a request body, and a JSON reply.

Both screen in place and hand back the bytes to send on: the very bytes that came when nothing
was redacted, else the re-serialized body, so what the upstream (or the client) receives is
exactly what was screened. A block becomes ``ContentBlocked`` (400 ``content_blocked``, naming
the rule, never the text). Big request bodies are screened in a worker thread (RE2 releases
the GIL), as prompt counting is.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import tiktoken

from sentinel.errors import ContentBlocked
from sentinel.guardrails.bodies import screen_reply, screen_request
from sentinel.guardrails.policy import Policy
from sentinel.guardrails.screen import Blocked, Hits, Screen
from sentinel.guardrails.stream import reply_blocked

__all__ = ["screen_json_reply", "screen_request_body"]

_INLINE_BYTES = 64 * 1024  # bodies up to this size are screened on the event loop


async def screen_request_body(
    policy: Policy,
    api: str,
    body: dict[str, Any],
    raw: bytes,
    hits: Hits,
    encoding: tiktoken.Encoding | None,
) -> bytes:
    """Screen ``body`` (parsed from ``raw``) in place; the bytes to forward."""
    try:
        if len(raw) <= _INLINE_BYTES:
            changed = screen_request(api, body, policy, hits, encoding)
        else:
            changed = await asyncio.to_thread(screen_request, api, body, policy, hits, encoding)
    except Blocked as blocked:
        raise ContentBlocked(
            f"The request was blocked by the content rule '{blocked.rule}'."
        ) from None
    return orjson.dumps(body) if changed else raw


def screen_json_reply(screen: Screen, parsed: Any, body: bytes, hits: Hits) -> bytes:
    """Screen a JSON reply (``parsed`` from ``body``) in place; the bytes to send."""
    try:
        changed = screen_reply(parsed, screen, hits)
    except Blocked as blocked:
        raise reply_blocked(blocked.rule) from None
    return orjson.dumps(parsed) if changed else body
