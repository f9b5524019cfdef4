"""The stream accumulator: usage, text and completion read from relayed streams, split anywhere."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.streaming.accumulator import StreamAccumulator, StreamApi, StreamSnapshot
from sentinel.usage.counts import Usage

RECORDED = Path(__file__).parent / "recorded"
ENDINGS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}
USAGE_CHUNK = b'"choices":[],"usage":{'


@dataclass(frozen=True)
class Recorded:
    """A recorded stream and what reading it must give."""

    api: StreamApi
    text: str
    usage: Usage
    model: str
    finish_reasons: tuple[str, ...]
    events: int


RECORDINGS = {
    "chat_usage.sse": Recorded(
        "chat",
        "Hello! The capital of France is Paris.",
        Usage(24, 9, 33),
        "gpt-4o-mini-2024-07-18",
        ("stop",),
        13,
    ),
    "chat_tools.sse": Recorded(
        "chat",
        'get_weather{"location": "Paris, FR"}get_time{"tz": "Europe/Paris"}',
        Usage(81, 47, 128, cached_tokens=64),
        "gpt-4o-2024-08-06",
        ("tool_calls",),
        12,
    ),
    "chat_unicode.sse": Recorded(
        "chat",
        "Hi 👋🏽 你好世界! Café vs Cafe\u0301 👨\u200d👩\u200d👧 한국어 ✓",
        Usage(12, 27, 39),
        "gpt-4o-mini-2024-07-18",
        ("stop",),
        13,
    ),
    "completions.sse": Recorded(
        "completions",
        "\n\nOne, two, three",
        Usage(5, 7, 12),
        "gpt-3.5-turbo-instruct",
        ("length",),
        9,
    ),
    "responses.sse": Recorded(
        "responses",
        "Hi there! How can I help?",
        Usage(37, 11, 48),
        "gpt-4.1-2025-04-14",
        ("completed",),
        16,
    ),
    "azure_filtered.sse": Recorded(
        "chat", "Sure, here you go.", Usage(19, 6, 25), "gpt-4o-2024-11-20", ("stop",), 11
    ),
}


def recorded(name: str, ending: str) -> bytes:
    """A recorded stream (stored with LF endings) rewritten to use ``ending``."""
    text = (RECORDED / name).read_bytes().replace(b"\r\n", b"\n")
    return text.replace(b"\n", ENDINGS[ending])


def without_usage_chunk(stream: bytes, ending: str) -> bytes:
    """``stream`` less its usage-only event (the recordings hold no raw CR or LF in JSON)."""
    blank = ENDINGS[ending] * 2
    events = [e + blank for e in stream.split(blank)[:-1]]
    assert sum(USAGE_CHUNK in e for e in events) <= 1
    return b"".join(e for e in events if USAGE_CHUNK not in e)


def relay(api: StreamApi, chunks: list[bytes], *, strip: bool) -> tuple[bytes, StreamSnapshot]:
    """Feed ``chunks`` as the relay does; return what reached the client and the final state."""
    acc = StreamAccumulator(api, strip_usage_chunk=strip)
    out = []
    for chunk in chunks:
        forwarded = acc.feed(chunk)
        if not strip:
            assert forwarded is chunk
        out.append(forwarded)
    out.append(acc.finish())
    return b"".join(out), acc.snapshot()


def checker(name: str, ending: str, *, strip: bool) -> Callable[[list[bytes]], None]:
    """A check that relaying some chunking of a recording forwards and reads what it must."""
    expected = RECORDINGS[name]
    stream = recorded(name, ending)
    to_client = without_usage_chunk(stream, ending) if strip else stream
    state = StreamSnapshot(
        usage=expected.usage,
        text=expected.text,
        is_complete=True,
        upstream_error=None,
        model=expected.model,
        finish_reasons=expected.finish_reasons,
        events=expected.events,
        bad_events=0,
    )

    def check(chunks: list[bytes]) -> None:
        assert relay(expected.api, chunks, strip=strip) == (to_client, state)

    return check


@pytest.mark.parametrize("strip", [False, True], ids=["relay", "strip"])
@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("name", RECORDINGS)
def test_recorded_stream_whole(name: str, ending: str, strip: bool) -> None:
    """A recorded stream fed in one chunk gives its usage, text, model and finish reason."""
    checker(name, ending, strip=strip)([recorded(name, ending)])


@pytest.mark.parametrize("strip", [False, True], ids=["relay", "strip"])
@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("name", RECORDINGS)
def test_recorded_stream_split_at_every_offset(name: str, ending: str, strip: bool) -> None:
    """Splitting a recorded stream in two at any byte reads and forwards it the same."""
    stream, check = recorded(name, ending), checker(name, ending, strip=strip)
    for i in range(len(stream) + 1):
        check([stream[:i], stream[i:]])


@pytest.mark.parametrize("strip", [False, True], ids=["relay", "strip"])
@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("name", RECORDINGS)
def test_recorded_stream_byte_at_a_time(name: str, ending: str, strip: bool) -> None:
    """Feeding a recorded stream one byte at a time reads and forwards it the same."""
    stream = recorded(name, ending)
    checker(name, ending, strip=strip)([stream[i : i + 1] for i in range(len(stream))])


def test_strip_keeps_azure_prompt_filter_chunk() -> None:
    """Azure's prompt-filter chunk has empty choices but no usage, so it is forwarded."""
    stream = recorded("azure_filtered.sse", "lf")
    forwarded, _ = relay("chat", [stream], strip=True)
    assert b'"prompt_filter_results"' in forwarded and USAGE_CHUNK not in forwarded


