"""The composition root: ``create_app(config)`` assembles Sentinel; the lifespan owns resources.

Layers, outermost first:

0. ``CorsHeaders`` (with ``[cors]`` only) — CORS headers on every response to an allowed
   ``Origin``, errors and streams included; then ``GzipReplies`` (unless ``[compression]
   responses = false``) — gzip of whole JSON replies for clients that accept it. Both wrap
   ``send`` only for requests that carry ``Origin`` / accept gzip (``sentinel.http.cors``,
   ``sentinel.http.compression``).
1. ``RequestContextMiddleware`` — puts a ``RequestContext`` in ``scope["sentinel.context"]``,
   adds ``x-request-id`` to every response, maps ``SentinelError`` to OpenAI's error shape (or
   an in-band SSE error after a stream started), answers any other exception with OpenAI's
   500 (the last resort: Starlette's ``ServerErrorMiddleware`` is left out, as it would wrap
   every send and answer a bug in plain text) and logs one canonical line per request.
   It calls the four read APIs (POST) itself, past layers 2 and 3, which would otherwise wrap
   every send of every stream.
   With ``[cors]``, ``Preflight`` sits between it and layer 2: browsers' ``OPTIONS``
   preflights are answered there, past the canonical-path check and before any route or
   authentication.
2. Starlette's ``ExceptionMiddleware`` — renders routing 404/405 in OpenAI's shape.
3. The router: ``/healthz``, ``/readyz``, ``/metrics``, ``/v1/models``,
   ``/admin/v1/upstreams``, the keys API (``/admin/v1/keys…``, ``/admin/v1/audit``),
   ``GET /v1/key``, then every other ``/v1/*`` path as a pass-through, which forwards
   only the families ``[passthrough]`` enables (``GET /v1/chat/completions`` is the stored
   completions family: the read APIs are matched by method and path).

Before any layer dispatches, a target that is not canonical (``sentinel.http.paths``) is a
404: a path in another spelling never reaches a handler.

The lifespan opens the Redis client (with ``[redis]``), the one aiohttp session, the limit
store, the usage tracker, the upstream health checks, (with ``[identity]``) the identity
service's lookups and the JWKS fetch, and (with ``[redis]``) the sharing of
breaker state across replicas, closes them in reverse order at shutdown (the tracker is
drained before the session and Redis it writes through go away; the exporters are flushed
before Redis closes), and yields ``{"services": Services}`` as lifespan state, which reaches
every request as ``scope["state"]``. A failure at any step of startup closes what the steps
before it opened and is raised as ``StartupError``, one line naming the step.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sentinel.admin import AdminUpstreams, MetricsEndpoint
from sentinel.admin.credits import credit_routes
from sentinel.admin.keys import key_routes
from sentinel.auth.authenticator import Authenticator, PrincipalSource
from sentinel.auth.keys import KeyRing
from sentinel.config import Config
from sentinel.container import SERVICES_KEY, Services
from sentinel.errors import MethodNotAllowed, NotFound, SentinelError
from sentinel.guardrails import Guardrails
from sentinel.http.asgi import ASGIApp
from sentinel.http.compression import GzipReplies
from sentinel.http.context import RequestContextMiddleware
from sentinel.http.cors import CorsHeaders, CorsPolicy, Preflight
from sentinel.identity import BearerTokens, IdentityService
from sentinel.keys import KeyAdmin, open_runtime_keys
from sentinel.limits import GuardedStore, LimitStore, MemoryStore, RedisStore
from sentinel.limits.gate import Gate, keep_recovering
from sentinel.limits.settings import timing_of
from sentinel.money.budgets import open_budgeting
from sentinel.money.prices import PriceBook
from sentinel.probes import Healthz, Readyz
from sentinel.proxy.apis import ApiEndpoint
from sentinel.proxy.models import ModelsEndpoint
from sentinel.proxy.own_key import OwnKeyEndpoint
from sentinel.proxy.passthrough import PassthroughEndpoint
from sentinel.proxy.recording import UsageRecorder
from sentinel.redis_io.client import open_redis, warm_up
from sentinel.streaming.drain import Drainer
from sentinel.telemetry.logging import LineLogger, RedactingJSONRenderer
from sentinel.telemetry.otel import Telemetry
from sentinel.tenancy import MemoryOwners, OwnerIndex, RedisOwners
from sentinel.tokens import Encodings, PromptCounter
from sentinel.upstream.board import HealthBoard, breaker_settings
from sentinel.upstream.checks import HealthChecker
from sentinel.upstream.client import open_session
from sentinel.upstream.failover import Failover
from sentinel.upstream.routing import Router
from sentinel.upstream.shared import SharedBreakers
from sentinel.usage.assembly import build_tracker
from sentinel.usage.estimate import DriftStats

__all__ = ["StartupError", "create_app"]


class StartupError(Exception):
    """Serving could not start: one line naming the step that failed and why (no traceback)."""


@contextmanager
def _step(name: str) -> Iterator[None]:
    """Name the startup step an error comes from, for the one line ``sentinel serve`` prints."""
    try:
        yield
    except Exception as error:  # startup's boundary: any failure here ends it, with its step
        raise StartupError(f"{name}: {error or type(error).__name__}") from error


def _guardrails(config: Config) -> Guardrails | None:
    """The content rules, their common screens compiled now (None: nothing to screen)."""
    if config.guardrails.is_empty:
        return None
    guardrails = Guardrails(config.guardrails)
    guardrails.screens()
    return guardrails


async def _routing_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    error: SentinelError
    if status == 405:
        error = MethodNotAllowed()
    elif status == 404:
        error = NotFound(f"Unknown request URL: {request.method} {request.url.path[:200]}.")
    else:
        error = SentinelError()
    return Response(error.as_json(), status_code=error.status, media_type="application/json")


class _Routes(Starlette):
    """Starlette with its exception layer only: the routes behind ``RequestContextMiddleware``."""

    def build_middleware_stack(self) -> ASGIApp:
        return ExceptionMiddleware(self.router, handlers=self.exception_handlers)


def create_app(
    config: Config, encodings: Encodings, lines: RedactingJSONRenderer | None = None
) -> ASGIApp:
    """Build the ASGI app for ``config``; nothing is opened until the lifespan starts.

    ``lines`` is the JSON renderer ``configure_logging`` returned (None: the request line goes
    through structlog). ``encodings`` are loaded by the caller (≈0.5 s, once per process) so
    that a missing or corrupt encoding stops startup with a clear message before anything
    listens.
    """
    telemetry = Telemetry(config.telemetry)
    metrics = telemetry.metrics

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Services]]:
        # Each close is registered as soon as its resource exists, so that a failure at any
        # later step closes what came before; the stack unwinds in the order shown at the end.
        async with AsyncExitStack() as stack:
            with _step("redis"):
                redis = open_redis(config.redis) if config.redis is not None else None
            if redis is not None:
                stack.push_async_callback(redis.aclose)
            stack.push_async_callback(asyncio.to_thread, telemetry.shutdown)  # flush exporters
            session = open_session()
            stack.push_async_callback(session.close)
            timing = timing_of(config.limits)
            store: LimitStore = MemoryStore(timing)
            if config.redis is not None and redis is not None:
                store = GuardedStore(
                    RedisStore(redis, config.redis.timeout_ms, timing=timing),
                    MemoryStore(timing),
                    replicas=config.redis.replicas,
                    workers=config.server.workers,
                    on_unavailable=config.redis.on_unavailable,
                )
            with _step("usage tracker"):
                tracker = build_tracker(config.usage, session=session, redis=redis)
            # flushes to the sinks and spools what they cannot take, before session and Redis go
            stack.push_async_callback(tracker.aclose)
            router = Router(config.upstreams, config.aliases)
            board = HealthBoard(
                tuple(u.name for u in config.upstreams), breaker_settings(config.routing)
            )
            checker = HealthChecker(session, router.targets, board)
            shared = (
                SharedBreakers(redis, board, config.redis.timeout_ms)
                if config.redis is not None and redis is not None
                else None
            )
            owners: OwnerIndex = (
                RedisOwners(redis, config.redis.timeout_ms)
                if config.redis is not None and redis is not None
                else MemoryOwners()
            )
            # Where principals come from besides the TOML file, asked in this order: runtime
            # keys, then the identity service; bearer JWTs go to ``jwt`` alone.
            sources: list[PrincipalSource] = []
            jwt: PrincipalSource | None = None
            runtime = open_runtime_keys(config, redis)
            key_admin = None
            if runtime is not None:
                stack.push_async_callback(runtime.aclose)
                sources.append(runtime)
                key_admin = KeyAdmin(runtime, config.keys, KeyRing(config.keys))
            # The identity service is asked last: the runtime keys' source goes above this line.
            identity = bearer = None
            if config.identity.service is not None:
                identity = IdentityService(session, config.identity.service, config.limits)
                stack.push_async_callback(identity.aclose)
                sources.append(identity)
            if config.identity.jwt is not None:
                bearer = BearerTokens(session, config.identity.jwt, config.limits)
                stack.push_async_callback(bearer.aclose)
                bearer.start()  # fetches the JWKS in the background
                jwt = bearer
            with _step("budgets"):
                budgeting = open_budgeting(config, store, redis, session)
            stack.push_async_callback(budgeting.aclose)  # after the gate's last settlements
            services = Services(
                config=config,
                auth=Authenticator(KeyRing(config.keys, config.limits), sources, jwt),
                router=router,
                session=session,
                tokens=PromptCounter(encodings, config.tokens.default_encoding),
                drift=DriftStats(),
                gate=Gate(store, config.limits, metrics=metrics),
                tracker=tracker,
                record_usage=UsageRecorder(tracker),
                drainer=(
                    Drainer(config.usage.max_drains, config.usage.drain_timeout_ms)
                    if config.usage.drain_on_disconnect
                    else None
                ),
                board=board,
                failover=Failover(config.routing, board),
                owners=owners,
                prices=PriceBook.from_config(config.money),
                keys=key_admin,
                guardrails=_guardrails(config),
                budgeting=budgeting,
            )
            stack.push_async_callback(services.gate.drain)
            await budgeting.start(services.gate)
            if shared is not None:
                stack.push_async_callback(shared.aclose)
            stack.push_async_callback(checker.aclose)
            if redis is not None:
                await warm_up(redis)
            metrics.observe_tracker(tracker)
            metrics.observe_drift(services.drift)
            metrics.observe_identity(identity, bearer)
            if budgeting.ledger is not None:
                metrics.observe_ledger(budgeting.ledger)
            metrics.observe_upstreams(board)
            if services.drainer is not None:
                metrics.observe_drains(services.drainer)
            if isinstance(store, GuardedStore):
                metrics.observe_limits(lambda: store.is_degraded, store.stats)
            with _step("usage tracker"):
                tracker.start()
            checker.start()
            if runtime is not None:
                await runtime.start()
            if shared is not None:
                shared.start()
            if isinstance(store, GuardedStore):
                recovery = asyncio.create_task(keep_recovering(store), name="limits-recovery")
                stack.callback(recovery.cancel)
            # At shutdown: recovery, health checks, shared breakers, the gate's settlements, the
            # tracker, the session, the exporters, then Redis.
            yield {SERVICES_KEY: services}

    apis = {
        "/v1/chat/completions": ApiEndpoint("chat", "/v1/chat/completions"),
        "/v1/completions": ApiEndpoint("completions", "/v1/completions"),
        "/v1/embeddings": ApiEndpoint("embeddings", "/v1/embeddings"),
        "/v1/responses": ApiEndpoint("responses", "/v1/responses"),
    }
    routes = [
        Route("/healthz", Healthz(), methods=["GET"]),
        Route("/readyz", Readyz(), methods=["GET"]),
        Route("/metrics", MetricsEndpoint(telemetry, config.admin), methods=["GET"]),
        Route("/v1/models", ModelsEndpoint(), methods=["GET"]),
        Route("/admin/v1/upstreams", AdminUpstreams(), methods=["GET"]),
        *key_routes(),
        *credit_routes(),
        Route("/v1/key", OwnKeyEndpoint(), methods=["GET"]),
        Route("/v1/{path:path}", PassthroughEndpoint()),
    ]
    app = _Routes(
        routes=routes,
        exception_handlers={HTTPException: _routing_error},
        lifespan=lifespan,
    )
    cors = CorsPolicy(config.cors) if config.cors is not None else None
    gateway: ASGIApp = RequestContextMiddleware(
        app if cors is None else Preflight(app, cors),
        on_finished=metrics.request_finished,
        tracing=telemetry.tracing,
        direct={("POST", route): endpoint for route, endpoint in apis.items()},
        max_in_flight=config.server.max_client_connections,
        line=LineLogger("sentinel.request", lines),
    )
    if config.compression.responses:
        gateway = GzipReplies(gateway, config.compression)
    if cors is not None:
        gateway = CorsHeaders(gateway, cors)
    return gateway
