"""What one streamed reply amounts to: usage, text, completion and errors, read as it is relayed.

The relay feeds every upstream chunk to ``StreamAccumulator.feed`` and forwards what it
returns. Normally that is the chunk itself, untouched. When Sentinel added
``stream_options.include_usage`` for a client that did not ask for it, the accumulator forwards
whole events only and drops the one usage-only chunk (``"choices": []`` with a ``usage``), so
the client sees exactly the stream it asked for.

Everything the upstream sends is untrusted: data that is not a JSON object is counted in
``bad_events`` and skipped, and fields of the wrong type are ignored, so that no event can make
``feed`` raise or spoil what later events say.

Chat and completions chunks are read lazily. While relaying, only what the relay needs now is
worked out: the end of the stream, the provider's usage and which chunk to strip; a chunk is
decoded then only if its bytes may hold a usage. The other chunks are kept as bytes and read,
in order, when text, model, finish reasons or errors are first asked for (or when more than
``_MAX_PENDING_BYTES`` are kept). The text is needed only when the provider sent no usage, so a
stream with usage is usually never decoded beyond its usage chunk. Responses API events are
read as they come, since their usage is in the terminal event.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from sentinel.streaming.reply_text import ReplyText
from sentinel.streaming.sse import SSEEvent, SSEParser
from sentinel.streaming.usage_bytes import first_usage_or_done, may_carry_usage
from sentinel.usage.counts import Usage

__all__ = ["StreamAccumulator", "StreamApi", "StreamSnapshot"]

StreamApi = Literal["chat", "completions", "responses"]

_DONE = b"[DONE]"
_MAX_PENDING_BYTES = 256 * 1024  # of unread chunk data; past it the backlog is read at once
_MAX_ERROR_BYTES = 4096  # of a non-JSON error event kept as its message
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
# Responses API events whose ``delta`` is reply text.
_TEXT_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.reasoning_text.delta",
        "response.function_call_arguments.delta",
    }
)

# Chat delta fields that are reply text, and the channel each is kept in.
_DELTA_TEXT = {
    "content": "content",
    "refusal": "refusal",
    "reasoning_content": "reasoning",
    "reasoning": "reasoning",
}


@dataclass(slots=True)  # per stream: not frozen, which is several times slower to build
class StreamSnapshot:
    """A consistent copy of an accumulator's state at one moment."""

    usage: Usage | None
    text: str
    is_complete: bool
    upstream_error: dict[str, Any] | None
    model: str | None
    finish_reasons: tuple[str, ...]
    events: int
    bad_events: int