def test_strip_forwards_complete_chunk_unchanged() -> None:
    """In strip mode a chunk of complete events without the usage chunk is forwarded as is."""
    chunk = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    acc = StreamAccumulator("chat", strip_usage_chunk=True)
    assert acc.feed(chunk) is chunk


def test_strip_holds_back_incomplete_event() -> None:
    """In strip mode an incomplete event is held back until its blank line arrives."""
    acc = StreamAccumulator("chat", strip_usage_chunk=True)
    assert acc.feed(b'data: {"choices":[],') == b""
    assert acc.feed(b'"usage":{"prompt_tokens":1,"completion_tokens":2}}\n') == b""
    assert acc.feed(b"\ndata: [DONE]\n\n") == b"data: [DONE]\n\n"
    assert acc.usage == Usage(1, 2, 3) and acc.is_complete


def test_strip_removes_usage_chunk_with_invalid_usage() -> None:
    """The usage chunk is hidden from the client even when its usage cannot be read."""
    acc = StreamAccumulator("chat", strip_usage_chunk=True)
    assert acc.feed(b'data: {"choices":[],"usage":{"prompt_tokens":-1}}\n\n') == b""
    assert acc.usage is None


def test_relay_mode_forwards_usage_chunk() -> None:
    """Without strip the usage chunk is forwarded like every other byte."""
    chunk = b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n'
    acc = StreamAccumulator("chat", strip_usage_chunk=False)
    assert acc.feed(chunk) is chunk and acc.usage == Usage(1, 2, 3)


def test_done_without_blank_line_is_the_tail() -> None:
    """A final ``data: [DONE]`` with no blank line is held, then forwarded and read at finish."""
    acc = StreamAccumulator("chat", strip_usage_chunk=True)
    assert acc.feed(b'data: {"choices":[]}\n\ndata: [DONE]\n') == b'data: {"choices":[]}\n\n'
    assert not acc.is_complete
    assert acc.finish() == b"data: [DONE]\n"
    assert acc.is_complete


def test_finish_in_relay_mode_reads_but_returns_nothing() -> None:
    """Without strip, finish reads an unterminated last event but has no bytes left to send."""
    acc = StreamAccumulator("chat", strip_usage_chunk=False)
    acc.feed(b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}')
    assert acc.finish() == b""
    assert acc.usage == Usage(3, 4, 7)


