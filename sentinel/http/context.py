"""The outermost Sentinel layer: request id, canonical log line, overhead timer, error boundary.

``RequestContextMiddleware`` puts a ``RequestContext`` into ``scope[CONTEXT_KEY]`` that inner
layers fill in (key, model, upstream, usage, upstream wait); it adds ``x-request-id`` to every
response, turns any ``SentinelError`` into OpenAI's error JSON (or into an in-band SSE error
once a stream has started), and logs exactly one ``request_finished`` line per request.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from opentelemetry.trace import Span

from sentinel.errors import NotFound, SentinelError, ServiceUnavailable
from sentinel.http.asgi import ASGIApp, Message, Receive, Scope, Send
from sentinel.http.body import ClientGone
from sentinel.http.paths import is_canonical
from sentinel.telemetry.logging import LineLogger
from sentinel.telemetry.otel import Tracing
from sentinel.usage.counts import Usage
from sentinel.usage.estimate import UsageSource

__all__ = ["CONTEXT_KEY", "RequestContext", "RequestContextMiddleware", "error_response"]

CONTEXT_KEY = "sentinel.context"
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_CLIENT_CLOSED = 499

log = structlog.get_logger("sentinel.request")


@dataclass(slots=True)
class RequestContext:
    """What one request did, filled in as it goes and logged once at the end."""

    request_id: str
    request_id_from_client: bool
    method: str
    path: str
    started_ns: int
    route: str = "other"
    key: str | None = None
    key_id: str | None = None  # the key's stable id
    team: str | None = None
    model: str | None = None
    upstream: str | None = None
    stream: bool = False
    status: int = 0
    error_code: str | None = None
    upstream_status: int | None = None
    usage: Usage | None = None
    usage_source: UsageSource | None = None
    prompt_estimate: int | None = None
    cost_usd: str | None = None
    """The exact cost as a decimal string (``sentinel.proxy.pricing``); None: no price."""
    cost_nano: int = 0  # the cost rounded up to whole nano-USD, for the metric
    outcome: str = "ok"
    ttfb_ns: int | None = None
    upstream_wait_ns: int = 0
    request_bytes: int = 0
    response_bytes: int = 0
    sent_headers: list[tuple[bytes, bytes]] | None = None
    """The headers of the response start, once sent."""
    dropped_headers: list[str] = field(default_factory=list)
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    """Added to the response whatever it turns out to be (rate-limit headers)."""
    degraded: bool = False
    attempts: list[dict[str, object]] = field(default_factory=list)
    """One entry per upstream attempt: upstream, status (None: no answer), ms, error code."""
    started_at: float = field(default_factory=time.time)
    """Wall-clock start (epoch seconds), for usage records."""
    traceparent: str | None = None
    """This request's span as W3C ``traceparent``, for the upstream call (tracing only)."""
    on_finish: Callable[[RequestContext, int], None] | None = None
    """Called once with the finish time (perf_counter ns) after the response ended."""
    rule_hits: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """Matches per (rule, action, direction) of ``[[rules]]`` and ``[pii]``: never the text."""

    def log_fields(self, finished_ns: int) -> dict[str, Any]:
        """The canonical log line's fields."""
        duration = finished_ns - self.started_ns
        usage = self.usage
        return {
            "request_id": self.request_id,
            "method": self.method,
            "route": self.route,
            "key": self.key,
            "key_id": self.key_id,
            "team": self.team,
            "model": self.model,
            "upstream": self.upstream,
            "stream": self.stream,
            "status": self.status,
            "upstream_status": self.upstream_status,
            "error_code": self.error_code,
            "outcome": self.outcome,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "total_tokens": usage.total_tokens if usage else None,
            "usage_source": self.usage_source,
            "prompt_estimate": self.prompt_estimate,
            "cost_usd": self.cost_usd,
            "ttfb_ms": _ms(self.ttfb_ns - self.started_ns) if self.ttfb_ns else None,
            "duration_ms": _ms(duration),
            "overhead_ms": _ms(duration - self.upstream_wait_ns),
            "request_bytes": self.request_bytes,
            "response_bytes": self.response_bytes,
            **({"dropped_headers": self.dropped_headers} if self.dropped_headers else {}),
            **({"degraded": "limits"} if self.degraded else {}),
            **({"attempts": self.attempts} if self.attempts else {}),
            **({"rules": sorted({hit[0] for hit in self.rule_hits})} if self.rule_hits else {}),
        }


def _span_attributes(ctx: RequestContext) -> dict[str, str | int | bool]:
    attributes: dict[str, str | int | bool] = {
        "http.request.method": ctx.method,
        "http.route": ctx.route,
        "http.response.status_code": ctx.status,
        "sentinel.request_id": ctx.request_id,
        "gen_ai.request.stream": ctx.stream,
    }
    for name, value in (
        ("sentinel.key", ctx.key),
        ("gen_ai.request.model", ctx.model),
        ("sentinel.upstream", ctx.upstream),
        ("error.type", ctx.error_code),
    ):
        if value is not None:
            attributes[name] = value
    if ctx.usage is not None:
        attributes["gen_ai.usage.input_tokens"] = ctx.usage.prompt_tokens
        attributes["gen_ai.usage.output_tokens"] = ctx.usage.completion_tokens
    return attributes


def _ms(ns: int) -> float:
    """Nanoseconds as milliseconds to the microsecond, by integer division (float ``round`` with
    digits is ten times slower)."""
    return (ns + 500) // 1000 / 1000


def _shown(raw_path: bytes) -> str:
    """A client's path for an error message: printable ASCII only, at most 200 characters."""
    return "".join(c if " " < c < "\x7f" else "?" for c in raw_path[:200].decode("latin-1"))


