"""The Responses API: the ``response`` object and its semantic SSE events.

A stream is ``event: <type>\\ndata: {json}\\n\\n`` frames, each JSON carrying ``type`` and a
``sequence_number`` counted from 0: ``response.created``, ``response.in_progress``,
``response.output_item.added``, ``response.content_part.added``, one
``response.output_text.delta`` per piece, ``response.output_text.done``,
``response.content_part.done``, ``response.output_item.done`` and finally
``response.completed`` (``response.incomplete`` when ``max_output_tokens`` cut the reply), whose
``response.usage`` is the only usage in the stream. There is no ``[DONE]``.
"""

from __future__ import annotations

from typing import Any

import orjson

from sentinel.mock.replies import Reply, dump_json

__all__ = ["response_events", "response_json"]


def response_json(reply: Reply) -> bytes:
    """A finished ``response`` object."""
    return dump_json(_response(reply, _final_status(reply), [_message(reply, True)]))


def response_events(reply: Reply, done: bool) -> list[bytes]:
    """Every event of a streamed response; without ``done`` the terminal event is left out."""
    item_id = _item_id(reply)
    where: dict[str, Any] = {"item_id": item_id, "output_index": 0, "content_index": 0}
    started = _response(reply, "in_progress", [])
    frames = [
        _event("response.created", 0, {"response": started}),
        _event("response.in_progress", 1, {"response": started}),
        _event(
            "response.output_item.added", 2, {"output_index": 0, "item": _message(reply, False)}
        ),
        _event("response.content_part.added", 3, {**where, "part": _part("")}),
    ]
    delta_head = (
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
        b'"sequence_number":'
    )
    delta_where = orjson.dumps(where)[1:-1]
    for seq, piece in enumerate(reply.pieces, start=4):
        delta = b"," + delta_where + b',"delta":' + orjson.dumps(piece) + b',"logprobs":[]}\n\n'
        frames.append(delta_head + str(seq).encode() + delta)
    seq = len(frames)
    text = reply.text
    frames.append(_event("response.output_text.done", seq, {**where, "text": text, "logprobs": []}))
    frames.append(_event("response.content_part.done", seq + 1, {**where, "part": _part(text)}))
    item = {"output_index": 0, "item": _message(reply, True)}
    frames.append(_event("response.output_item.done", seq + 2, item))
    if done:
        status = _final_status(reply)
        final = {"response": _response(reply, status, [_message(reply, True)])}
        frames.append(_event(f"response.{status}", seq + 3, final))
    return frames


def _event(kind: str, seq: int, fields: dict[str, Any]) -> bytes:
    data = orjson.dumps({"type": kind, "sequence_number": seq, **fields})
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


def _final_status(reply: Reply) -> str:
    return "incomplete" if reply.finish_reason == "length" else "completed"


def _item_id(reply: Reply) -> str:
    return "msg_" + reply.id.removeprefix("resp_")


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _message(reply: Reply, finished: bool) -> dict[str, Any]:
    status = _final_status(reply) if finished else "in_progress"
    content = [_part(reply.text)] if finished else []
    return {
        "id": _item_id(reply),
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }


def _response(reply: Reply, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    finished = status != "in_progress"
    return {
        "id": reply.id,
        "object": "response",
        "created_at": reply.created,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": None,
        "max_output_tokens": None,
        "model": reply.model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": _usage(reply) if finished and reply.has_usage else None,
        "user": None,
        "metadata": {},
    }


def _usage(reply: Reply) -> dict[str, Any]:
    return {
        "input_tokens": reply.prompt_tokens,
        "input_tokens_details": {"cached_tokens": reply.cached_tokens},
        "output_tokens": reply.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }
