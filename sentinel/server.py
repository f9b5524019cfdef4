"""Serving the app with hypercorn: one worker in-process, or N spawned workers sharing sockets.

Each worker runs uvloop when it is installed, stops accepting on SIGTERM/SIGINT and lets
in-flight requests finish within ``server.shutdown_grace_s``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
from collections.abc import Awaitable, Callable
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.utils import wrap_app

from sentinel.app import create_app
from sentinel.config import Config
from sentinel.telemetry.logging import configure_logging
from sentinel.tokens import Encodings

__all__ = ["hypercorn_config", "serve", "serve_app"]


def hypercorn_config(config: Config) -> HypercornConfig:
    """Hypercorn settings for ``config`` (no access log: Sentinel logs its own line)."""
    hc = HypercornConfig()
    hc.bind = [config.server.bind]
    hc.workers = config.server.workers
    hc.graceful_timeout = float(config.server.shutdown_grace_s)
    hc.accesslog = None
    hc.errorlog = "-"
    hc.keep_alive_timeout = 75
    hc.include_server_header = False
    hc.h11_max_incomplete_size = 64 * 1024
    return hc


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def serve_app(
    config: Config,
    sockets: Sockets | None,
    stop: Callable[[], Awaitable[None]] | None,
    encodings: Encodings | None = None,
) -> None:
    """Serve in the running loop until ``stop`` returns (or SIGTERM/SIGINT when it is None)."""
    configure_logging(config.telemetry, config.secrets())
    if encodings is None:
        encodings = await asyncio.to_thread(Encodings.load)
    hc = hypercorn_config(config)
    asgi: Any = create_app(config, encodings)  # Starlette's ASGI types are looser than hypercorn's
    app = wrap_app(asgi, hc.wsgi_max_body_size, "asgi")
    if stop is None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)

        async def wait_stop() -> None:
            await stopping.wait()

        stop = wait_stop
    await worker_serve(app, hc, sockets=sockets, shutdown_trigger=stop)


def _worker(config: Config, sockets: Sockets, stop_event: ProcessEvent) -> None:
    async def wait_stop() -> None:
        await asyncio.to_thread(stop_event.wait)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve_app(config, sockets, wait_stop))


def serve(config: Config) -> None:
    """Serve until SIGTERM or SIGINT; returns after a graceful shutdown."""
    if config.server.workers == 1:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve_app(config, None, None))
        return
    sockets = hypercorn_config(config).create_sockets()
    context = multiprocessing.get_context("spawn")
    stop_event = context.Event()
    processes = [
        context.Process(target=_worker, args=(config, sockets, stop_event), daemon=False)
        for _ in range(config.server.workers)
    ]

    def stop(*_: Any) -> None:
        stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for process in processes:
        process.start()
    for process in processes:
        process.join()
