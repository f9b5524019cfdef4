"""Prompt (input) tokens of a Responses API request.

The Responses API renders its input the way Chat does, so the same accounting applies:
``instructions`` count as a system message, a string ``input`` as one user message, and each
input item as a message of 3 tokens plus its text: message items their role and content parts
(``input_text``, ``input_image``, ``input_file``, ``output_text``, …), ``function_call`` items
their name and arguments, ``function_call_output`` items their output, ``reasoning`` items their
summary. Ids, statuses and item types are API metadata the model does not read. Items of unknown
types count every string they carry. Input stored upstream (``previous_response_id``,
``item_reference``, ``conversation``) cannot be seen here; the real usage corrects it.
"""

from __future__ import annotations

from collections.abc import Mapping

from sentinel.tokens.chat import REPLY_PRIMING, TOKENS_PER_MESSAGE
from sentinel.tokens.content import ContentCounter
from sentinel.tokens.tools import ToolFormat, count_tool_definitions

__all__ = ["count_responses"]

_METADATA = frozenset({"id", "status", "type", "call_id"})


def count_responses(content: ContentCounter, fmt: ToolFormat, body: object) -> int:
    """Input tokens of a parsed ``/v1/responses`` body."""
    if not isinstance(body, dict):
        return content.unknown(body)
    total = REPLY_PRIMING
    total += _input(content, body.get("instructions"), role="system")
    total += _input(content, body.get("input"), role="user")
    total += count_tool_definitions(content, fmt, body.get("tools"))
    total += _text_schema(content, body.get("text"))
    return total


def _input(content: ContentCounter, value: object, *, role: str) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return TOKENS_PER_MESSAGE + content.text(role) + content.text(value)
    if isinstance(value, list):
        return sum(_item(content, item) for item in value)
    return content.unknown(value)


def _item(content: ContentCounter, item: object) -> int:
    if isinstance(item, str):
        return TOKENS_PER_MESSAGE + content.text(item)
    if not isinstance(item, dict):
        return content.unknown(item)
    kind = item.get("type", "message")
    if kind == "message":
        return _message(content, item)
    if kind == "function_call":
        return TOKENS_PER_MESSAGE + content.strings([item.get("name"), item.get("arguments")])
    if kind == "function_call_output":
        return TOKENS_PER_MESSAGE + content.content(item.get("output"))
    if kind == "reasoning":
        return TOKENS_PER_MESSAGE + content.strings([item.get("summary"), item.get("content")])
    if kind == "item_reference":
        return 0
    return TOKENS_PER_MESSAGE + content.strings(
        [value for key, value in item.items() if key not in _METADATA]
    )


def _message(content: ContentCounter, item: Mapping[str, object]) -> int:
    total = TOKENS_PER_MESSAGE
    for key, value in item.items():
        if key == "content":
            total += content.content(value)
        elif key == "role" and isinstance(value, str):
            total += content.text(value)
        elif key not in _METADATA:
            total += content.unknown(value)
    return total


def _text_schema(content: ContentCounter, text: object) -> int:
    if not isinstance(text, Mapping):
        return 0
    fmt = text.get("format")
    if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema":
        return 0
    return content.unknown(fmt.get("schema"))