def test_finish_strips_unterminated_usage_chunk() -> None:
    """An unterminated usage chunk at EOF is still hidden from a client that did not ask."""
    acc = StreamAccumulator("chat", strip_usage_chunk=True)
    acc.feed(b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}')
    assert acc.finish() == b""
    assert acc.usage == Usage(3, 4, 7)


def test_finish_with_nothing_held() -> None:
    """Finishing a stream that ended cleanly returns nothing."""
    acc = StreamAccumulator("chat", strip_usage_chunk=True)
    acc.feed(b"data: [DONE]\n\n")
    assert acc.finish() == b""


def test_bad_json_is_counted_and_skipped() -> None:
    """Data that is not JSON is counted as bad and does not spoil the events after it."""
    acc = StreamAccumulator("chat", strip_usage_chunk=True)
    out = acc.feed(b'data: {"choices": [\n\ndata: {"choices":[{"delta":{"content":"ok"}}]}\n\n')
    assert out.startswith(b'data: {"choices": [\n\n')  # forwarded all the same
    assert (acc.bad_events, acc.events, acc.text) == (1, 2, "ok")


def test_json_that_is_not_an_object_is_bad() -> None:
    """A JSON array, string or number as data is counted as bad."""
    acc = StreamAccumulator("chat", strip_usage_chunk=False)
    acc.feed(b'data: []\n\ndata: "x"\n\ndata: 1\n\ndata: null\n\n')
    assert acc.bad_events == 4


def test_empty_data_is_bad() -> None:
    """An event with empty data is not JSON, so it is counted as bad."""
    acc = StreamAccumulator("chat", strip_usage_chunk=False)
    acc.feed(b"data:\n\n")
    assert (acc.events, acc.bad_events) == (1, 1)


def test_comment_only_events_are_forwarded_not_counted() -> None:
    """Keep-alive comments are forwarded in strip mode and are not data events."""
    acc = StreamAccumulator("chat", strip_usage_chunk=True)
    assert acc.feed(b": keep-alive\n\n") == b": keep-alive\n\n"
    assert (acc.events, acc.bad_events) == (0, 0)


def test_invalid_utf8_in_data_is_bad() -> None:
    """Data that is not UTF-8 is bad JSON, never an exception."""
    acc = StreamAccumulator("chat", strip_usage_chunk=False)
    acc.feed(b'data: {"choices":[{"delta":{"content":"\xff"}}]}\n\n')
    assert acc.bad_events == 1 and acc.text == ""


def test_in_band_error_chunk() -> None:
    """A data chunk with an ``error`` key is the upstream's error."""
    acc = StreamAccumulator("chat", strip_usage_chunk=False)
    acc.feed(b'data: {"error":{"message":"overloaded","type":"server_error","code":null}}\n\n')
    assert acc.upstream_error == {"message": "overloaded", "type": "server_error", "code": None}


def test_error_event_with_json() -> None:
    """An ``event: error`` whose data is JSON is the upstream's error."""
    acc = StreamAccumulator("chat", strip_usage_chunk=False)
    acc.feed(b'event: error\ndata: {"message":"boom","code":"E1"}\n\n')
    assert acc.upstream_error == {"message": "boom", "code": "E1"}


def test_error_event_with_text() -> None:
    """An ``event: error`` whose data is not JSON keeps the text as the message."""
    acc = StreamAccumulator("chat", strip_usage_chunk=False)
    acc.feed(b"event: error\ndata: upstream timed out\n\n")
    assert acc.upstream_error == {"message": "upstream timed out"}


def test_first_error_is_kept() -> None:
    """When the upstream sends several errors, the first one is kept."""
    acc = StreamAccumulator("chat", strip_usage_chunk=False)
    acc.feed(b'data: {"error":{"message":"first"}}\n\ndata: {"error":{"message":"second"}}\n\n')
    assert acc.upstream_error == {"message": "first"}


