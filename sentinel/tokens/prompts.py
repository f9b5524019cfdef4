"""Prompt counting for admission: one ``PromptCounter`` per process, a ``ModelCounter`` per call.

``PromptCounter`` is built once from the loaded ``Encodings`` and the configured default
encoding. ``for_model`` resolves the request's model (cached) to a ``ModelCounter``, whose
``count_*`` methods are pure functions of the parsed JSON body that never raise. Counting a big
prompt takes milliseconds of CPU, so ``count_prompt`` hands bodies with more than
``INLINE_LIMIT`` characters of text to a worker thread (tiktoken releases the GIL) and counts
small ones inline, where a thread hop would cost more than the count.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from sentinel.tokens.chat import count_chat
from sentinel.tokens.content import ContentCounter
from sentinel.tokens.encodings import Encodings, TokenizerError
from sentinel.tokens.models import ModelResolver
from sentinel.tokens.responses import count_responses
from sentinel.tokens.tools import ToolFormat, tool_format

__all__ = ["INLINE_LIMIT", "Api", "ModelCounter", "PromptCounter", "completion_cap"]

Api = Literal["chat", "completions", "embeddings", "responses"]

INLINE_LIMIT = 64 * 1024  # characters of text counted on the event loop
_INLINE_NODES = 4096  # JSON values inspected before a body is treated as big
_COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # the legacy Completions API's documented default


@dataclass(frozen=True, slots=True)
class ModelCounter:
    """Counts prompts for one resolved model: its encoding, image pricing and tool format."""

    encoding_name: str
    content: ContentCounter
    tools: ToolFormat

    def count_text(self, text: str) -> int:
        """Tokens in ``text``; special-token strings such as ``<|endoftext|>`` are plain text."""
        return self.content.text(text)

    def count_chat(self, body: object) -> int:
        """Prompt tokens of a Chat Completions body."""
        return count_chat(self.content, self.tools, body)

    def count_completions(self, body: object) -> int:
        """Prompt tokens of a legacy Completions body (``prompt`` and ``suffix``)."""
        if not isinstance(body, dict):
            return self.content.unknown(body)
        suffix = body.get("suffix")
        return self._inputs(body.get("prompt")) + (
            self.content.text(suffix) if isinstance(suffix, str) else 0
        )

    def count_embeddings(self, body: object) -> int:
        """Input tokens of an Embeddings body."""
        if not isinstance(body, dict):
            return self.content.unknown(body)
        return self._inputs(body.get("input"))

    def count_responses(self, body: object) -> int:
        """Input tokens of a Responses body."""
        return count_responses(self.content, self.tools, body)

    def count(self, api: Api, body: object) -> int:
        """Prompt tokens of ``body`` for ``api``, counted on the calling thread."""
        if api == "chat":
            return self.count_chat(body)
        if api == "completions":
            return self.count_completions(body)
        if api == "embeddings":
            return self.count_embeddings(body)
        if api == "responses":
            return self.count_responses(body)
        return self.content.unknown(body)

    async def count_prompt(self, api: Api, body: object, *, size_hint: int | None = None) -> int:
        """``count`` inline for small bodies, in a worker thread for big ones.

        ``size_hint`` is the raw body's length in bytes, when known: JSON text never holds
        more characters than that, so it settles the choice without walking the body.
        """
        if size_hint is not None and size_hint <= INLINE_LIMIT:
            return self.count(api, body)
        if size_hint is None and _is_small(body):
            return self.count(api, body)
        return await asyncio.to_thread(self.count, api, body)

    def _inputs(self, value: object) -> int:
        """A string, a list of strings, a token array, or a list of token arrays."""
        if isinstance(value, str):
            return self.content.text(value)
        if not isinstance(value, list) or not value:
            return 0 if value is None else self.content.unknown(value)
        if isinstance(value[0], int):  # one token array: its length is the count
            return len(value)
        total = 0
        for item in value:
            if isinstance(item, str):
                total += self.content.text(item)
            elif isinstance(item, list):
                total += len(item)
            else:
                total += self.content.unknown(item)
        return total


def _is_small(body: object) -> bool:
    """Whether ``body`` holds at most ``INLINE_LIMIT`` characters, looking at few values."""
    budget, nodes = INLINE_LIMIT, 0
    stack = [body]
    while stack:
        nodes += 1
        if nodes > _INLINE_NODES:
            return False
        item = stack.pop()
        if isinstance(item, str):
            budget -= len(item)
            if budget < 0:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            if len(item) > _INLINE_NODES:
                return False
            stack.extend(item)
    return True


class PromptCounter:
    """Resolves models to ``ModelCounter`` objects over encodings loaded once at startup."""

    def __init__(
        self, encodings: Encodings, default_encoding: str = "o200k_base", *, cache_size: int = 4096
    ) -> None:
        if default_encoding not in encodings:
            raise TokenizerError(f"{default_encoding}: default encoding is not loaded")
        self._encodings = encodings
        self._resolver = ModelResolver(default_encoding, encodings.names, cache_size=cache_size)

    @property
    def default_encoding(self) -> str:
        """The encoding used for model names nobody recognises."""
        return self._resolver.default

    def for_model(self, model: object) -> ModelCounter:
        """The counter for ``model`` (any JSON value; non-strings get the default)."""
        profile = self._resolver.resolve(model)
        content = ContentCounter(self._encodings.get(profile.encoding), profile.images)
        return ModelCounter(profile.encoding, content, tool_format(profile.encoding))

    async def count_prompt(self, api: Api, body: object, *, size_hint: int | None = None) -> int:
        """Prompt tokens of ``body`` for the model it names (see ``ModelCounter.count_prompt``)."""
        model = body.get("model") if isinstance(body, dict) else None
        return await self.for_model(model).count_prompt(api, body, size_hint=size_hint)


def completion_cap(api: Api, body: object) -> int | None:
    """The most completion tokens ``body`` can produce: its token limit times ``n``, or ``None``.

    Chat reads ``max_completion_tokens`` then ``max_tokens``; Responses ``max_output_tokens``;
    Completions ``max_tokens`` (default 16) times the larger of ``n`` and ``best_of``;
    Embeddings produce none. Values that are not positive integers are treated as absent.
    """
    if api == "embeddings":
        return 0
    if not isinstance(body, dict):
        return None
    if api == "chat":
        limit = _positive(body.get("max_completion_tokens")) or _positive(body.get("max_tokens"))
        return None if limit is None else limit * (_positive(body.get("n")) or 1)
    if api == "completions":
        limit = _positive(body.get("max_tokens")) or _COMPLETIONS_DEFAULT_MAX_TOKENS
        choices = max(_positive(body.get("n")) or 1, _positive(body.get("best_of")) or 1)
        return limit * choices
    if api == "responses":
        return _positive(body.get("max_output_tokens"))
    return None


def _positive(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None
