"""Usage when the provider gives none, and how far Sentinel's prompt counts drift from it.

The provider's own ``usage`` always wins (source ``provider``). Without it — the client left,
the upstream died mid-stream, or it never reports usage — Sentinel counts the prompt it sent
and the completion text it saw with tiktoken (source ``estimated``): the joined text, never a
per-chunk sum.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

from sentinel.tokens import ModelCounter
from sentinel.usage.counts import Usage

__all__ = ["DriftStats", "UsageSource", "completion_text", "settle_usage"]

UsageSource = Literal["provider", "estimated"]
_INLINE_TEXT = 64 * 1024  # longer completions are counted in a worker thread
_MAX_MODELS = 1024


async def settle_usage(
    provider: Usage | None, prompt_estimate: int, text: str, counter: ModelCounter
) -> tuple[Usage, UsageSource]:
    """The usage to record for one request, and where it came from."""
    if provider is not None:
        return provider, "provider"
    if len(text) > _INLINE_TEXT:
        completion = await asyncio.to_thread(counter.count_text, text)
    else:
        completion = counter.count_text(text) if text else 0
    usage = Usage(
        prompt_tokens=prompt_estimate,
        completion_tokens=completion,
        total_tokens=prompt_estimate + completion,
    )
    return usage, "estimated"


def completion_text(parsed: object) -> str:
    """The generated text of a non-streamed chat, completions or responses reply."""
    if not isinstance(parsed, dict):
        return ""
    pieces: list[str] = []
    for choice in _dicts(parsed.get("choices")):
        if isinstance(choice.get("text"), str):
            pieces.append(choice["text"])
        message = choice.get("message")
        if isinstance(message, dict):
            _message_text(message, pieces)
    for item in _dicts(parsed.get("output")):
        for part in _dicts(item.get("content")):
            if isinstance(part.get("text"), str):
                pieces.append(part["text"])
        if isinstance(item.get("arguments"), str):
            pieces.append(item["arguments"])
    return "".join(pieces)


def _message_text(message: dict[str, Any], pieces: list[str]) -> None:
    for field in ("content", "refusal", "reasoning_content"):
        if isinstance(message.get(field), str):
            pieces.append(message[field])
    for call in _dicts(message.get("tool_calls")):
        function = call.get("function")
        if isinstance(function, dict):
            pieces.extend(
                v for v in (function.get("name"), function.get("arguments")) if isinstance(v, str)
            )


def _dicts(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


@dataclass(slots=True)
class _Drift:
    requests: int = 0
    estimated: int = 0
    actual: int = 0


class DriftStats:
    """Per-model running totals of estimated versus provider-reported prompt tokens."""

    def __init__(self) -> None:
        self._by_model: dict[str, _Drift] = {}

    def observe(self, model: str, estimated: int, actual: int) -> None:
        """Record one request whose prompt was both estimated and reported."""
        drift = self._by_model.get(model)
        if drift is None:
            if len(self._by_model) >= _MAX_MODELS:
                return  # client-chosen names must not grow memory without bound
            drift = self._by_model[model] = _Drift()
        drift.requests += 1
        drift.estimated += estimated
        drift.actual += actual

    def ratio_permille(self, model: str) -> int | None:
        """Estimated / actual prompt tokens for ``model``, in thousandths (1000 = exact)."""
        drift = self._by_model.get(model)
        if drift is None or drift.actual == 0:
            return None
        return drift.estimated * 1000 // drift.actual

    def models(self) -> list[str]:
        """The models observed so far."""
        return list(self._by_model)
