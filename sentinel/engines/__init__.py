"""The HTTP servers Sentinel runs on, side by side, chosen by ``[server] engine``.

- ``hypercorn`` (the default): h11 for HTTP/1.1, h2 for HTTP/2.
- ``uvicorn``: httptools for HTTP/1.1 only, on uvloop; fewer microseconds per request.

Each engine module offers one coroutine, ``serve(app, config, sockets, stop)``: serve ``app``
on sockets bound beforehand until ``stop`` returns, let requests in flight finish within
``server.shutdown_grace_s``, and raise ``StartupError`` with the lifespan's own reason when
startup fails. Both answer what never reaches the app the same way: a request head that is
not HTTP gets a 400, one larger than ``MAX_HEAD_BYTES`` a 431 (no body, connection closed),
and one not complete within ``server.header_timeout_ms`` of the connection opening or of the
previous response ending has its connection closed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sentinel.app import StartupError

__all__ = ["MAX_HEAD_BYTES", "Stop", "startup_failure"]

MAX_HEAD_BYTES = 64 * 1024
"""The largest request head (request line and headers) an engine buffers before a 431."""

Stop = Callable[[], Awaitable[None]]
"""Returns when serving should stop."""


def startup_failure(cause: BaseException | None) -> str:
    """The reason a failed lifespan gives, without a traceback: a ``StartupError`` says it
    itself, naming its step; anything else is named by its type."""
    if isinstance(cause, StartupError):
        return str(cause)
    if cause is None:
        return "startup failed"
    return f"startup: {type(cause).__name__}: {cause}"