def _is_event_stream(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a response with ``headers`` is an SSE stream (looked at only when it failed)."""
    return any(n == b"content-type" and v.startswith(b"text/event-stream") for n, v in headers)


def _request_id(headers: list[tuple[bytes, bytes]]) -> tuple[str, bool]:
    """The client's ``x-request-id`` when it is sane, else a new one; and which it was."""
    for name, value in headers:
        if name == b"x-request-id" and _SANE_REQUEST_ID.fullmatch(value):
            return value.decode("ascii"), True
    return "req_" + secrets.token_hex(16), False


def error_response(error: SentinelError) -> tuple[Message, Message]:
    """The two ASGI messages of an OpenAI-shaped error response."""
    body = error.as_json()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items())
    start = {"type": "http.response.start", "status": error.status, "headers": headers}
    return start, {"type": "http.response.body", "body": body, "more_body": False}


class RequestContextMiddleware:
    """Pure ASGI middleware wrapping every HTTP request (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        on_finished: Callable[[RequestContext, int], None] | None = None,
        tracing: Tracing | None = None,
        direct: dict[tuple[str, str], ASGIApp] | None = None,
        max_in_flight: int = 0,
        line: LineLogger | None = None,
    ) -> None:
        self.app = app
        self._max_in_flight = max_in_flight  # 0: no cap
        self._in_flight = 0
        # The hot endpoints by (method, path): called straight from here, past Starlette's
        # router and exception middleware, whose wrappers would otherwise run on every send
        # of every stream. They raise only SentinelError, which this layer renders anyway.
        self._direct = direct or {}
        self._on_finished = on_finished  # the metrics
        self._tracing = tracing
        # The one line every request writes, through the renderer logging was configured with.
        self._line = line or LineLogger("sentinel.request")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, from_client = _request_id(scope["headers"])
        ctx = RequestContext(
            request_id=request_id,
            request_id_from_client=from_client,
            method=scope["method"],
            path=scope["path"],
            started_ns=time.perf_counter_ns(),
        )
        scope[CONTEXT_KEY] = ctx
        span = None
        request_id_header = (b"x-request-id", ctx.request_id.encode("ascii"))
        started = False
        ended = False

        async def send_with_id(message: Message) -> None:
            nonlocal started, ended
            if message["type"] == "http.response.start":
                started = True
                ctx.status = message["status"]
                ctx.ttfb_ns = time.perf_counter_ns()
                headers = message["headers"] = list(message.get("headers", ()))
                headers.append(request_id_header)
                if ctx.response_headers:
                    headers.extend(ctx.response_headers)
                ctx.sent_headers = headers
            else:
                ctx.response_bytes += len(message.get("body", b""))
                ended = not message.get("more_body", False)
            await send(message)

        self._in_flight += 1
        try:
            if self._in_flight > self._max_in_flight > 0 and scope["path"] != "/healthz":
                raise ServiceUnavailable(
                    "The gateway is serving as many requests as it may; try again shortly.",
                    code="server_busy",
                    headers={"retry-after": "1"},
                )
            if self._tracing is not None:
                span, ctx.traceparent = self._tracing.start(scope["headers"], scope["method"])
            raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
            if not is_canonical(raw_path, scope["query_string"]):
                # Before any handler: a path in another spelling never reaches one.
                raise NotFound(f"Unknown request URL: {ctx.method} {_shown(raw_path)}.")
            app = self._direct.get((scope["method"], scope["path"]), self.app)
            await app(scope, receive, send_with_id)
        except SentinelError as error:
            await self._fail(ctx, error, send_with_id, started, ended)
        except ClientGone as gone:
            ctx.status, ctx.outcome = _CLIENT_CLOSED, gone.outcome
        except Exception as exc:  # the one broad catch: the boundary of the whole gateway
            log.error("unhandled_error", request_id=ctx.request_id, exc_info=exc)
            await self._fail(ctx, SentinelError(), send_with_id, started, ended)
        finally:
            self._in_flight -= 1
            finished_ns = time.perf_counter_ns()
            self._finish(ctx, finished_ns, span)
            self._line.info("request_finished", ctx.log_fields(finished_ns))

    def _finish(self, ctx: RequestContext, finished_ns: int, span: Span | None) -> None:
        """Hand the finished request to its usage record, the metrics and its span."""
        try:
            if ctx.on_finish is not None:
                ctx.on_finish(ctx, finished_ns)
            if self._on_finished is not None:
                self._on_finished(ctx, finished_ns)
            if span is not None:
                span.update_name(f"{ctx.method} {ctx.route}")
                Tracing.end(span, _span_attributes(ctx), failed=ctx.status >= 500)
        except Exception as exc:  # recording must never break the response path
            log.error("request_finish_failed", request_id=ctx.request_id, exc_info=exc)

    @staticmethod
    async def _fail(
        ctx: RequestContext, error: SentinelError, send: Send, started: bool, ended: bool
    ) -> None:
        ctx.error_code = error.code
        if ctx.outcome == "ok":
            ctx.outcome = "error"
        if error.context:
            log.warning(
                "request_error", request_id=ctx.request_id, code=error.code, **error.context
            )
        if not started:
            start, body = error_response(error)
            await send(start)
            await send(body)
            ctx.status = error.status
            return
        if ended:
            return
        if _is_event_stream(ctx.sent_headers or ()):
            # After http.response.start the status cannot change: say it in-band, then end.
            await send({"type": "http.response.body", "body": error.as_sse(), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        raise error  # a plain body cut short: let the server abort the connection
