"""Serving with uvicorn: httptools on uvloop, HTTP/1.1 only.

uvicorn's httptools protocol bounds neither the size of a request head nor the time one
takes (its keep-alive timer runs only between a response and the next byte), and answers a
malformed request with a text body of its own. ``_HttpProtocol`` adds the bounds hypercorn's
h11 has and answers as hypercorn does, so that the two engines behave alike before the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.lifespan.on import LifespanOn, LifespanSendMessage
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from sentinel.app import StartupError
from sentinel.config import Config
from sentinel.engines import MAX_HEAD_BYTES, Stop, startup_failure
from sentinel.http.asgi import ASGIApp

__all__ = ["serve", "uvicorn_config"]


class _Config(uvicorn.Config):
    """uvicorn's settings, plus the bound on a request head that ``_HttpProtocol`` adds."""

    head_timeout_s: float = 30.0


class _HttpProtocol(HttpToolsProtocol):
    """httptools with a request head bounded in time and size, and hypercorn's error shape.

    The head timer runs from the connection's start, or the end of a response, until the next
    request's headers are complete (as hypercorn's idle timer); the bytes of a head still
    incomplete are counted a read at a time, so a head may pass ``MAX_HEAD_BYTES`` by at most
    one read before the 431.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_timeout_s = (
            config.head_timeout_s
            if isinstance(config, _Config)
            else float(config.timeout_keep_alive)
        )
        self._head_timer: asyncio.TimerHandle | None = None
        self._reading_head = True
        self._heads = 0  # request heads completed on this connection
        self._head_bytes = 0
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped until the client closes or the head timer fires
        reading_head, heads = self._reading_head, self._heads
        super().data_received(data)
        if reading_head and self._heads == heads:  # all of ``data`` belongs to one head
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self._refuse(431)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._heads += 1
        self._head_bytes = 0
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading_head = True  # the next head may follow in the same read (pipelining)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.cycle is not None and self.cycle.response_complete:  # no pipelined request
            if not self.transport.is_closing():
                self._arm_head_timer()

    def send_400_response(self, msg: str) -> None:
        self._refuse(400)  # uvicorn has logged ``msg`` already

    def _refuse(self, status: int) -> None:
        """Answer what cannot reach the app as hypercorn does: the status and the date, no
        body, and the connection closed.

        Closed for writing first: closing a socket with unread data in it would reset the
        connection and could discard the answer before the client read it.
        """
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"content-length: 0\r\nconnection: close\r\n\r\n")
        self.transport.write(b"".join(head))
        self._refused = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._arm_head_timer()
        else:
            self.transport.close()

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self._head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


class _Lifespan(LifespanOn):
    """uvicorn's lifespan with a failed startup raised as ``StartupError`` with the app's own
    reason, where uvicorn would log the traceback Starlette sends and exit."""

    failure: BaseException | None = None

    async def startup(self) -> None:
        self._main = asyncio.get_running_loop().create_task(self.main())  # a hard reference
        await self.receive_queue.put({"type": "lifespan.startup"})
        await self.startup_event.wait()
        if self.startup_failed or self.error_occurred:
            raise StartupError(startup_failure(self.failure))

    async def send(self, message: LifespanSendMessage) -> None:
        if message["type"] == "lifespan.startup.failed":
            # Starlette sends this from inside its ``except`` block: the error being handled
            # is the lifespan's own, and the message only its traceback.
            self.failure = sys.exc_info()[1]
            message = {"type": "lifespan.startup.failed", "message": ""}
        await super().send(message)


class _Server(uvicorn.Server):
    """uvicorn's server, stopped by Sentinel's trigger rather than by signals of its own."""

    def __init__(self, config: uvicorn.Config, stop: Stop) -> None:
        super().__init__(config)
        self._stop = stop

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn would install handlers for SIGTERM and SIGINT, and raise the signal again
        # after the shutdown, ending the process by it instead of with exit status 0.
        yield

    async def main_loop(self) -> None:
        # Watched only once started: a failed startup leaves no trigger waiting (a worker's
        # waits in a thread, which a cancel would not end).
        async def stop_when_told() -> None:
            await self._stop()
            self.should_exit = True

        watcher = asyncio.create_task(stop_when_told())
        try:
            await super().main_loop()
        finally:
            watcher.cancel()


def uvicorn_config(app: ASGIApp, config: Config) -> uvicorn.Config:
    """uvicorn settings for ``config``: httptools with Sentinel's bounds, no access log, no
    ``server`` header, no proxy headers; loaded, with Sentinel's lifespan."""
    server = config.server
    uv = _Config(
        app,
        http=_HttpProtocol,
        ws="none",
        lifespan="on",
        interface="asgi3",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=True,
        workers=1,  # each of Sentinel's worker processes runs one server
        # uvicorn's own keep-alive timer, in whole seconds; the head timer fires first.
        timeout_keep_alive=max(1, math.ceil(server.header_timeout_ms / 1000)),
        timeout_graceful_shutdown=server.shutdown_grace_s,
    )
    uv.head_timeout_s = server.header_timeout_ms / 1000
    uv.load()
    uv.lifespan_class = _Lifespan
    return uv


async def serve(app: ASGIApp, config: Config, sockets: list[socket.socket], stop: Stop) -> None:
    """Serve ``app`` on ``sockets`` until ``stop`` returns (see ``sentinel.engines``)."""
    await _Server(uvicorn_config(app, config), stop).serve(sockets=sockets)
