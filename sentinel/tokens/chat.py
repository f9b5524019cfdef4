"""Prompt tokens of a Chat Completions request, after OpenAI's published accounting.

Per the OpenAI cookbook ("How to count tokens with tiktoken"): every message costs 3 tokens plus
the tokens of each of its string fields (role, content, name, tool_call_id, …), a ``name`` costs
1 more, and every reply is primed with 3 (``<|start|>assistant<|message|>``). That reproduces the
API's own figures for the cookbook's example (129 tokens on cl100k models, 124 on o200k).
Assistant ``tool_calls`` and legacy ``function_call`` count every string they carry plus 3, like
a message; tool definitions follow ``tools.py``; a ``json_schema`` response format counts its
schema. Nothing here raises; odd shapes count conservatively.
"""

from __future__ import annotations

from collections.abc import Mapping

from sentinel.tokens.content import ContentCounter
from sentinel.tokens.tools import ToolFormat, count_tool_definitions

__all__ = ["count_chat", "count_messages"]

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3


def count_chat(content: ContentCounter, fmt: ToolFormat, body: object) -> int:
    """Prompt tokens of a parsed ``/v1/chat/completions`` body."""
    if not isinstance(body, dict):
        return content.unknown(body)
    total = count_messages(content, body.get("messages"))
    total += count_tool_definitions(content, fmt, body.get("tools"), body.get("functions"))
    total += _response_schema(content, body.get("response_format"))
    return total


def count_messages(content: ContentCounter, messages: object) -> int:
    """Tokens of a ``messages`` list, reply priming included."""
    if not isinstance(messages, list):
        return content.unknown(messages) + REPLY_PRIMING
    return sum(_message(content, message) for message in messages) + REPLY_PRIMING


def _message(content: ContentCounter, message: object) -> int:
    if not isinstance(message, dict):
        return TOKENS_PER_MESSAGE + content.unknown(message)
    total = TOKENS_PER_MESSAGE
    for key, value in message.items():
        if key == "content":
            total += content.content(value)
        elif key in ("tool_calls", "function_call"):
            total += _calls(content, value)
        elif isinstance(value, str):
            total += content.text(value)
        else:
            total += content.unknown(value)
        if key == "name":
            total += TOKENS_PER_NAME
    return total


def _calls(content: ContentCounter, calls: object) -> int:
    if calls is None:
        return 0
    if isinstance(calls, dict):
        return TOKENS_PER_MESSAGE + content.strings(calls)
    if isinstance(calls, list):
        return sum(
            _calls(content, call) if isinstance(call, dict) else content.unknown(call)
            for call in calls
        )
    return content.unknown(calls)


def _response_schema(content: ContentCounter, response_format: object) -> int:
    if not isinstance(response_format, Mapping) or response_format.get("type") != "json_schema":
        return 0
    return content.unknown(response_format.get("json_schema"))