def test_error_that_is_not_an_object() -> None:
    """An ``error`` that is a plain string keeps the whole chunk as the error."""
    acc = StreamAccumulator("chat", strip_usage_chunk=False)
    acc.feed(b'data: {"error":"rate limited"}\n\n')
    assert acc.upstream_error == {"error": "rate limited"}


def test_null_error_is_no_error() -> None:
    """A chunk carrying ``"error": null`` is an ordinary chunk."""
    acc = StreamAccumulator("chat", strip_usage_chunk=False)
    acc.feed(b'data: {"error":null,"choices":[{"delta":{"content":"ok"}}]}\n\n')
    assert acc.upstream_error is None and acc.text == "ok"


def test_responses_error_event() -> None:
    """A Responses API ``error`` event is the upstream's error and does not complete the stream."""
    acc = StreamAccumulator("responses", strip_usage_chunk=False)
    acc.feed(b'event: error\ndata: {"type":"error","code":"server_error","message":"x"}\n\n')
    assert acc.upstream_error == {"type": "error", "code": "server_error", "message": "x"}
    assert not acc.is_complete


def test_responses_failed() -> None:
    """``response.failed`` completes the stream and carries the upstream's error."""
    acc = StreamAccumulator("responses", strip_usage_chunk=False)
    body = {
        "type": "response.failed",
        "response": {
            "status": "failed",
            "model": "m",
            "error": {"code": "server_error", "message": "x"},
            "usage": None,
        },
    }
    acc.feed(b"event: response.failed\ndata: " + json.dumps(body).encode() + b"\n\n")
    assert acc.is_complete and acc.finish_reasons == ("failed",)
    assert acc.upstream_error == {"code": "server_error", "message": "x"}


def test_responses_incomplete() -> None:
    """``response.incomplete`` completes the stream with its reason and usage."""
    acc = StreamAccumulator("responses", strip_usage_chunk=False)
    response = {
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "usage": {
            "input_tokens": 5,
            "output_tokens": 16,
            "total_tokens": 21,
            "output_tokens_details": {"reasoning_tokens": 16},
        },
    }
    data = json.dumps({"type": "response.incomplete", "response": response}).encode()
    acc.feed(b"event: response.incomplete\ndata: " + data + b"\n\n")
    assert acc.is_complete and acc.finish_reasons == ("max_output_tokens",)
    assert acc.usage == Usage(5, 16, 21, reasoning_tokens=16)


def test_responses_function_call_text() -> None:
    """A Responses API function call contributes its name and its argument deltas."""
    acc = StreamAccumulator("responses", strip_usage_chunk=False)
    events = [
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {"type": "function_call", "name": "lookup", "arguments": ""},
        },
        {"type": "response.function_call_arguments.delta", "output_index": 0, "delta": '{"q":'},
        {"type": "response.function_call_arguments.delta", "output_index": 0, "delta": '"x"}'},
    ]
    acc.feed(b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events))
    assert acc.text == 'lookup{"q":"x"}'


def test_done_does_not_complete_responses() -> None:
    """``[DONE]`` is not how a Responses API stream ends; only a terminal event is."""
    acc = StreamAccumulator("responses", strip_usage_chunk=False)
    acc.feed(b"data: [DONE]\n\n")
    assert not acc.is_complete and acc.bad_events == 0


def test_choices_are_not_interleaved() -> None:
    """With several choices the text of each choice stays together."""
    acc = StreamAccumulator("chat", strip_usage_chunk=False)
    for index, piece in [(0, "a"), (1, "x"), (0, "b"), (1, "y")]:
        acc.feed(chunk({"choices": [{"index": index, "delta": {"content": piece}}]}))
    acc.feed(chunk({"choices": [{"index": 1, "finish_reason": "length", "delta": {}}]}))
    acc.feed(chunk({"choices": [{"index": 0, "finish_reason": "stop", "delta": {}}]}))
    assert acc.text == "abxy" and acc.finish_reasons == ("stop", "length")


