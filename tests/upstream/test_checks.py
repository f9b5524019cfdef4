"""Active health checks against real mock upstreams feed the upstream's breaker."""

from __future__ import annotations

import aiohttp

from sentinel.breaker import BreakerPolicy, BreakerState
from sentinel.config import UpstreamConfig
from sentinel.mock import MockSettings, serve
from sentinel.upstream.board import HealthBoard
from sentinel.upstream.checks import HealthChecker
from sentinel.upstream.routing import Router


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def now_ms(self) -> int:
        return self.now


async def test_checks_open_and_close_the_breaker() -> None:
    """Failing checks open the breaker (whatever the two-keys rule); after the cooldown a
    passing check closes it."""
    failing, failing_port = await serve("127.0.0.1", 0, MockSettings(fault="status:500"))
    healthy, healthy_port = await serve("127.0.0.1", 0, MockSettings())
    clock = Clock()
    board = HealthBoard(("u",), BreakerPolicy(failures=2, cooldown_ms=1_000, min_sources=2), clock)
    try:
        async with aiohttp.ClientSession() as session:
            config = UpstreamConfig(
                name="u", base_url=f"http://127.0.0.1:{failing_port}/v1", health_check_interval_s=5
            )
            checker = HealthChecker(session, Router((config,)).targets, board)
            assert await checker.check(checker._targets[0]) is False
            assert await checker.check(checker._targets[0]) is False
            assert board["u"].breaker.state is BreakerState.OPEN
            assert not board["u"].is_available(None, clock.now)
            assert await checker.check(checker._targets[0]) is None  # cooling down
            config = UpstreamConfig(
                name="u", base_url=f"http://127.0.0.1:{healthy_port}/v1", health_check_interval_s=5
            )
            checker = HealthChecker(session, Router((config,)).targets, board)
            clock.now = 1_000
            assert await checker.check(checker._targets[0]) is True
            assert board["u"].breaker.is_closed
    finally:
        await failing.cleanup()
        await healthy.cleanup()
