"""Field checks for the four APIs Sentinel reads: only what routing and accounting rely on.

Everything else in a body is the provider's business and is forwarded untouched. Messages copy
OpenAI's wording so that SDK users see familiar errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sentinel.errors import InvalidRequest

__all__ = ["RESERVED", "Api", "ApiRequest", "validate"]

Api = Literal["chat", "completions", "embeddings", "responses"]

_MAX_MODEL_CHARS = 256


@dataclass(slots=True)  # per request: not frozen, which is several times slower to build
class ApiRequest:
    """A validated request body and the facts Sentinel takes from it."""

    api: Api
    body: dict[str, Any]
    model: str | None
    stream: bool
    include_usage: bool  # the client itself asked for stream usage


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _invalid_type(param: str, expected: str, value: object) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
        code="invalid_type",
        param=param,
    )


def _string(param: str, value: object) -> None:
    if not isinstance(value, str):
        raise _invalid_type(param, "a string", value)


def _array(param: str, value: object) -> None:
    if not isinstance(value, list):
        raise _invalid_type(param, "an array", value)


def _string_or_array(param: str, value: object) -> None:
    if not isinstance(value, str | list):
        raise _invalid_type(param, "a string or an array", value)


def _bool(param: str, value: object) -> None:
    if not isinstance(value, bool):
        raise _invalid_type(param, "a boolean", value)


def _object(param: str, value: object) -> None:
    if not isinstance(value, dict):
        raise _invalid_type(param, "an object", value)
    if param == "stream_options" and "include_usage" in value:
        include = value["include_usage"]
        if include is not None:
            _bool("stream_options.include_usage", include)


def _counter(minimum: int) -> Callable[[str, object], None]:
    def check(param: str, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid_type(param, "an integer", value)
        if value < minimum:
            raise InvalidRequest(
                f"Invalid '{param}': integer below minimum value. "
                f"Expected a value >= {minimum}, but got {value} instead.",
                code="integer_below_min_value",
                param=param,
            )

    return check


_Check = Callable[[str, object], None]
_STREAMING: dict[str, _Check] = {"stream": _bool, "stream_options": _object}
_FIELDS: dict[Api, dict[str, _Check]] = {
    "chat": {
        "messages": _array,
        "max_tokens": _counter(0),
        "max_completion_tokens": _counter(0),
        "n": _counter(1),
        "store": _bool,
        **_STREAMING,
    },
    "completions": {
        "prompt": _string_or_array,
        "max_tokens": _counter(0),
        "n": _counter(1),
        "best_of": _counter(1),
        **_STREAMING,
    },
    "embeddings": {"input": _string_or_array},
    "responses": {
        "input": _string_or_array,
        "instructions": _string,
        "max_output_tokens": _counter(0),
        "stream": _bool,
        "background": _bool,
        "store": _bool,
    },
}
RESERVED: dict[Api, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "chat": (("max_completion_tokens", "max_tokens"), ("n",)),
    "completions": (("max_tokens",), ("n", "best_of")),
    "embeddings": ((), ()),
    "responses": (("max_output_tokens",), ()),
}
"""Each API's own completion caps and choice counts, the only fields its reservation reads
(no caps: the API completes nothing)."""
_REQUIRED: dict[Api, tuple[str, ...]] = {
    "chat": ("model", "messages"),
    "completions": ("model",),
    "embeddings": ("model", "input"),
    "responses": (),
}


def validate(api: Api, body: dict[str, Any]) -> ApiRequest:
    """Check the fields Sentinel relies on; the first problem found is raised as a 400."""
    for param in _REQUIRED[api]:
        if body.get(param) is None:
            raise InvalidRequest(
                f"Missing required parameter: '{param}'.",
                code="missing_required_parameter",
                param=param,
            )
    model = body.get("model")
    if model is not None:
        _string("model", model)
        if not model or len(model) > _MAX_MODEL_CHARS:
            raise InvalidRequest(
                f"Invalid 'model': expected a name of 1 to {_MAX_MODEL_CHARS} characters.",
                code="invalid_value",
                param="model",
            )
    for param, check in _FIELDS[api].items():
        value = body.get(param)
        if value is not None:
            check(param, value)
    options = body.get("stream_options")
    return ApiRequest(
        api=api,
        body=body,
        model=model,
        stream=body.get("stream") is True,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
    )
