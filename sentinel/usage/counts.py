"""Token counts as a provider reports them, read from either of OpenAI's two ``usage`` shapes.

Chat completions, completions and embeddings report ``prompt_tokens`` / ``completion_tokens``
(embeddings have no completion) with ``prompt_tokens_details.cached_tokens`` and
``completion_tokens_details.reasoning_tokens``; the Responses API reports ``input_tokens`` /
``output_tokens`` with ``input_tokens_details`` and ``output_tokens_details``. Both become one
``Usage``. The numbers settle a token reservation, so anything doubtful is rejected whole and
the caller falls back to counting the text itself.

``Usage`` is built for every request: a slotted dataclass that is not frozen (a frozen one
sets each field through ``object.__setattr__``, several times slower to build); it is never
changed once built, and hashes by value (``unsafe_hash``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_TOKENS", "Usage"]

# Limits are settled in Redis Lua, whose numbers are doubles: above 2**53 integers stop being
# exact, and no real reply comes anywhere near it.
MAX_TOKENS = 2**53 - 1

_ABSENT = object()


class _Invalid(Exception):
    """A usage field has the wrong type or range (never leaves this module)."""


def _count(obj: dict[object, object], key: str, *, default: int | None = None) -> int:
    """The token count under ``key``; missing (or null, when there is a default) → ``default``."""
    value = obj.get(key, _ABSENT)
    if value is _ABSENT or (value is None and default is not None):
        if default is None:
            raise _Invalid(key)
        return default
    # ``type(...) is int`` rejects bools (an int subclass), floats and big-number strings.
    if type(value) is not int or not 0 <= value <= MAX_TOKENS:
        raise _Invalid(key)
    return value


def _detail(obj: dict[object, object], key: str, field: str) -> int:
    """``obj[key][field]``, where a missing or null details object or field means 0."""
    details = obj.get(key)
    if details is None:
        return 0
    if type(details) is not dict:
        raise _Invalid(key)
    return _count(details, field, default=0)


@dataclass(slots=True, unsafe_hash=True)  # per request: not frozen, see the module doc
class Usage:
    """Token counts for one request; ``cached`` and ``reasoning`` are parts of prompt/completion."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    audio_prompt_tokens: int = 0  # part of prompt_tokens (chat completions' audio models)
    audio_completion_tokens: int = 0  # part of completion_tokens

    @classmethod
    def from_openai(cls, obj: object) -> Usage | None:
        """Read an OpenAI ``usage`` object of either shape; None unless it is a valid one.

        A missing ``total_tokens`` is the sum of the parts; a missing ``completion_tokens`` (an
        embeddings reply) is 0. Wrong types, bools, negative or absurd numbers give None. This
        never raises, whatever ``obj`` is.
        """
        if type(obj) is not dict:
            return None
        try:
            if "prompt_tokens" in obj:
                prompt = _count(obj, "prompt_tokens")
                completion = _count(obj, "completion_tokens", default=0)
                cached = _detail(obj, "prompt_tokens_details", "cached_tokens")
                reasoning = _detail(obj, "completion_tokens_details", "reasoning_tokens")
                audio_in = _detail(obj, "prompt_tokens_details", "audio_tokens")
                audio_out = _detail(obj, "completion_tokens_details", "audio_tokens")
            elif "input_tokens" in obj:
                prompt = _count(obj, "input_tokens")
                completion = _count(obj, "output_tokens")
                cached = _detail(obj, "input_tokens_details", "cached_tokens")
                reasoning = _detail(obj, "output_tokens_details", "reasoning_tokens")
                audio_in = audio_out = 0
            else:
                return None
            total = _count(obj, "total_tokens", default=prompt + completion)
        except _Invalid:
            return None
        if total > MAX_TOKENS:
            return None  # a missing total whose parts add up to more than can be settled
        return cls(prompt, completion, total, cached, reasoning, audio_in, audio_out)