def test_reasoning_refusal_and_legacy_function_call() -> None:
    """Reasoning content, refusals and the legacy ``function_call`` count as reply text."""
    acc = StreamAccumulator("chat", strip_usage_chunk=False)
    acc.feed(chunk({"choices": [{"delta": {"reasoning_content": "think "}}]}))
    acc.feed(chunk({"choices": [{"delta": {"refusal": "no"}}]}))
    acc.feed(chunk({"choices": [{"delta": {"function_call": {"name": "f", "arguments": "{}"}}}]}))
    assert acc.text == "think nof{}"


def test_latest_usage_wins() -> None:
    """Providers that repeat a running usage in every chunk are read at their last one."""
    acc = StreamAccumulator("chat", strip_usage_chunk=False)
    acc.feed(chunk({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}))
    acc.feed(chunk({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 5}}))
    assert acc.usage == Usage(1, 5, 6)


def test_model_is_first_non_empty() -> None:
    """The model is the first non-empty name (Azure's first chunk has an empty one)."""
    acc = StreamAccumulator("chat", strip_usage_chunk=False)
    for model in ["", 7, "gpt-4o", "other"]:
        acc.feed(chunk({"model": model, "choices": []}))
    assert acc.model == "gpt-4o"


def test_concurrent_feeds_lose_nothing() -> None:
    """Feeds from several threads are serialised by the lock: every event is read once."""
    acc = StreamAccumulator("completions", strip_usage_chunk=False)
    event = chunk({"choices": [{"text": "x"}]})

    def feed() -> None:
        for _ in range(500):
            acc.feed(event)

    threads = [threading.Thread(target=feed) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert acc.events == 2000 and acc.text == "x" * 2000


def chunk(obj: object) -> bytes:
    """One SSE data event holding ``obj`` as JSON."""
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


# Random chat streams, random line endings, random chunking.
_PIECE = st.text(max_size=6)
_DELTA = st.one_of(
    _PIECE.map(lambda t: {"content": t}),
    _PIECE.map(lambda t: {"reasoning_content": t}),
    st.tuples(st.integers(0, 2), _PIECE).map(
        lambda c: {"tool_calls": [{"index": c[0], "function": {"arguments": c[1]}}]}
    ),
)


@st.composite
def chat_streams(draw: st.DrawFn) -> tuple[bytes, str, int, list[bytes]]:
    """A random chat stream, its expected text and data event count, and a chunking of it."""
    ending = draw(st.sampled_from(list(ENDINGS.values())))
    deltas = draw(st.lists(_DELTA, max_size=12))
    events = [chunk({"choices": [{"index": 0, "delta": d}]}) for d in deltas]
    events.insert(draw(st.integers(0, len(events))), b": ping\n\n")
    events.insert(draw(st.integers(0, len(events))), b"data: {oops\n\n")
    events.append(chunk({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}}))
    events.append(b"data: [DONE]\n\n")
    stream = b"".join(events).replace(b"\n", ending)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    bounds = [0, *cuts, len(stream)]
    pieces = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    return stream, expected_text(deltas), len(deltas) + 3, pieces


def expected_text(deltas: list[dict[str, Any]]) -> str:
    """What the accumulator should make of ``deltas``: each channel's text, in first-seen order."""
    channels: dict[object, list[str]] = {}
    for d in deltas:
        if "tool_calls" in d:
            key: object = ("tool", d["tool_calls"][0]["index"])
            text = d["tool_calls"][0]["function"]["arguments"]
        else:
            ((key, text),) = d.items()
        if text:
            channels.setdefault(key, []).append(text)
    return "".join("".join(pieces) for pieces in channels.values())


