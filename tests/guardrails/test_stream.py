"""``GuardedStream`` on its own: chat, completions and Responses events, cut anywhere."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.config.patterns import match_lengths
from sentinel.errors import ContentBlocked
from sentinel.guardrails import Entry, GuardedStream, Screen
from sentinel.streaming.accumulator import StreamAccumulator, StreamApi
from sentinel.streaming.sse import SSEParser

SCREEN = Screen(
    [
        Entry("code", r"Falcon-\d{1,4}", "redact", "response", match_lengths(r"Falcon-\d{1,4}")[1]),
        Entry("stop", r"launch codes", "block", "response", 12),
    ]
)


def sse(obj: dict[str, Any], name: str | None = None) -> bytes:
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + orjson.dumps(obj) + b"\n\n"


def chat_stream(pieces: list[str]) -> bytes:
    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": {"x": 1}}
        return sse({"id": "c", "object": "chat.completion.chunk", "choices": [choice]})

    return (
        b"".join(chunk({"content": p}, None) for p in pieces)
        + chunk({}, "stop")
        + b"data: [DONE]\n\n"
    )


def relay(api: StreamApi, data: bytes, cuts: list[int]) -> bytes:
    """Feed ``data`` cut at ``cuts`` through a guarded accumulator; what the client gets."""
    tap = GuardedStream(StreamAccumulator(api, strip_usage_chunk=False), api, SCREEN, {})
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    out = b"".join(tap.feed(data[a:b]) for a, b in itertools.pairwise(bounds))
    return out + tap.finish()


def chat_text(out: bytes) -> str:
    text = ""
    for event in SSEParser().feed(out):
        if event.data.startswith(b"{"):
            obj = orjson.loads(event.data)
            for choice in obj["choices"]:
                assert choice.get("logprobs") is None
                text += choice.get("delta", {}).get("content") or ""
    return text


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_chat_stream_redacted_however_bytes_are_cut(cuts: list[int]) -> None:
    """Chunk boundaries anywhere in the bytes (mid-event, mid-match) change nothing."""
    out = relay("chat", chat_stream(["Meet Fal", "con-", "12 at", " noon, Falcon-3"]), cuts)
    assert chat_text(out) == "Meet [REDACTED:code] at noon, [REDACTED:code]"
    assert out.endswith(b"data: [DONE]\n\n")


def test_completions_stream() -> None:
    """Completions chunks carry their text in ``choices[].text``."""
    chunks = [
        sse({"object": "text_completion", "choices": [{"index": 0, "text": t, "finish_reason": f}]})
        for t, f in (("x Falcon", None), ("-77 y", None), ("", "stop"))
    ]
    out = relay("completions", b"".join(chunks) + b"data: [DONE]\n\n", [])
    texts = [
        c["text"]
        for e in SSEParser().feed(out)
        if e.data.startswith(b"{")
        for c in orjson.loads(e.data)["choices"]
    ]
    assert "".join(texts) == "x [REDACTED:code] y"


def test_responses_stream_deltas_and_done_events() -> None:
    """Responses deltas are held back and released; done and completed events are redacted."""
    ids = {"item_id": "m1", "output_index": 0, "content_index": 0}
    events = [
        sse({"type": "response.output_text.delta", **ids, "delta": d}, "response.output_text.delta")
        for d in ("see Falc", "on-9 ok")
    ]
    events.append(
        sse(
            {"type": "response.output_text.done", **ids, "text": "see Falcon-9 ok"},
            "response.output_text.done",
        )
    )
    output = [{"type": "message", "content": [{"type": "output_text", "text": "see Falcon-9 ok"}]}]
    events.append(
        sse({"type": "response.completed", "response": {"output": output}}, "response.completed")
    )
    out = relay("responses", b"".join(events), [])
    parsed = [orjson.loads(e.data) for e in SSEParser().feed(out) if e.has_data]
    deltas = "".join(p["delta"] for p in parsed if p["type"] == "response.output_text.delta")
    assert deltas == "see [REDACTED:code] ok"
    assert b"Falcon-9" not in out


def test_block_raises_content_blocked() -> None:
    """A block rule's match in a stream raises ContentBlocked naming it."""
    with pytest.raises(ContentBlocked, match="'stop'"):
        relay("chat", chat_stream(["the launch", " codes", " now" + " " * 20]), [])
