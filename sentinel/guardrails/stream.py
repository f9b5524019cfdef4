"""Screening a streamed reply as it is relayed, holding back only what a match could still span.

``GuardedStream`` wraps the stream's tap (the usage accumulator, which keeps seeing the
upstream's own bytes) and rewrites the events that tap lets through. Each text channel (a
choice's content, refusal or tool-call arguments; a Responses output part) has its own
``TextScreen``: a delta's text is replaced by what that screen releases, and the rest is
released when the channel ends (its ``finish_reason``, its ``.done`` event, ``[DONE]`` or the
end of the stream), so the client never waits on more than ``Screen.hold_back`` characters
of a channel. ``logprobs`` are dropped from every event of a screened stream: they spell the
tokens of text that may still be redacted. A block rule ends the stream with an in-band error
event (before anything was sent, with a 400).
"""

from __future__ import annotations

from typing import Any

import orjson

from sentinel.errors import ContentBlocked
from sentinel.guardrails.bodies import screen_reply
from sentinel.guardrails.screen import Blocked, Hits, Screen, TextScreen
from sentinel.streaming.relay import StreamTap
from sentinel.streaming.sse import SSEEvent, SSEParser

__all__ = ["GuardedStream", "reply_blocked"]

_DONE = b"[DONE]"
_DELTAS = {
    "response.output_text.delta": "response.output_text.done",
    "response.refusal.delta": "response.refusal.done",
    "response.function_call_arguments.delta": "response.function_call_arguments.done",
}
_DONE_FIELDS = {
    "response.output_text.done": "text",
    "response.refusal.done": "refusal",
    "response.function_call_arguments.done": "arguments",
}
_WHOLE = frozenset({"response.completed", "response.incomplete", "response.failed"})
_Channel = tuple[Any, ...]


def reply_blocked(rule: str) -> ContentBlocked:
    """The error for a reply that a block rule stopped."""
    return ContentBlocked(f"The model's reply was blocked by the content rule '{rule}'.")