@given(chat_streams(), st.booleans())
def test_random_chat_streams(case: tuple[bytes, str, int, list[bytes]], strip: bool) -> None:
    """Any chat stream, cut anywhere, gives the same text and usage and forwards the right bytes."""
    stream, text, events, chunks = case
    forwarded, state = relay("chat", chunks, strip=strip)
    ending = b"\r\n" if b"\r\n" in stream else b"\r" if b"\r" in stream else b"\n"
    usage_event = next(e for e in stream.split(ending * 2) if b'"usage"' in e) + ending * 2
    assert forwarded == (stream.replace(usage_event, b"") if strip else stream)
    assert (state.text, state.usage, state.is_complete) == (text, Usage(2, 3, 5), True)
    assert (state.events, state.bad_events) == (events, 1)


_KEYS = st.sampled_from(
    [
        "choices",
        "delta",
        "usage",
        "content",
        "tool_calls",
        "function",
        "arguments",
        "name",
        "index",
        "error",
        "type",
        "response",
        "model",
        "text",
        "finish_reason",
        "prompt_tokens",
        "input_tokens",
        "output_tokens",
        "status",
        "output_index",
        "item",
        "incomplete_details",
        "response.completed",
        "response.output_text.delta",
        "function_call",
        "reasoning_content",
    ]
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _KEYS | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=20,
)


@given(
    st.lists(st.dictionaries(_KEYS, _JSON, max_size=5), max_size=5),
    st.sampled_from(["chat", "completions", "responses"]),
    st.booleans(),
)
def test_hostile_json_never_raises(objs: list[object], api: StreamApi, strip: bool) -> None:
    """Events of any JSON shape, however wrong, are read without raising."""
    stream = b"".join(b"event: error\n" * (i % 3 == 2) + chunk(obj) for i, obj in enumerate(objs))
    forwarded, state = relay(api, [stream], strip=strip)
    assert state.events == len(objs) and len(forwarded) <= len(stream)


@given(st.lists(st.binary(max_size=30), max_size=10), st.booleans())
def test_arbitrary_bytes_never_raise(chunks: list[bytes], strip: bool) -> None:
    """Any bytes at all are relayed (or held and then forwarded at finish) without raising."""
    forwarded, _ = relay("chat", [b"data: ", *chunks], strip=strip)
    assert len(forwarded) <= len(b"data: " + b"".join(chunks))


def test_usage_read_while_text_is_left_for_later() -> None:
    """Usage and completion are known at once; text read mid-stream and at the end is whole."""
    acc = StreamAccumulator("chat", strip_usage_chunk=True)
    acc.feed(chunk({"choices": [{"index": 0, "delta": {"content": "Hel"}}], "usage": None}))
    assert acc.text == "Hel"
    acc.feed(chunk({"choices": [{"index": 0, "delta": {"content": "lo"}}], "usage": None}))
    usage = {"prompt_tokens": 1, "completion_tokens": 2}
    assert acc.feed(chunk({"choices": [], "usage": usage})) == b""
    acc.feed(b"data: [DONE]\n\n")
    assert acc.usage == Usage(1, 2, 3) and acc.is_complete and acc.events == 4
    assert acc.text == "Hello" and acc.bad_events == 0


@pytest.mark.parametrize(
    "data",
    [
        b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}',
        b'{"choices": [], "usage" : {"prompt_tokens": 1, "completion_tokens": 2}}',
        b'{"usage":null,"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}',
        b'{"choices":[],"\\u0075sage":{"prompt_tokens":1,"completion_tokens":2}}',
        b'{"choices":[],"us\\u0061ge":{"prompt_tokens":1,"completion_tokens":2}}',
    ],
    ids=["compact", "spaced", "repeated-key", "escaped-u", "escaped-a"],
)
def test_usage_chunk_found_however_written(data: bytes) -> None:
    """A usage chunk is read and stripped whatever the JSON spelling of its ``usage`` key."""
    acc = StreamAccumulator("chat", strip_usage_chunk=True)
    assert acc.feed(b"data: " + data + b"\n\n") == b""
    assert acc.usage == Usage(1, 2, 3)


def test_usage_named_in_text_is_not_a_usage() -> None:
    """Reply text that spells out a usage key is neither read as usage nor stripped."""
    acc = StreamAccumulator("chat", strip_usage_chunk=True)
    event = chunk({"choices": [], "x": '"usage":{"prompt_tokens":1}', "usage": None})
    assert acc.feed(event) is event and acc.usage is None


