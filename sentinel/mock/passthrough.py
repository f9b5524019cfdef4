"""Targets for a gateway's pass-through paths: audio, images, moderations, files and an echo.

Bodies are read as streams (``iter_any``), hashed and counted as they arrive, so a test can
check that a multipart upload reached the upstream byte for byte without buffering it twice.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import BodyPartReader, web

from sentinel.mock.delivery import Call, send_json, send_parts
from sentinel.mock.errors import MockError
from sentinel.mock.replies import dump_json
from sentinel.mock.settings import HEADER_BYTES, parse_byte_count

__all__ = ["echo", "files_list", "files_upload", "images", "moderations", "speech", "transcription"]

SPEECH_BYTES = 1024 * 1024
SPEECH_CHUNK = 64 * 1024
MAX_SPEECH_BYTES = 1 << 30
_SPEECH_BLOCK = bytes(range(256)) * (SPEECH_CHUNK // 256)
_CATEGORIES = ("harassment", "hate", "self-harm", "sexual", "violence")


async def transcription(call: Call) -> web.StreamResponse:
    """``POST /v1/audio/transcriptions``: the raw body's size and hash, and a made-up text."""
    size, sha256 = await call.digest()
    text = f"Mock transcription of {size} bytes."
    return await send_json(
        call, dump_json({"text": text, "bytes_received": size, "sha256": sha256})
    )


async def speech(call: Call) -> web.StreamResponse:
    """``POST /v1/audio/speech``: ``x-mock-bytes`` (default 1 MiB) of audio/mpeg, streamed."""
    size = parse_byte_count(call.request.headers.get(HEADER_BYTES), SPEECH_BYTES, MAX_SPEECH_BYTES)
    body = await call.json()
    if not isinstance(body.get("input"), str):
        raise MockError("'input' is a required string.", param="input")
    parts = [_SPEECH_BLOCK] * (size // SPEECH_CHUNK)
    if size % SPEECH_CHUNK:
        parts.append(_SPEECH_BLOCK[: size % SPEECH_CHUNK])
    return await send_parts(call, parts, "audio/mpeg", coalesce=False)


async def images(call: Call) -> web.StreamResponse:
    """``POST /v1/images/generations``: ``n`` placeholder images (URLs or base64)."""
    body = await call.json()
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise MockError("'prompt' is a required string.", param="prompt")
    count = body.get("n", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 10:
        raise MockError("'n' must be an integer within 1-10.", param="n")
    as_base64 = body.get("response_format") == "b64_json"
    data = [
        {"b64_json": "iVBORw0KGgo="} if as_base64 else {"url": f"https://mock.invalid/{i}.png"}
        for i in range(count)
    ]
    for image in data:
        image["revised_prompt"] = prompt
    return await send_json(call, dump_json({"created": int(time.time()), "data": data}))


async def moderations(call: Call) -> web.StreamResponse:
    """``POST /v1/moderations``: one unflagged result per input."""
    body = await call.json()
    value = body.get("input")
    inputs = value if isinstance(value, list) else [value]
    if value is None or not inputs:
        raise MockError("'input' is required.", param="input")
    result = {
        "flagged": False,
        "categories": dict.fromkeys(_CATEGORIES, False),
        "category_scores": dict.fromkeys(_CATEGORIES, 0.0),
    }
    model = body.get("model") if isinstance(body.get("model"), str) else "omni-moderation-latest"
    reply = {"id": f"modr-mock{call.number}", "model": model, "results": [result] * len(inputs)}
    return await send_json(call, dump_json(reply))


def _file(call: Call, size: int, filename: str, purpose: str) -> dict[str, Any]:
    return {
        "id": f"file-mock{call.number}",
        "object": "file",
        "bytes": size,
        "created_at": int(time.time()),
        "filename": filename,
        "purpose": purpose,
    }


async def files_upload(call: Call) -> web.StreamResponse:
    """``POST /v1/files``: the multipart upload is read as a stream; answers a file object."""
    if not call.request.content_type.startswith("multipart/"):
        raise MockError("Expected a multipart/form-data upload.", param="file")
    fields: dict[str, str] = {}
    size = 0
    filename = "upload"
    async for part in await call.request.multipart():
        if isinstance(part, BodyPartReader) and part.filename is not None:
            filename = part.filename
            while chunk := await part.read_chunk():
                size += len(chunk)
        elif isinstance(part, BodyPartReader) and part.name is not None:
            fields[part.name] = await part.text()
    call.record.body_bytes = call.request.content.total_bytes
    reply = _file(call, size, filename, fields.get("purpose", "user_data"))
    return await send_json(call, dump_json(reply))


async def files_list(call: Call) -> web.StreamResponse:
    """``GET /v1/files``: an empty list page."""
    page: dict[str, Any] = {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }
    return await send_json(call, dump_json(page))


async def echo(call: Call) -> web.StreamResponse:
    """Any other ``/v1`` path and method: what arrived, so a test can compare it."""
    size, sha256 = await call.digest()
    request = call.request
    reply = {
        "method": request.method,
        "path": request.path,
        "query": request.query_string,
        "body_bytes": size,
        "body_sha256": sha256,
        "content_type": request.headers.get("Content-Type"),
    }
    return await send_json(call, dump_json(reply))
