"""What the mock serves besides generations: its model list and deterministic embeddings."""

from __future__ import annotations

import base64
import functools
import sys
import zlib
from array import array
from typing import Any

from sentinel.mock.replies import dump_json

__all__ = ["MODELS", "embeddings_json", "model_json", "models_json"]

# id → created (fixed, so the list is byte-for-byte the same on every run).
MODELS: dict[str, int] = {
    "gpt-4o-mini": 1721172741,
    "gpt-4o": 1715367049,
    "gpt-4.1-mini": 1744318173,
    "o3-mini": 1737146383,
    "gpt-3.5-turbo-instruct": 1692901427,
    "text-embedding-3-small": 1705948997,
    "text-embedding-3-large": 1705953180,
    "mock-1": 1700000000,
}

_DIMENSIONS = {"text-embedding-3-large": 3072}
_DEFAULT_DIMENSIONS = 1536
MAX_DIMENSIONS = 4096


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": MODELS[model_id], "owned_by": "system"}


@functools.cache
def models_json() -> bytes:
    """The ``GET /v1/models`` list."""
    return dump_json({"object": "list", "data": [_model(model_id) for model_id in MODELS]})


def model_json(model_id: str) -> bytes | None:
    """One model object, or None for a model the mock does not list."""
    return dump_json(_model(model_id)) if model_id in MODELS else None


@functools.cache
def _table() -> array[float]:
    """A fixed pseudo-random float32 table that every vector is a window of."""
    return array("f", (((j * 2654435761) % 2001 - 1000) / 1000 for j in range(2 * MAX_DIMENSIONS)))


def embeddings_json(
    model: str, texts: list[str], dimensions: int | None, as_base64: bool, tokens: int | None
) -> bytes:
    """An embeddings list (usage left out when ``tokens`` is None).

    Each text's vector is a window of one fixed table, chosen by the text's CRC-32; ``base64``
    vectors are little-endian float32, as OpenAI sends them.
    """
    size = dimensions or _DIMENSIONS.get(model, _DEFAULT_DIMENSIONS)
    table = _table()
    data = []
    for index, text in enumerate(texts):
        start = zlib.crc32(text.encode()) % MAX_DIMENSIONS
        window = table[start : start + size]
        vector: Any = _base64(window) if as_base64 else window.tolist()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    body: dict[str, Any] = {"object": "list", "data": data, "model": model}
    if tokens is not None:
        body["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return dump_json(body)


def _base64(window: array[float]) -> str:
    if sys.byteorder == "big":  # pragma: no cover - the wire format is little-endian
        window.byteswap()
    return base64.b64encode(window.tobytes()).decode()