def _index(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    return value if type(value) is int else 0


class _Framed:
    """Whole events kept for later as they came, framed when read (``SSEParser.events_of``)."""

    __slots__ = ("events", "opening")

    def __init__(self, events: bytes, opening: bool) -> None:
        self.events = events
        self.opening = opening  # they began the stream (a BOM may lead them)

    def data_events(self) -> list[SSEEvent]:
        """The events that have data, in order."""
        return [e for e in SSEParser.events_of(self.events, self.opening) if e.has_data]


# A data event kept for later: its data alone, or with its event name and its JSON if decoded;
# or several whole events, still framed.
_Pending = bytes | _Framed | tuple[str | None, bytes, dict[str, Any] | None]


class StreamAccumulator:
    """Reads one upstream SSE stream as it is relayed; every method is safe from any thread."""

    def __init__(self, api: StreamApi, *, strip_usage_chunk: bool) -> None:
        self._api = api
        self._strip = strip_usage_chunk
        self._lock = threading.Lock()
        self._parser = SSEParser()
        self._text = ReplyText()
        self._usage: Usage | None = None
        self._complete = False
        self._error: dict[str, Any] | None = None
        self._model: str | None = None
        self._finish: dict[int, str] = {}
        self._events = 0
        self._bad = 0
        self._pending: list[_Pending] = []  # chat/completions events not read yet, in order
        self._pending_bytes = 0
        self._escaped = False  # "\\u" has been fed: JSON keys may be written with escapes

    def feed(self, chunk: bytes) -> bytes:
        """Read the next upstream chunk; return the bytes to forward to the client."""
        with self._lock:
            # The one-byte search is a memchr; the two-byte one only runs past a backslash.
            if not self._escaped and b"\\" in chunk and (b"\\u" in chunk or chunk.endswith(b"\\")):
                self._escaped = True
            self._pending_bytes += len(chunk)
            parser = self._parser
            if self._api != "responses" and parser.ends_events(chunk):
                # The usual chunk: whole events. Those wholly before the first thing worth
                # reading are only kept for later, as they came: all of them when there is
                # none (every usage is null and the stream does not end here). They are framed
                # and read only if they are ever asked for.
                first = first_usage_or_done(chunk, self._escaped)
                if first == len(chunk):
                    self._pending.append(_Framed(chunk, parser.pass_whole(chunk)))
                    self._read_if_too_much_pending()
                    return chunk
                end = chunk.rfind(b"\n\n", 0, first)  # of the event before the one at first
                start = end + 2 if end >= 0 else 0
                kept = chunk[:start]
                if kept:
                    self._pending.append(_Framed(kept, parser.pass_whole(kept)))
                events = parser.feed(chunk[start:] if start else chunk)
                stripped = self._read_events(events)
                self._read_if_too_much_pending()
                if not self._strip or not stripped:
                    return chunk
                # The events before ``start`` as they came, then the rest less the stripped.
                return kept + b"".join([e.raw for e in events if all(e is not s for s in stripped)])
            held = parser.buffered  # bytes fed before but not yet returned
            events = parser.feed(chunk)
            stripped_events = self._read_events(events) if events else []
            self._read_if_too_much_pending()
            if not self._strip:
                return chunk  # relayed byte for byte, even when it ends mid-event
            if not stripped_events and not held and not parser.buffered:
                return chunk  # exactly the complete events it holds
            return b"".join([e.raw for e in events if all(e is not s for s in stripped_events)])

    def finish(self) -> bytes:
        """At upstream EOF: read any unterminated last event; return the bytes still to forward."""
        with self._lock:
            event = self._parser.close()
            if event is None:
                return b""
            stripped = self._read_events([event])
            return event.raw if self._strip and not stripped else b""

    def snapshot(self) -> StreamSnapshot:
        """Everything read so far, copied under the lock."""
        with self._lock:
            self._read_pending()
            return StreamSnapshot(
                usage=self._usage,
                text=self._text.joined(),
                is_complete=self._complete,
                upstream_error=self._error,
                model=self._model,
                finish_reasons=self._finish_reasons(),
                events=self._events,
                bad_events=self._bad,
            )

    @property
    def usage(self) -> Usage | None:
        """The provider's own usage, once a usage chunk or terminal event has arrived."""
        return self._usage

    @property
    def text(self) -> str:
        """The reply text so far: content, refusals, reasoning, tool-call names and arguments."""
        with self._lock:
            self._read_pending()
            return self._text.joined()

    @property
    def is_complete(self) -> bool:
        """Whether the upstream ended the stream properly (``[DONE]`` or a terminal event)."""
        return self._complete

    @property
    def upstream_error(self) -> dict[str, Any] | None:
        """The first in-band error the upstream sent, if any."""
        with self._lock:
            self._read_pending()
            return self._error

    @property
    def model(self) -> str | None:
        """The model the upstream says answered (the first non-empty name seen)."""
        with self._lock:
            self._read_pending()
            return self._model

    @property
    def finish_reasons(self) -> tuple[str, ...]:
        """Each choice's finish reason in choice order; for responses, the terminal status."""
        with self._lock:
            self._read_pending()
            return self._finish_reasons()

    @property
    def events(self) -> int:
        """Data events read (``[DONE]`` and bad ones included; comment-only events not)."""
        with self._lock:
            return self._events + sum(
                len(item.data_events()) for item in self._pending if type(item) is _Framed
            )

    @property
    def has_events(self) -> bool:
        """Whether any data event has arrived (``events`` > 0, usually without framing any)."""
        with self._lock:
            return self._events > 0 or any(
                item.data_events() for item in self._pending if type(item) is _Framed
            )

    @property
    def bad_events(self) -> int:
        """Data events skipped because their data was not a JSON object."""
        with self._lock:
            self._read_pending()
            return self._bad

    def _finish_reasons(self) -> tuple[str, ...]:
        return tuple(self._finish[i] for i in sorted(self._finish))

    def _read_events(self, events: list[SSEEvent]) -> list[SSEEvent]:
        """Note the data events among ``events``; return the usage-only chunks to strip."""
        events = [event for event in events if event.has_data]
        if self._api == "responses":
            for event in events:
                self._read(event)
            return []
        stripped = self._read_datas([e.data for e in events], [e.event for e in events])
        return [events[i] for i in stripped]

    def _read_datas(self, datas: list[bytes], names: list[str | None] | None) -> list[int]:
        """Note chat or completions data events (``names`` None: none has a name); return where
        the usage-only chunks to strip are.

        This runs for every event of every stream, so it does as little as it can: a chunk with
        no ``usage`` (or a null one) that is not ``[DONE]`` is only kept for later.
        """
        stripped: list[int] = []
        pending, escaped = self._pending, self._escaped
        for index, data in enumerate(datas):
            name = names[index] if names else None
            if _is_done(data):
                self._complete = True
            elif (
                name is None
                and (
                    b'"usage"' not in data
                    # OpenAI's chunks when usage was asked for: its one "usage" key, null.
                    or (data.endswith(b'"usage":null}') and data.count(b'"usage"') == 1)
                )
                and not (escaped and b"\\u00" in data)
            ):
                pending.append(data)
            else:
                obj = self._read_usage(data, name)
                pending.append((name, data, obj))
                if obj is not None and self._strip and _is_usage_chunk(obj):
                    stripped.append(index)
        self._events += len(datas)
        return stripped

    def _read_if_too_much_pending(self) -> None:
        """Bound the memory a long stream holds: read the backlog once it is large."""
        if self._pending_bytes > _MAX_PENDING_BYTES:
            self._read_pending()

    def _read_usage(self, data: bytes, name: str | None) -> dict[str, Any] | None:
        """The chunk's JSON if it may carry a usage, which is then read; None if it cannot."""
        if name == "error" or not may_carry_usage(data):
            return None
        obj = _loads(data)
        if type(obj) is not dict:
            return None
        usage = obj.get("usage")
        if usage is not None:
            parsed = Usage.from_openai(usage)
            if parsed is not None:
                self._usage = parsed
        return obj

    def _read(self, event: SSEEvent) -> bool:
        """Read one Responses API data event at once; always False (nothing is stripped)."""
        self._events += 1
        data = event.data
        if not _is_done(data):
            self._read_data(event.event, data, None)
        return False

    def _read_pending(self) -> None:
        """Read the chat or completions events kept for later, in the order they came."""
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        for item in pending:
            if type(item) is bytes:
                self._read_data(None, item, None)
            elif isinstance(item, _Framed):
                for event in item.data_events():
                    self._events += 1
                    data = event.data
                    if _is_done(data):
                        self._complete = True  # one before the [DONE] that was read at once
                    else:
                        self._read_data(event.event, data, None)
            else:
                self._read_data(*item)

    def _read_data(self, name: str | None, data: bytes, obj: dict[str, Any] | None) -> None:
        """Update the state from one data event (its usage, if a chunk, is read already)."""
        if obj is None:
            obj = _loads(data)
            if type(obj) is not dict:
                self._bad += 1
                if name == "error" and self._error is None:
                    self._error = {"message": data[:_MAX_ERROR_BYTES].decode("utf-8", "replace")}
                return
        if name == "error":
            self._note_error(obj.get("error"), obj)
        elif self._api == "responses":
            self._read_response_event(obj, name)
        else:
            self._read_chunk(obj)

    def _note_error(self, error: object, whole: dict[str, Any]) -> None:
        if self._error is None:
            self._error = error if type(error) is dict else whole

    def _note_model(self, model: object) -> None:
        if self._model is None and type(model) is str and model:
            self._model = model

    def _read_chunk(self, obj: dict[str, Any]) -> None:
        """A chat or completions chunk."""
        error = obj.get("error")
        if error:  # some compatible providers send "error": null in every chunk
            self._note_error(error, obj)
        if self._model is None:
            self._note_model(obj.get("model"))
        choices = obj.get("choices")
        if type(choices) is not list:
            return
        completions = self._api == "completions"
        for choice in choices:
            if type(choice) is not dict:
                continue
            index = _index(choice, "index")
            reason = choice.get("finish_reason")
            if type(reason) is str:
                self._finish[index] = reason
            if completions:
                self._text.add((index,), choice.get("text"))
                continue
            delta = choice.get("delta")
            if type(delta) is dict and delta:
                self._read_delta(index, delta)

    def _read_delta(self, index: int, delta: dict[str, Any]) -> None:
        """One choice's delta; one pass over its keys, as most deltas hold only ``content``."""
        text = self._text
        for key, value in delta.items():
            if type(value) is str:
                channel = _DELTA_TEXT.get(key)
                # vLLM-style "reasoning" only counts when "reasoning_content" does not repeat it.
                if channel and not (key == "reasoning" and "reasoning_content" in delta):
                    text.add((index, channel), value)
            elif key == "tool_calls" and type(value) is list:
                for call in value:
                    if type(call) is dict:
                        function = call.get("function")
                        if type(function) is dict:
                            text.add_function((index, "tool", _index(call, "index")), function)
            elif key == "function_call" and type(value) is dict:
                text.add_function((index, "function"), value)

    def _read_response_event(self, obj: dict[str, Any], name: str | None) -> None:
        """A Responses API event; its ``type`` names it (the SSE event name repeats it)."""
        kind = obj.get("type")
        if type(kind) is not str:
            kind = name
        if kind in _TEXT_DELTAS:
            channel = (_index(obj, "output_index"), _index(obj, "content_index"))
            self._text.add(channel, obj.get("delta"))
        elif kind == "response.output_item.added":
            item = obj.get("item")
            if type(item) is dict and item.get("type") == "function_call":
                self._text.add((_index(obj, "output_index"), 0), item.get("name"))
        elif kind == "error":
            self._note_error(obj.get("error"), obj)
        else:
            response = obj.get("response")
            if type(response) is not dict:
                return
            self._note_model(response.get("model"))
            if kind in _TERMINAL:
                self._read_terminal(kind, response)

    def _read_terminal(self, kind: str, response: dict[str, Any]) -> None:
        self._complete = True
        usage = Usage.from_openai(response.get("usage"))
        if usage is not None:
            self._usage = usage
        status = response.get("status")
        details = response.get("incomplete_details")
        reason = details.get("reason") if type(details) is dict else None
        if type(reason) is str:
            self._finish[0] = reason
        elif type(status) is str:
            self._finish[0] = status
        if kind == "response.failed":
            self._note_error(response.get("error"), response)


def _is_done(data: bytes) -> bool:
    """Whether an event's data is ``[DONE]`` (spaces around it allowed); one byte test first."""
    return data[:1] == b"[" and data.strip() == _DONE


def _is_usage_chunk(obj: dict[str, Any]) -> bool:
    """``"choices": []`` with a usage: Azure's prompt-filter chunks have no usage and stay."""
    return obj.get("choices") == [] and obj.get("usage") is not None


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
