"""Errors the mock answers with, in OpenAI's shape, also those a ``status:<code>`` fault fakes.

``{"error": {"message": str, "type": str, "param": str|null, "code": str|null}}``, pretty-printed
as OpenAI prints its JSON bodies.
"""

from __future__ import annotations

import orjson
from aiohttp import web

__all__ = ["MockError", "error_response", "fault_response"]

JSON_TYPE = "application/json"

# status → (type, code, message) that OpenAI uses for it; other statuses fall back by class.
_FAULT_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Mock fault: the request was refused."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    403: ("invalid_request_error", "permission_denied", "Mock fault: permission denied."),
    404: ("invalid_request_error", "not_found", "Mock fault: not found."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests (mock fault). Please try again in 1s.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}

# OpenAI's 429s say when to come back, in seconds and in milliseconds.
_RETRY_HEADERS = {"retry-after": "1", "retry-after-ms": "1000"}


class MockError(Exception):
    """A request the mock refuses; rendered by ``error_response``."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        code: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.error_type = error_type

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        """This error as an HTTP response."""
        return error_response(
            self.status, self.message, self.error_type, self.param, self.code, headers
        )


def error_response(
    status: int,
    message: str,
    error_type: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An OpenAI-shaped error response."""
    error = {"message": message, "type": error_type, "param": param, "code": code}
    body = orjson.dumps({"error": error}, option=orjson.OPT_INDENT_2) + b"\n"
    return web.Response(status=status, body=body, content_type=JSON_TYPE, headers=headers)


def fault_response(status: int, headers: dict[str, str]) -> web.Response:
    """What a ``status:<code>`` fault answers: OpenAI's error body for that status."""
    default: tuple[str, str | None, str] = (
        "invalid_request_error",
        None,
        f"Mock fault: status {status}.",
    )
    if status >= 500:
        default = _FAULT_ERRORS[500]
    error_type, code, message = _FAULT_ERRORS.get(status, default)
    if status == 429:
        headers = {**headers, **_RETRY_HEADERS}
    return error_response(status, message, error_type, None, code, headers)
