"""Serving the app: one worker in-process, or N spawned workers sharing the listening sockets.

``[server] engine`` picks the HTTP server (``sentinel.engines``: hypercorn or uvicorn); what is
around it is the same for both. The sockets are bound before anything else opens; each worker
runs uvloop when it is installed, stops accepting on SIGTERM/SIGINT and lets in-flight
requests finish within ``server.shutdown_grace_s``. Whatever stops startup (a port that
cannot be bound, encodings that do not load, a lifespan step that fails) is raised as one
``StartupError`` for the command line to print as a single line.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import signal
from collections.abc import Awaitable, Callable
from multiprocessing.queues import SimpleQueue
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any, TextIO

from hypercorn.config import Sockets

from sentinel.app import StartupError, create_app
from sentinel.config import Config
from sentinel.engines import hypercorn, uvicorn
from sentinel.engines.hypercorn import hypercorn_config
from sentinel.telemetry.logging import configure_logging
from sentinel.tokens import Encodings, TokenizerError

__all__ = ["StartupError", "hypercorn_config", "serve", "serve_app"]


def tune_gc() -> None:
    """What startup built (modules, config, encodings) lives as long as the process: frozen, it
    is left out of every later collection, so a full collection walks only what requests made
    instead of pausing for tens of milliseconds; young collections run every 10,000
    allocations instead of 700."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


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
    log_stream: TextIO | None = None,
) -> None:
    """Serve with ``config.server.engine`` in the running loop until ``stop`` returns (or
    SIGTERM/SIGINT when it is None); log lines go to ``log_stream`` (default: stdout).
    ``sockets`` None: bind ``server.bind`` first, and close it at the end.

    A failed startup raises ``StartupError``, after the lifespan closed what it had opened.
    """
    if sockets is None:
        listening = _listen(config)
        try:
            await serve_app(config, listening, stop, encodings, log_stream)
        finally:
            _close(listening)
        return
    lines = configure_logging(config.telemetry, config.secrets(), log_stream)
    if encodings is None:
        try:
            encodings = await asyncio.to_thread(Encodings.load)
        except TokenizerError as error:
            raise StartupError(_one_line(f"tokens: {error}", config)) from error
    app = create_app(config, encodings, lines)
    tune_gc()
    if stop is None:
        stop = _on_signals()
    try:
        if config.server.engine == "uvicorn":
            await uvicorn.serve(app, config, sockets.insecure_sockets, stop)
        else:
            await hypercorn.serve(app, config, sockets, stop)
    except StartupError as error:
        raise StartupError(_one_line(str(error), config)) from None


def _on_signals() -> Callable[[], Awaitable[None]]:
    """A stop trigger that returns at SIGTERM or SIGINT."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    async def wait_stop() -> None:
        await stopping.wait()

    return wait_stop


def _one_line(message: str, config: Config) -> str:
    """``message`` on one line, with any secret of ``config`` in it masked."""
    for secret in config.secrets():
        message = message.replace(secret, "***")
    return " ".join(message.split())


def _listen(config: Config) -> Sockets:
    """The listening sockets, bound before anything else opens (``StartupError`` if not)."""
    try:
        return hypercorn_config(config).create_sockets()
    except OSError as error:  # EADDRINUSE, EACCES, an unknown host name
        reason = error.strerror or str(error)
        raise StartupError(
            f"server.bind: cannot listen on {config.server.bind}: {reason}"
        ) from None


def _close(sockets: Sockets) -> None:
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets):
        sock.close()


def _worker(
    config: Config, sockets: Sockets, stop_event: ProcessEvent, failures: SimpleQueue[str]
) -> None:
    async def wait_stop() -> None:
        await asyncio.to_thread(stop_event.wait)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve_app(config, sockets, wait_stop))
    except StartupError as error:
        failures.put(str(error))  # for the parent to raise; this worker's siblings stop too
        stop_event.set()


def serve(config: Config) -> None:
    """Serve until SIGTERM or SIGINT; returns after a graceful shutdown.

    Raises ``StartupError`` when serving could not start (in any worker).
    """
    sockets = _listen(config)
    try:
        if config.server.workers == 1:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(serve_app(config, sockets, None))
            return
        _serve_workers(config, sockets)
    finally:
        _close(sockets)


def _serve_workers(config: Config, sockets: Sockets) -> None:
    context = multiprocessing.get_context("spawn")
    stop_event = context.Event()
    failures: SimpleQueue[str] = context.SimpleQueue()
    processes = [
        context.Process(target=_worker, args=(config, sockets, stop_event, failures), daemon=False)
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
    if not failures.empty():
        raise StartupError(failures.get())
