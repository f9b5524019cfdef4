"""The one error hierarchy of Sentinel and its renderings for clients.

Every error a client can see is a ``SentinelError``. Each class fixes the HTTP status and the
OpenAI ``type``; each instance carries a stable, low-cardinality ``code`` (also used as a log and
metric label), a public ``message``, the offending ``param`` and private ``context`` that is
logged but never sent::

    SentinelError                    500 api_error        internal_error
    ├── InvalidRequest               400 invalid_request_error
    │   └── ContentBlocked           400 invalid_request_error  content_blocked
    ├── AuthenticationFailed         401 invalid_request_error  invalid_api_key
    ├── PaymentRequired              402 insufficient_quota     budget_exceeded / price_unknown / …
    ├── PermissionDenied             403 invalid_request_error
    ├── NotFound                     404 invalid_request_error
    ├── MethodNotAllowed             405 invalid_request_error  method_not_allowed
    ├── RequestTimeout               408 invalid_request_error  request_timeout
    ├── PayloadTooLarge              413 invalid_request_error  request_too_large
    ├── UnsupportedMediaType         415 invalid_request_error
    ├── RateLimited                  429 requests / tokens
    ├── UpstreamError                502 api_error        upstream_*
    ├── ServiceUnavailable           503 api_error
    └── UpstreamTimeout              504 api_error        upstream_timeout

``as_json`` renders the body of an error response; ``as_sse`` renders the in-band event sent
when a stream has already started and the status line can no longer change.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

__all__ = [
    "AuthenticationFailed",
    "ContentBlocked",
    "InvalidRequest",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "PaymentRequired",
    "PermissionDenied",
    "RateLimited",
    "RequestTimeout",
    "SentinelError",
    "ServiceUnavailable",
    "UnsupportedMediaType",
    "UpstreamError",
    "UpstreamTimeout",
]


class SentinelError(Exception):
    """An error with everything needed to answer the client and to log it."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"
    default_code: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "The gateway hit an internal error."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> None:
        self.message = message or self.default_message
        self.code = code or self.default_code
        self.param = param
        self.headers = headers or {}
        self.context = context
        super().__init__(self.message)

    def payload(self) -> dict[str, Any]:
        """The OpenAI-shaped error object (without the outer ``error`` key)."""
        return {
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": self.code,
        }

    def as_json(self) -> bytes:
        """The response body: ``{"error": {message, type, param, code}}``."""
        return orjson.dumps({"error": self.payload()})

    def as_sse(self) -> bytes:
        """An SSE event that OpenAI SDKs raise as ``APIError`` in the middle of a stream."""
        return b"event: error\ndata: " + self.as_json() + b"\n\n"


class InvalidRequest(SentinelError):
    """The request body, a header or a parameter is malformed."""

    status = 400
    error_type = "invalid_request_error"
    default_code = "invalid_value"
    default_message = "The request is invalid."


class ContentBlocked(InvalidRequest):
    """A ``[[rules]]`` block rule matched a text of the request or of the reply."""

    default_code = "content_blocked"
    default_message = "The content was blocked by a content rule."


class AuthenticationFailed(SentinelError):
    """A missing, malformed or unknown API key: one message for all three."""

    status = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"
    default_message = (
        "Incorrect API key provided. Send a Sentinel key as 'Authorization: Bearer <key>'."
    )


class PaymentRequired(SentinelError):
    """Money refuses the request: a dollar budget or prepaid credits cannot cover it, or the
    model has no price for a key whose spending is counted in dollars. Codes:
    ``budget_exceeded``, ``price_unknown``, ``insufficient_credits``. OpenAI's SDKs do not
    retry a 402."""

    status = 402
    error_type = "insufficient_quota"
    default_code = "budget_exceeded"
    default_message = "This key's budget cannot cover this request."


class PermissionDenied(SentinelError):
    """The caller is known but may not do this."""

    status = 403
    error_type = "invalid_request_error"
    default_code = "permission_denied"
    default_message = "This key may not perform this request."


class NotFound(SentinelError):
    """No route, or no upstream serves the requested model."""

    status = 404
    error_type = "invalid_request_error"
    default_code = "unknown_url"
    default_message = "Unknown request URL."


class MethodNotAllowed(SentinelError):
    """The path exists but not with this method."""

    status = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"
    default_message = "This method is not allowed on this path."


class RequestTimeout(SentinelError):
    """The request body did not arrive within ``server.body_timeout_ms``."""

    status = 408
    error_type = "invalid_request_error"
    default_code = "request_timeout"
    default_message = "The request body did not arrive in time."


class PayloadTooLarge(SentinelError):
    """The request body is over ``server.max_body_bytes``."""

    status = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"
    default_message = "The request body is too large."


class UnsupportedMediaType(SentinelError):
    """A body Sentinel must read is not plain JSON."""

    status = 415
    error_type = "invalid_request_error"
    default_code = "unsupported_media_type"
    default_message = "This endpoint takes an uncompressed JSON body."


class RateLimited(SentinelError):
    """A request or token limit refused the request."""

    status = 429
    error_type = "requests"
    default_code = "rate_limit_exceeded"
    default_message = "Rate limit reached. Please try again later."

    def payload(self) -> dict[str, Any]:
        """OpenAI's types: ``requests`` or ``tokens`` for rates, ``insufficient_quota`` else."""
        found = super().payload()
        if self.code == "insufficient_quota":
            found["type"] = "insufficient_quota"
        elif self.context.get("dimension") == "tokens":
            found["type"] = "tokens"
        return found


class UpstreamError(SentinelError):
    """The upstream could not be reached, refused Sentinel, or broke its protocol."""

    status = 502
    error_type = "api_error"
    default_code = "upstream_error"
    default_message = "The upstream provider failed to answer."


class ServiceUnavailable(SentinelError):
    """Sentinel cannot serve right now (a dependency is down, or it is shutting down)."""

    status = 503
    error_type = "api_error"
    default_code = "service_unavailable"
    default_message = "The gateway is temporarily unavailable."


class UpstreamTimeout(SentinelError):
    """The upstream did not answer in time."""

    status = 504
    error_type = "api_error"
    default_code = "upstream_timeout"
    default_message = "The upstream provider did not answer in time."