def test_named_usage_chunk_is_stripped() -> None:
    """A usage-only chunk sent with an ``event:`` name other than error is stripped too."""
    acc = StreamAccumulator("chat", strip_usage_chunk=True)
    usage = {"prompt_tokens": 1, "completion_tokens": 2}
    assert acc.feed(b"event: message\n" + chunk({"choices": [], "usage": usage})) == b""
    assert acc.usage == Usage(1, 2, 3)


def test_long_stream_text_is_whole() -> None:
    """A stream longer than what is kept unread is read in batches, its text intact."""
    acc = StreamAccumulator("completions", strip_usage_chunk=False)
    event = chunk({"choices": [{"text": "x" * 1000}]})
    for _ in range(1000):
        acc.feed(event)
    assert acc.text == "x" * 1_000_000 and acc.events == 1000


def test_whole_chunk_strips_a_usage_chunk_between_others() -> None:
    """A chunk of whole events with the usage chunk in the middle: the events before it (null
    usages included) and after it are forwarded byte for byte, and all their text is read."""
    before = [
        chunk({"choices": [{"index": 0, "delta": {"content": f"a{i}"}}], "usage": None})
        for i in range(3)
    ]
    usage = chunk({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 5}})
    after = [chunk({"choices": [{"index": 0, "delta": {"content": "z"}}]}), b"data: [DONE]\n\n"]
    acc = StreamAccumulator("chat", strip_usage_chunk=True)
    forwarded = acc.feed(b"".join([*before, usage, *after]))
    assert forwarded == b"".join([*before, *after])
    assert acc.usage is not None and acc.usage.completion_tokens == 5
    assert acc.text == "a0a1a2z" and acc.is_complete and acc.events == 6


def test_whole_chunk_of_mixed_events_is_read_later_as_sent() -> None:
    """Comments, named and multi-line events kept whole before the usage chunk are framed
    when read: their text, error and count are what reading them at once gives."""
    content = chunk({"choices": [{"index": 0, "delta": {"content": "a"}}], "usage": None})
    error = b'event: error\ndata: {"message":"slow down"}\n\n'
    multi = b'data: {"choices":[{"index":0,\ndata: "delta":{"content":"b"}}]}\n\n'
    usage = chunk({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}})
    whole = b"".join([b": ping\n\n", content, error, multi, usage, b"data: [DONE]\n\n"])
    acc = StreamAccumulator("chat", strip_usage_chunk=True)
    assert acc.feed(whole) == whole.replace(usage, b"")
    assert acc.usage is not None and acc.is_complete and acc.has_events
    assert acc.events == 5 and acc.text == "ab" and acc.bad_events == 0
    assert acc.upstream_error == {"message": "slow down"}


def test_an_earlier_done_in_a_chunk_ending_with_done_is_no_bad_event() -> None:
    """A chunk that ends with ``[DONE]`` after an earlier one: the stream is complete, and the
    earlier one, read later, is a data event, not a bad one."""
    content = chunk({"choices": [{"index": 0, "delta": {"content": "x"}}]})
    acc = StreamAccumulator("chat", strip_usage_chunk=False)
    acc.feed(content + b"data: [DONE]\n\n" + content + b"data: [DONE]\n\n")
    assert acc.is_complete and acc.events == 4
    assert acc.bad_events == 0 and acc.text == "xx"


def test_has_events_counts_data_events_only() -> None:
    """``has_events`` is ``events > 0``: comments alone are none, a kept chunk is some."""
    acc = StreamAccumulator("chat", strip_usage_chunk=True)
    acc.feed(b": keep-alive\n\n")
    assert not acc.has_events
    acc.feed(chunk({"choices": [{"index": 0, "delta": {"content": "x"}}], "usage": None}))
    assert acc.has_events and acc.events == 1
