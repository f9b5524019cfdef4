"""What the mock reads from a request body: minimal validation and a deterministic token count.

Token counts are not tiktoken's; they are a simple, documented function of the request that
tests can compute by hand:

* a text's tokens are its whitespace-separated words (``len(text.split())``);
* chat: for each message, 3 + the words of its text content (a string, or the ``text`` of each
  content part);
* completions and embeddings: the words of each string prompt/input, or the length of each
  token array;
* responses: the words of ``instructions`` + the words of ``input`` when it is a string, or,
  for a list of input items, 3 + the words of each item's text content.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from sentinel.mock.errors import MockError

__all__ = [
    "PER_MESSAGE_TOKENS",
    "Prompt",
    "chat_prompt",
    "completion_prompt",
    "embedding_inputs",
    "parse_body",
    "responses_prompt",
]

PER_MESSAGE_TOKENS = 3


@dataclass(frozen=True, slots=True)
class Prompt:
    """A validated generation request: who is asked, how much, and what to echo."""

    model: str
    prompt_tokens: int
    echo: str
    """The text the reply echoes: the last user message or prompt."""
    stream: bool
    include_usage: bool
    max_tokens: int | None


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 in OpenAI's words."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MockError(
            "We could not parse the JSON body of your request. The OpenAI API expects a JSON "
            "payload, but what was sent was not valid JSON."
        ) from None
    if not isinstance(body, dict):
        raise MockError("The request body must be a JSON object.")
    return body


def chat_prompt(body: dict[str, Any]) -> Prompt:
    """A chat completions request; ``messages`` must be a list."""
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise MockError("'messages' is a required property and must be an array.", param="messages")
    tokens = sum(PER_MESSAGE_TOKENS + _words(_content_text(m)) for m in messages)
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    echo = _content_text(users[-1]) if users else ""
    limit = _limit(body, "max_completion_tokens")
    return Prompt(
        model,
        tokens,
        echo,
        body.get("stream") is True,
        _include_usage(body),
        _limit(body, "max_tokens") if limit is None else limit,
    )


def completion_prompt(body: dict[str, Any]) -> Prompt:
    """A legacy completions request; ``prompt`` may be text, texts or token arrays."""
    model = _model(body)
    prompt = body.get("prompt", "")
    tokens = _input_tokens(prompt, "prompt")
    echo = prompt if isinstance(prompt, str) else _first_text(prompt)
    stream = body.get("stream") is True
    return Prompt(model, tokens, echo, stream, _include_usage(body), _limit(body, "max_tokens"))


def responses_prompt(body: dict[str, Any]) -> Prompt:
    """A Responses API request; ``input`` is a string or a list of input items."""
    model = _model(body)
    value = body.get("input", "")
    instructions = body.get("instructions")
    tokens = _words(instructions) if isinstance(instructions, str) else 0
    if isinstance(value, str):
        tokens, echo = tokens + _words(value), value
    elif isinstance(value, list):
        tokens += sum(PER_MESSAGE_TOKENS + _words(_content_text(item)) for item in value)
        echo = _content_text(value[-1]) if value else ""
    else:
        raise MockError("'input' must be a string or an array of input items.", param="input")
    stream = body.get("stream") is True
    return Prompt(model, tokens, echo, stream, False, _limit(body, "max_output_tokens"))


def embedding_inputs(body: dict[str, Any]) -> tuple[str, list[str], int]:
    """An embeddings request: its model, one text key per input and the prompt tokens."""
    model = _model(body)
    value = body.get("input")
    if isinstance(value, str) or (isinstance(value, list) and value and _is_tokens(value)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise MockError("'input' is required: a string or a non-empty array.", param="input")
    tokens = _input_tokens(value, "input")
    return model, [item if isinstance(item, str) else repr(item) for item in value], tokens


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise MockError("you must provide a model parameter", param="model")
    return model


def _words(text: str) -> int:
    return len(text.split())


def _content_text(message: object) -> str:
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return " ".join(text for text in parts if isinstance(text, str))
    return ""


def _input_tokens(value: object, param: str) -> int:
    """Words of each text, or the length of each token array, in a prompt or input."""
    if isinstance(value, str):
        return _words(value)
    if isinstance(value, list) and _is_tokens(value):
        return len(value)
    if isinstance(value, list):
        if all(isinstance(item, str) or _is_token_list(item) for item in value):
            return sum(_input_tokens(item, param) for item in value)
    raise MockError(f"'{param}' must be a string, an array of strings or of tokens.", param=param)


def _is_tokens(value: list[Any]) -> bool:
    return all(isinstance(item, int) and not isinstance(item, bool) for item in value)


def _is_token_list(value: object) -> bool:
    return isinstance(value, list) and _is_tokens(value)


def _first_text(value: object) -> str:
    if isinstance(value, list) and value and isinstance(value[0], str):
        return value[0]
    return ""


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _limit(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