class GuardedStream:
    """A ``StreamTap`` that screens the text of what another tap forwards."""

    def __init__(self, inner: StreamTap, api: str, screen: Screen, hits: Hits) -> None:
        self._inner = inner
        self._api = api
        self._screen = screen
        self._hits = hits
        self._parser = SSEParser()
        self._channels: dict[_Channel, TextScreen] = {}
        self._openers: dict[_Channel, dict[str, Any]] = {}  # a delta event to copy at the end
        self._envelope: dict[str, Any] = {}  # id, object, created, model of the last chunk

    @property
    def is_complete(self) -> bool:
        return self._inner.is_complete

    def feed(self, chunk: bytes) -> bytes:
        out = self._inner.feed(chunk)
        return self._rewrite(self._parser.feed(out)) if out else b""

    def finish(self) -> bytes:
        tail = self._inner.finish()
        events = self._parser.feed(tail) if tail else []
        last = self._parser.close()
        if last is not None:
            events.append(last)
        return self._rewrite(events) + self._flush_all()

    def _rewrite(self, events: list[SSEEvent]) -> bytes:
        try:
            return b"".join([self._event(e) for e in events])
        except Blocked as blocked:
            raise reply_blocked(blocked.rule) from None

    def _event(self, event: SSEEvent) -> bytes:
        if not event.has_data or event.event == "error":
            return event.raw
        if event.data.strip() == _DONE:
            return self._flush_all() + event.raw
        try:
            obj = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return event.raw
        if type(obj) is not dict:
            return event.raw
        before = self._responses_event(obj) if self._api == "responses" else self._chunk(obj)
        head = b"event: " + event.event.encode() + b"\n" if event.event else b""
        return before + head + b"data: " + orjson.dumps(obj) + b"\n\n"

    def _channel(self, key: _Channel) -> TextScreen:
        found = self._channels.get(key)
        if found is None:
            found = self._channels[key] = TextScreen(self._screen, self._hits)
        return found

    # --- chat and completions chunks ---------------------------------------------------------

    def _chunk(self, obj: dict[str, Any]) -> bytes:
        self._envelope = {k: obj[k] for k in ("id", "object", "created", "model") if k in obj}
        choices = obj.get("choices")
        for choice in choices if type(choices) is list else ():
            if type(choice) is not dict:
                continue
            if choice.get("logprobs") is not None:
                choice["logprobs"] = None
            index = choice.get("index", 0)
            ends = choice.get("finish_reason") is not None
            if self._api == "completions":
                self._text(choice, "text", (index, "text"), ends)
                continue
            delta = choice.get("delta")
            if type(delta) is not dict:
                if not ends:
                    continue
                delta = choice["delta"] = {}
            self._text(delta, "content", (index, "content"), ends)
            self._text(delta, "refusal", (index, "refusal"), ends)
            self._calls(delta, index, ends)
        return b""

    def _text(self, obj: dict[str, Any], key: str, channel: _Channel, ends: bool) -> None:
        value = obj.get(key)
        if type(value) is str and value:
            obj[key] = self._channel(channel).feed(value, final=ends)
            if ends:
                del self._channels[channel]
        elif ends and channel in self._channels:
            tail = self._channels.pop(channel).finish()
            if tail:
                obj[key] = tail

    def _calls(self, delta: dict[str, Any], index: Any, ends: bool) -> None:
        calls = delta.get("tool_calls")
        seen: set[Any] = set()
        for call in calls if type(calls) is list else ():
            function = call.get("function") if type(call) is dict else None
            if type(function) is dict:
                seen.add(call.get("index", 0))
                self._text(function, "arguments", (index, "tool", call.get("index", 0)), ends)
        if not ends:
            return
        for channel in [c for c in self._channels if c[:2] == (index, "tool")]:
            tail = self._channels.pop(channel).finish()
            if tail:
                extra = {"index": channel[2], "function": {"arguments": tail}}
                delta.setdefault("tool_calls", []).append(extra)

    def _flush_all(self) -> bytes:
        """Release every channel still open, as events of their own."""
        out: list[bytes] = []
        for channel in list(self._channels):
            tail = self._channels.pop(channel).finish()
            if tail:
                out.append(self._tail_event(channel, tail))
        return b"".join(out)

    def _tail_event(self, channel: _Channel, tail: str) -> bytes:
        opener = self._openers.get(channel)
        if opener is not None:  # a Responses API delta event
            return _sse({**opener, "delta": tail}, opener.get("type"))
        index, kind = channel[0], channel[1]
        choice: dict[str, Any] = {"index": index, "finish_reason": None}
        if kind == "text":
            choice["text"] = tail
        elif kind == "tool":
            calls = [{"index": channel[2], "function": {"arguments": tail}}]
            choice["delta"] = {"tool_calls": calls}
        else:
            choice["delta"] = {kind: tail}
        return _sse({**self._envelope, "choices": [choice]}, None)

    # --- Responses API events ----------------------------------------------------------------

    def _responses_event(self, obj: dict[str, Any]) -> bytes:
        kind = obj.get("type")
        channel = (kind, obj.get("item_id"), obj.get("output_index"), obj.get("content_index"))
        if kind in _DELTAS and type(obj.get("delta")) is str:
            self._openers.setdefault(channel, {k: v for k, v in obj.items() if k != "delta"})
            obj["delta"] = self._channel(channel).feed(obj["delta"])
            if "logprobs" in obj:
                obj["logprobs"] = []
            return b""
        before = b""
        if kind in _DONE_FIELDS:
            opened = (next(k for k, v in _DELTAS.items() if v == kind), *channel[1:])
            if opened in self._channels:
                tail = self._channels.pop(opened).finish()
                if tail:
                    before = self._tail_event(opened, tail)
            self._whole(obj, _DONE_FIELDS[kind])
            if "logprobs" in obj:
                obj["logprobs"] = []
        elif kind == "response.content_part.done" and type(obj.get("part")) is dict:
            self._whole(obj["part"], "text")
            self._whole(obj["part"], "refusal")
        elif kind == "response.output_item.done" and type(obj.get("item")) is dict:
            screen_reply({"output": [obj["item"]]}, self._screen, {})
        elif kind in _WHOLE and type(obj.get("response")) is dict:
            screen_reply(obj["response"], self._screen, {})
        return before

    def _whole(self, obj: dict[str, Any], key: str) -> None:
        """A text the deltas already spelled out: screened again whole (counted once)."""
        value = obj.get(key)
        if type(value) is str and value:
            obj[key] = self._screen.text(value, {})


def _sse(obj: dict[str, Any], name: object) -> bytes:
    head = b"event: " + name.encode() + b"\n" if isinstance(name, str) else b""
    return head + b"data: " + orjson.dumps(obj) + b"\n\n"
