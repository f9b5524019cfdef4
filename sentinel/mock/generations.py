"""Handlers for the generating endpoints: chat, completions, responses, embeddings and models.

Each reply has ``chunks`` content pieces (one word each, so ``completion_tokens == chunks``),
fewer when the request's ``max_tokens`` / ``max_completion_tokens`` / ``max_output_tokens`` is
smaller, in which case it finishes with ``length`` (``incomplete`` for the Responses API).
"""

from __future__ import annotations

import time

from aiohttp import web

from sentinel.mock.catalog import MAX_DIMENSIONS, embeddings_json, model_json, models_json
from sentinel.mock.delivery import Call, send_json, send_parts
from sentinel.mock.errors import MockError
from sentinel.mock.prompts import (
    Prompt,
    chat_prompt,
    completion_prompt,
    embedding_inputs,
    responses_prompt,
)
from sentinel.mock.replies import (
    Reply,
    chat_frames,
    chat_json,
    completion_frames,
    completion_json,
    reply_pieces,
)
from sentinel.mock.responses import response_events, response_json
from sentinel.mock.settings import HEADER_USAGE_DETAILS, parse_usage_details

__all__ = ["chat", "completions", "embeddings", "model", "models", "responses"]


def _reply(call: Call, prompt: Prompt, prefix: str) -> Reply:
    chunks = call.knobs.chunks
    count = chunks if prompt.max_tokens is None else min(chunks, prompt.max_tokens)
    cached, reasoning = parse_usage_details(call.request.headers.get(HEADER_USAGE_DETAILS))
    return Reply(
        id=f"{prefix}mock{call.number:016d}",
        created=int(time.time()),
        model=prompt.model,
        pieces=reply_pieces(prompt.model, prompt.echo, count),
        finish_reason="length" if count < chunks else "stop",
        prompt_tokens=prompt.prompt_tokens,
        has_usage=not call.knobs.has("no-usage"),
        cached_tokens=min(cached, prompt.prompt_tokens),
        reasoning_tokens=reasoning,
    )


async def chat(call: Call) -> web.StreamResponse:
    """``POST /v1/chat/completions``."""
    prompt = chat_prompt(await call.json())
    reply = _reply(call, prompt, "chatcmpl-")
    if prompt.stream:
        done = not call.knobs.has("no-done")
        return await send_parts(call, chat_frames(reply, prompt.include_usage, done))
    return await send_json(call, chat_json(reply))


async def completions(call: Call) -> web.StreamResponse:
    """``POST /v1/completions``."""
    prompt = completion_prompt(await call.json())
    reply = _reply(call, prompt, "cmpl-")
    if prompt.stream:
        done = not call.knobs.has("no-done")
        return await send_parts(call, completion_frames(reply, prompt.include_usage, done))
    return await send_json(call, completion_json(reply))


async def responses(call: Call) -> web.StreamResponse:
    """``POST /v1/responses``; under ``no-done`` a stream lacks its terminal event."""
    prompt = responses_prompt(await call.json())
    reply = _reply(call, prompt, "resp_")
    if prompt.stream:
        return await send_parts(call, response_events(reply, not call.knobs.has("no-done")))
    return await send_json(call, response_json(reply))


async def embeddings(call: Call) -> web.StreamResponse:
    """``POST /v1/embeddings``: float lists, or base64 float32 as the SDK asks by default."""
    body = await call.json()
    model, texts, tokens = embedding_inputs(body)
    dimensions = body.get("dimensions")
    if dimensions is not None and not (
        isinstance(dimensions, int) and not isinstance(dimensions, bool)
    ):
        raise MockError("'dimensions' must be an integer.", param="dimensions")
    if dimensions is not None and not 1 <= dimensions <= MAX_DIMENSIONS:
        raise MockError(f"'dimensions' must be within 1-{MAX_DIMENSIONS}.", param="dimensions")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise MockError("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    usage = None if call.knobs.has("no-usage") else tokens
    reply = embeddings_json(model, texts, dimensions, encoding == "base64", usage)
    return await send_json(call, reply)


async def models(call: Call) -> web.StreamResponse:
    """``GET /v1/models``."""
    return await send_json(call, models_json())


async def model(call: Call) -> web.StreamResponse:
    """``GET /v1/models/{model}``; a model the mock does not list is a 404."""
    name = call.request.match_info["model"]
    found = model_json(name)
    if found is None:
        raise MockError(
            f"The model '{name}' does not exist",
            status=404,
            param="model",
            code="model_not_found",
        )
    return await send_json(call, found)
