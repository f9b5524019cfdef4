"""The mock upstream's aiohttp application, and running it in-process or as a blocking command.

Every ``/v1`` request passes through ``_endpoint``, in this order: it is counted and recorded,
its ``x-mock-*`` headers are applied to the settings (a bad value is a 400), ``latency`` is
waited out, an early fault (``status``, ``reset``, ``stall``) answers instead of the handler,
and otherwise the handler runs with a ``Call``; the faults that shape a body (``die-after``,
``stall-after``, ``no-usage``, ``no-done``, ``slow-body``) act inside the handler.
``/mock/stats``, ``/mock/requests`` and ``/mock/reset`` are neither counted nor faulted.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

from sentinel.mock import generations, passthrough
from sentinel.mock.delivery import Call, MockState, reset_connection, stall
from sentinel.mock.errors import JSON_TYPE, MockError, error_response, fault_response
from sentinel.mock.observer import MAX_RECORDS, Observer
from sentinel.mock.settings import KnobError, MockSettings, knobs_from_headers

__all__ = ["STATE_KEY", "create_app", "parse_bind", "run", "serve"]

log = structlog.get_logger("sentinel.mock")

STATE_KEY = web.AppKey("mock_state", MockState)
MAX_BODY_BYTES = 64 * 1024 * 1024
SHUTDOWN_TIMEOUT_S = 1.0

Handler = Callable[[Call], Awaitable[web.StreamResponse]]
RequestHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(settings: MockSettings) -> web.Application:
    """The mock upstream as an aiohttp application (routes only; nothing starts here)."""
    state = MockState(settings, settings.knobs(), Observer(), asyncio.Event())
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE_KEY] = state

    def endpoint(handler: Handler) -> RequestHandler:
        return _endpoint(state, handler)

    app.add_routes(
        [
            web.post("/v1/chat/completions", endpoint(generations.chat)),
            web.post("/v1/completions", endpoint(generations.completions)),
            web.post("/v1/responses", endpoint(generations.responses)),
            web.post("/v1/embeddings", endpoint(generations.embeddings)),
            web.get("/v1/models", endpoint(generations.models)),
            web.get("/v1/models/{model:.+}", endpoint(generations.model)),
            web.post("/v1/audio/transcriptions", endpoint(passthrough.transcription)),
            web.post("/v1/audio/speech", endpoint(passthrough.speech)),
            web.post("/v1/images/generations", endpoint(passthrough.images)),
            web.post("/v1/moderations", endpoint(passthrough.moderations)),
            web.post("/v1/files", endpoint(passthrough.files_upload)),
            web.get("/v1/files", endpoint(passthrough.files_list)),
            web.route("*", "/v1/{tail:.*}", endpoint(passthrough.echo)),
            *_observer_routes(state.observer),
        ]
    )
    app.on_shutdown.append(_stop_replies)
    return app


async def _stop_replies(app: web.Application) -> None:
    app[STATE_KEY].closing.set()


def _endpoint(state: MockState, handler: Handler) -> RequestHandler:
    observer = state.observer

    async def handle(request: web.Request) -> web.StreamResponse:
        record = observer.observe(request)
        try:
            knobs = knobs_from_headers(state.knobs, request.headers)
        except KnobError as error:
            return _knob_error(error)
        call = Call(request, state, knobs, record, observer.sequence)
        if knobs.latency_s:
            await asyncio.sleep(knobs.latency_s)
        fault = knobs.fault
        if fault is not None and fault.kind in ("status", "reset", "stall"):
            return await _early_fault(call)
        try:
            return await handler(call)
        except MockError as error:
            return error.response({"x-request-id": call.request_id})
        except KnobError as error:
            return _knob_error(error)
        except web.HTTPRequestEntityTooLarge:
            return error_response(413, "The request body is too large.", "invalid_request_error")

    return handle


def _knob_error(error: KnobError) -> web.Response:
    return error_response(
        400, str(error), "invalid_request_error", error.param, "invalid_mock_header"
    )


async def _early_fault(call: Call) -> web.StreamResponse:
    """The faults that answer instead of the endpoint: an error status, a reset, a stall."""
    fault = call.knobs.fault
    assert fault is not None
    if fault.kind == "reset":
        return reset_connection(call.request)
    if fault.kind == "stall":
        return await stall(call)
    await call.digest()  # read the request first, as a real server would before erroring
    return fault_response(fault.arg, {"x-request-id": call.request_id})


def _observer_routes(observer: Observer) -> list[web.RouteDef]:
    async def stats(request: web.Request) -> web.Response:
        return _compact(observer.stats(request.protocol))

    async def requests(request: web.Request) -> web.Response:
        raw = request.query.get("limit", str(MAX_RECORDS))
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
            return error_response(
                400, "limit: expected an integer", "invalid_request_error", "limit"
            )
        return _compact(observer.last(min(int(raw), MAX_RECORDS)))

    async def reset(request: web.Request) -> web.Response:
        observer.reset()
        return _compact({"reset": True})

    return [
        web.get("/mock/stats", stats),
        web.get("/mock/requests", requests),
        web.post("/mock/reset", reset),
    ]


def _compact(value: Any) -> web.Response:
    return web.Response(body=orjson.dumps(value), content_type=JSON_TYPE)


async def serve(host: str, port: int, settings: MockSettings) -> tuple[web.AppRunner, int]:
    """Start the mock on ``host:port`` (0: a free port) in the running loop.

    Returns the runner (``await runner.cleanup()`` stops it) and the bound port. Handlers are
    cancelled when their client disconnects, which is what ends a ``stall``.
    """
    app = create_app(settings)
    runner = web.AppRunner(
        app, access_log=None, handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    app[STATE_KEY].observer.server = runner.server
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound: int = runner.addresses[0][1]
    return runner, bound


def parse_bind(bind: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` too); ``ValueError`` when it is not one."""
    host, sep, port = bind.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, got {bind!r}")
    return host, int(port)


def run(bind: str, settings: MockSettings) -> None:
    """Serve on ``bind`` (``HOST:PORT``) until SIGINT or SIGTERM; uses uvloop when installed."""
    host, port = parse_bind(bind)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve_until_signalled(host, port, settings))


async def _serve_until_signalled(host: str, port: int, settings: MockSettings) -> None:
    runner, bound = await serve(host, port, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    log.info("mock_upstream_started", host=host, port=bound)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await runner.cleanup()
        log.info("mock_upstream_stopped", host=host, port=bound)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
