"""Serving with hypercorn: h11 and h2, one idle timer per connection."""

from __future__ import annotations

from typing import Any

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.utils import LifespanFailureError, wrap_app

from sentinel.app import StartupError
from sentinel.config import Config
from sentinel.engines import MAX_HEAD_BYTES, Stop, startup_failure
from sentinel.http.asgi import ASGIApp

__all__ = ["hypercorn_config", "serve"]


def hypercorn_config(config: Config) -> HypercornConfig:
    """Hypercorn settings for ``config`` (no access log: Sentinel logs its own line)."""
    hc = HypercornConfig()
    hc.bind = [config.server.bind]
    hc.workers = config.server.workers
    hc.graceful_timeout = float(config.server.shutdown_grace_s)
    hc.accesslog = None
    hc.errorlog = "-"
    # hypercorn's idle timer runs from the end of one request until the next one's headers are
    # complete: it bounds both an idle keep-alive connection and a slow request head.
    hc.keep_alive_timeout = config.server.header_timeout_ms / 1000
    hc.include_server_header = False
    hc.h11_max_incomplete_size = MAX_HEAD_BYTES
    return hc


async def serve(app: ASGIApp, config: Config, sockets: Sockets, stop: Stop) -> None:
    """Serve ``app`` on ``sockets`` until ``stop`` returns (see ``sentinel.engines``)."""
    hc = hypercorn_config(config)
    # Starlette's ASGI types are looser than hypercorn's.
    asgi: Any = app
    try:
        await worker_serve(
            wrap_app(asgi, hc.wsgi_max_body_size, "asgi"),
            hc,
            sockets=sockets,
            shutdown_trigger=stop,
        )
    except LifespanFailureError as error:
        # Starlette sends ``lifespan.startup.failed`` from inside its ``except`` block and
        # hypercorn raises on that send, so the lifespan's own error is the context.
        raise StartupError(startup_failure(error.__context__)) from None
