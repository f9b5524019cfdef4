"""CORS for browser apps (``[cors]``): exact origins, preflights answered by Sentinel itself.

Two layers share one ``CorsPolicy``:

- ``CorsHeaders``, outermost, adds ``Access-Control-Allow-Origin`` (the origin itself, or
  ``*`` when any origin is allowed), ``Access-Control-Allow-Credentials`` when configured,
  ``Access-Control-Expose-Headers`` and ``Vary: Origin`` to every response to an allowed
  origin: errors (401, 404, 429, 503 …) and streams included, as browsers hide any response
  without them. A request without ``Origin`` never meets it.
- ``Preflight``, behind the request context (after its canonical-path check, so a preflight
  for a path in another spelling is a 404 like any request), answers every ``OPTIONS``
  carrying ``Origin`` and ``Access-Control-Request-Method`` without authentication: 204
  with the methods, the requested headers that are allowed and ``Access-Control-Max-Age``;
  a 403 ``cors_origin_not_allowed`` (and no CORS headers) for any other origin. A header
  that is not allowed is left out of the answer, so the browser names it in its error.

Without ``[cors]`` neither layer is installed. Upstream replies never bring their own
``Access-Control-*`` headers through (``sentinel.http.headers``): Sentinel alone decides.
"""

from __future__ import annotations

from sentinel.config.edge import CorsConfig
from sentinel.errors import PermissionDenied
from sentinel.http.asgi import ASGIApp, Message, Receive, Scope, Send
from sentinel.http.context import CONTEXT_KEY

__all__ = ["ALLOWED_HEADERS", "EXPOSED_HEADERS", "CorsHeaders", "CorsPolicy", "Preflight"]

ALLOWED_HEADERS = frozenset(
    {
        "accept",
        "api-key",
        "authorization",
        "content-type",
        "idempotency-key",
        "openai-beta",
        "openai-organization",
        "openai-project",
        "traceparent",
        "tracestate",
        "x-request-id",
    }
)
"""Request headers a browser may send; ``x-stainless-*`` (the OpenAI SDKs') by prefix."""
_ALLOWED_PREFIX = "x-stainless-"
EXPOSED_HEADERS = (
    "x-request-id",
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "x-sentinel-degraded",
    "x-sentinel-budget-remaining-usd",
    "x-sentinel-budget-reset",
    "x-upstream-request-id",
    "openai-processing-ms",
)
"""Response headers a browser app may read (the SDKs' retry logic reads the retry headers)."""
_METHODS = b"GET, POST, PATCH, DELETE"
_VARY_ORIGIN = (b"vary", b"origin")
_MAX_REQUESTED = 64  # header names read from one Access-Control-Request-Headers


class CorsPolicy:
    """``[cors]`` as the headers each answer carries, computed once."""

    def __init__(self, config: CorsConfig) -> None:
        self._any = config.allows_any_origin
        self._origins = frozenset(origin.encode("ascii") for origin in config.allow_origins)
        self._allowed = ALLOWED_HEADERS | frozenset(config.allow_headers)
        shared = [(b"access-control-expose-headers", ", ".join(EXPOSED_HEADERS).encode())]
        if config.allow_credentials:
            shared.append((b"access-control-allow-credentials", b"true"))
        if self._any:
            shared.append((b"access-control-allow-origin", b"*"))
        else:
            shared.append(_VARY_ORIGIN)
        self._shared = tuple(shared)
        self._max_age = (b"access-control-max-age", str(config.max_age_s).encode("ascii"))

    def allows(self, origin: bytes) -> bool:
        """Whether a browser page from ``origin`` may call Sentinel."""
        return self._any or origin in self._origins

    def response_headers(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        """The headers every response to a request from ``origin`` carries."""
        if self._any:
            return list(self._shared)
        if origin not in self._origins:
            return [_VARY_ORIGIN]
        return [(b"access-control-allow-origin", origin), *self._shared]

    def preflight_headers(self, requested: bytes | None) -> list[tuple[bytes, bytes]]:
        """A preflight's own headers: methods, max age, and of the ``requested`` headers
        those that are allowed (echoed, so that credentials never meet a ``*``)."""
        headers = [(b"access-control-allow-methods", _METHODS), self._max_age]
        allowed = self.allowed_headers(requested)
        if allowed:
            headers.append((b"access-control-allow-headers", ", ".join(allowed).encode()))
        return headers

    def allowed_headers(self, requested: bytes | None) -> list[str]:
        """The names in an ``Access-Control-Request-Headers`` value that may be sent."""
        if not requested:
            return []
        names = requested.decode("latin-1").lower().split(",", _MAX_REQUESTED)[:_MAX_REQUESTED]
        allowed = []
        for raw in names:
            name = raw.strip()
            if name in self._allowed or (
                name.startswith(_ALLOWED_PREFIX) and _is_token(name[len(_ALLOWED_PREFIX) :])
            ):
                allowed.append(name)
        return allowed


def _is_token(text: str) -> bool:
    return bool(text) and all(c.isascii() and (c.isalnum() or c in "-_.") for c in text)


def _header(headers: list[tuple[bytes, bytes]], wanted: bytes) -> bytes | None:
    for name, value in headers:
        if name == wanted:
            return value
    return None


class CorsHeaders:
    """Pure ASGI middleware: CORS headers on every response to a request with ``Origin``."""

    def __init__(self, app: ASGIApp, policy: CorsPolicy) -> None:
        self.app = app
        self._policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = _header(scope["headers"], b"origin") if scope["type"] == "http" else None
        if origin is None:
            await self.app(scope, receive, send)
            return
        added = self._policy.response_headers(origin)

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *added]
            await send(message)

        await self.app(scope, receive, send_with_cors if added else send)


class Preflight:
    """Pure ASGI layer: answers CORS preflights before any route or authentication."""

    def __init__(self, app: ASGIApp, policy: CorsPolicy) -> None:
        self.app = app
        self._policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        origin = _header(headers, b"origin")
        if origin is None or _header(headers, b"access-control-request-method") is None:
            await self.app(scope, receive, send)  # a plain OPTIONS, not a preflight
            return
        ctx = scope.get(CONTEXT_KEY)
        if ctx is not None:
            ctx.route = "preflight"
        if not self._policy.allows(origin):
            raise PermissionDenied(
                "Browser requests from this origin are not allowed on this gateway.",
                code="cors_origin_not_allowed",
            )
        answer = self._policy.preflight_headers(_header(headers, b"access-control-request-headers"))
        await send({"type": "http.response.start", "status": 204, "headers": answer})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
