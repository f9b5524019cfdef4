"""Active health checks: ``GET {base_url}/models`` on each upstream that asks for them.

One owned background task checks every upstream with ``health_check_interval_s > 0`` on its
own period and feeds the upstream's breaker: an answer below 500 (other than 401/403, which
mean Sentinel's key is refused) is a success, anything else a failure; a 429 counts as
neither. While a breaker is open the check waits for its cooldown and then is the probe.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import structlog

from sentinel.upstream.board import HealthBoard
from sentinel.upstream.call import upstream_url
from sentinel.upstream.routing import UpstreamTarget

__all__ = ["HealthChecker"]

log = structlog.get_logger("sentinel.upstream.checks")

_MAX_CHECK_S = 10.0
_TICK_S = 1.0


class HealthChecker:
    """Runs the periodic checks of every upstream that configures them."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        targets: tuple[UpstreamTarget, ...],
        board: HealthBoard,
    ) -> None:
        self._session = session
        self._targets = tuple(t for t in targets if t.config.health_check_interval_s > 0)
        self._board = board
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background task (only when some upstream has checks)."""
        if self._targets and self._task is None:
            self._task = asyncio.create_task(self._run(), name="sentinel-health-checks")

    async def aclose(self) -> None:
        """Stop the task and wait for it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        clock = self._board.clock
        due = {t.name: 0 for t in self._targets}
        while True:
            now = clock.now_ms()
            ready = [t for t in self._targets if due[t.name] <= now]
            for target in ready:
                due[target.name] = now + target.config.health_check_interval_s * 1000
            if ready:
                await asyncio.gather(*(self.check(t) for t in ready))
            wait_ms = min(due.values()) - clock.now_ms()
            await asyncio.sleep(min(_TICK_S, max(wait_ms, 10) / 1000))

    async def check(self, target: UpstreamTarget) -> bool | None:
        """Check ``target`` once and count the result; None when skipped or inconclusive."""
        health = self._board[target.name]
        breaker = health.breaker
        if not breaker.try_acquire(self._board.clock.now_ms()):
            return None  # open, cooling down (or a request holds the probe)
        headers = dict(target.auth_headers)
        auth = target.keys.header(target.keys.pick(self._board.clock.now_ms()))
        if auth is not None:
            headers[auth[0]] = auth[1]
        url = upstream_url(target, "/v1/models", b"")
        status: int | None = None
        try:
            async with asyncio.timeout(min(target.first_byte_s, _MAX_CHECK_S)):
                async with self._session.get(
                    url, headers=headers, allow_redirects=False, timeout=target.timeout
                ) as response:
                    status = response.status
                    await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("health_check_failed", upstream=target.name, error=type(exc).__name__)
        now = self._board.clock.now_ms()
        if status == 429:
            return None
        healthy = status is not None and status < 500 and status not in (401, 403)
        if healthy:
            breaker.record_success(now)
        else:
            if status is not None:
                log.warning("health_check_failed", upstream=target.name, status=status)
            breaker.record_failure(now)
        return healthy
