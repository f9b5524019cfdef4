"""Reply bodies and SSE frames for chat completions and completions, framed exactly as OpenAI's.

JSON bodies are pretty-printed with a trailing newline, like OpenAI's. A stream is a list of
``data: {json}\\n\\n`` frames ending in ``data: [DONE]\\n\\n``; with ``include_usage`` every chunk
carries ``"usage":null`` and a last chunk with ``"choices":[]`` carries the usage. Chunks are
assembled from per-reply byte templates so a long stream costs one small ``orjson.dumps`` per
content chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "DONE_FRAME",
    "Reply",
    "chat_frames",
    "chat_json",
    "completion_frames",
    "completion_json",
    "dump_json",
    "reply_pieces",
]

SYSTEM_FINGERPRINT = "fp_mock"
DONE_FRAME = b"data: [DONE]\n\n"
_ECHO_WORDS = 32


@dataclass(frozen=True, slots=True)
class Reply:
    """One generated answer, before it is rendered for an API."""

    id: str
    created: int
    model: str
    pieces: list[str]
    """The content chunks; joined they are the reply text."""
    finish_reason: str
    prompt_tokens: int
    has_usage: bool
    """False under the ``no-usage`` fault: the reply then carries no usage at all."""
    cached_tokens: int = 0
    """Of the prompt, reported as cached (``x-mock-usage-details``)."""
    reasoning_tokens: int = 0
    """Hidden reasoning tokens, reported within ``completion_tokens`` (``x-mock-usage-details``)."""

    @property
    def text(self) -> str:
        """The whole reply text."""
        return "".join(self.pieces)

    @property
    def completion_tokens(self) -> int:
        """One token per content chunk, plus the hidden reasoning tokens."""
        return len(self.pieces) + self.reasoning_tokens

    def usage(self) -> dict[str, Any]:
        """Chat/completions usage, with the detail objects OpenAI includes."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }


def reply_pieces(model: str, echo: str, count: int) -> list[str]:
    """``count`` words cycling through ``"<model>:"`` and the first words of ``echo``."""
    words = [f"{model}:", *echo.split()[:_ECHO_WORDS]]
    return [words[i % len(words)] if i == 0 else " " + words[i % len(words)] for i in range(count)]


def dump_json(value: object) -> bytes:
    """A JSON body as OpenAI prints it: indented by two spaces, ending in a newline."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n"


def chat_json(reply: Reply) -> bytes:
    """A ``chat.completion`` object."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.text,
        "refusal": None,
        "annotations": [],
    }
    body: dict[str, Any] = {
        "id": reply.id,
        "object": "chat.completion",
        "created": reply.created,
        "model": reply.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": reply.finish_reason,
            }
        ],
    }
    if reply.has_usage:
        body["usage"] = reply.usage()
    body["service_tier"] = "default"
    body["system_fingerprint"] = SYSTEM_FINGERPRINT
    return dump_json(body)


def chat_frames(reply: Reply, include_usage: bool, done: bool) -> list[bytes]:
    """The ``chat.completion.chunk`` frames: role, one per piece, finish, usage, ``[DONE]``."""
    head = _head(reply, "chat.completion.chunk") + b',"model":' + _str(reply.model)
    head += b',"service_tier":"default"'
    head += b',"system_fingerprint":"' + SYSTEM_FINGERPRINT.encode() + b'"'
    with_usage = include_usage and reply.has_usage
    end = b',"usage":null}\n\n' if with_usage else b"}\n\n"
    open_delta = b"data: " + head + b',"choices":[{"index":0,"delta":'
    pending = b',"logprobs":null,"finish_reason":null}]' + end
    frames = [open_delta + b'{"role":"assistant","content":"","refusal":null}' + pending]
    frames.extend(open_delta + b'{"content":' + _str(p) + b"}" + pending for p in reply.pieces)
    finish = b',"logprobs":null,"finish_reason":' + _str(reply.finish_reason) + b"}]"
    frames.append(open_delta + b"{}" + finish + end)
    if with_usage:
        frames.append(_usage_frame(head, reply))
    if done:
        frames.append(DONE_FRAME)
    return frames


def completion_json(reply: Reply) -> bytes:
    """A ``text_completion`` object."""
    choice = {"text": reply.text, "index": 0, "logprobs": None}
    body: dict[str, Any] = {
        "id": reply.id,
        "object": "text_completion",
        "created": reply.created,
        "model": reply.model,
        "choices": [{**choice, "finish_reason": reply.finish_reason}],
    }
    if reply.has_usage:
        body["usage"] = reply.usage()
    body["system_fingerprint"] = SYSTEM_FINGERPRINT
    return dump_json(body)


def completion_frames(reply: Reply, include_usage: bool, done: bool) -> list[bytes]:
    """The ``text_completion`` stream: one frame per piece, a finish frame, usage, ``[DONE]``."""
    head = _head(reply, "text_completion")
    with_usage = include_usage and reply.has_usage
    tail = b',"model":' + _str(reply.model)
    tail += b',"system_fingerprint":"' + SYSTEM_FINGERPRINT.encode() + b'"'
    tail += b',"usage":null}\n\n' if with_usage else b"}\n\n"
    open_text = b"data: " + head + b',"choices":[{"text":'
    pending = b',"index":0,"logprobs":null,"finish_reason":null}]' + tail
    frames = [open_text + _str(piece) + pending for piece in reply.pieces]
    finish = b',"index":0,"logprobs":null,"finish_reason":' + _str(reply.finish_reason) + b"}]"
    frames.append(open_text + b'""' + finish + tail)
    if with_usage:
        frames.append(_usage_frame(head + b',"model":' + _str(reply.model), reply))
    if done:
        frames.append(DONE_FRAME)
    return frames


def _head(reply: Reply, kind: str) -> bytes:
    """``{"id":…,"object":…,"created":…`` without the closing brace."""
    return orjson.dumps({"id": reply.id, "object": kind, "created": reply.created})[:-1]


def _usage_frame(head: bytes, reply: Reply) -> bytes:
    return b"data: " + head + b',"choices":[],"usage":' + orjson.dumps(reply.usage()) + b"}\n\n"


def _str(text: str) -> bytes:
    return orjson.dumps(text)
