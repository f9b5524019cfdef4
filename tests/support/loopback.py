"""An aiohttp app on ``127.0.0.1:port``, listening from ``start()`` until ``stop()``.

The tests' fake services (identity service, JWKS, usage webhook) hold one and add their own
routes; ``stop()`` then ``start()`` again brings the same port back, which is how a test takes a
service down and up.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

__all__ = ["LoopbackSite"]


class LoopbackSite:
    """One app whose routes ``routes`` adds, served on ``127.0.0.1:port``."""

    def __init__(
        self,
        port: int,
        routes: Callable[[web.Application], object],  # adds the routes
        shutdown_timeout: float = 0.5,
    ) -> None:
        self.port = port
        self._routes = routes
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        self._routes(app)
        self._runner = web.AppRunner(app, shutdown_timeout=self._shutdown_timeout)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """Stop listening (connections are then refused); a second stop does nothing."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
