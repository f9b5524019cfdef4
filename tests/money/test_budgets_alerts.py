"""Budget alerts: one webhook POST per budget window and threshold, across replicas."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from sentinel.config import RedisConfig
from sentinel.config.budgets import Budgets
from sentinel.config.spending import BudgetSettings
from sentinel.config.usage import WebhookSettings
from tests.conftest import StartGateway, Upstream
from tests.money.test_budgets_e2e import budget_config, chat, hold_of
from tests.support.redis_server import RedisServer


class AlertReceiver:
    """Takes alert POSTs; the first delivery of each id is refused with a 503 (so it is
    retried), every later one accepted."""

    def __init__(self) -> None:
        self.accepted: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.bodies: dict[str, dict[str, Any]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        key = request.headers["Idempotency-Key"]
        body = orjson.loads(await request.read())
        assert body["id"] == key
        if not self.refused[key]:
            self.refused[key] += 1
            return web.Response(status=503)
        self.accepted[key] += 1
        self.bodies[key] = body
        return web.json_response({"ok": True})


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[AlertReceiver, str]]:
    """A receiver on a free loopback port, and its URL."""
    alerts = AlertReceiver()
    app = web.Application()
    app.router.add_post("/alerts", alerts.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield alerts, f"http://127.0.0.1:{port}/alerts"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("replicas", [1, 2])
async def test_each_threshold_alerts_once_however_many_replicas_see_it(
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
    receiver: tuple[AlertReceiver, str],
    replicas: int,
) -> None:
    """Spending past 10% and 20% of a budget through one gateway (the state file) or two
    (Redis) POSTs exactly one alert per threshold, retried after a 503, and logs it."""
    alerts, url = receiver
    probe = await start_gateway(
        budget_config(upstream, tmp_path / "p", "sk-unused-0123456789", "probe", Budgets())
    )
    hold = await hold_of(http, probe)
    name = f"alerted-{uuid.uuid4().hex[:6]}"
    key = f"sk-test-{name}-0123456789"
    budget = 10 * hold
    settings = BudgetSettings(
        alert_thresholds=(1_000, 2_000),
        webhook=WebhookSettings(url=url, backoff_ms=10, backoff_max_ms=50),
    )
    redis = (
        RedisConfig(url=f"redis://127.0.0.1:{redis_server.port}/0", replicas=2)
        if replicas == 2
        else None
    )
    gateways = []
    for i in range(replicas):
        config = budget_config(
            upstream, tmp_path / str(i), key, name, Budgets(usd_per_day=budget), redis=redis
        )
        gateways.append(await start_gateway(dataclasses.replace(config, budgets=settings)))
    with capture_logs() as logs:
        for i in range(10):
            status, _, _ = await chat(http, gateways[i % replicas], key)
            assert status == 200
        deadline = time.monotonic() + 10
        while sum(alerts.accepted.values()) < 2:
            assert time.monotonic() < deadline, alerts.accepted
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # time for a duplicate to show up, were there one
    assert len(alerts.accepted) == 2 and set(alerts.accepted.values()) == {1}
    bodies = sorted(alerts.bodies.values(), key=lambda b: b["threshold"])
    assert [b["threshold"] for b in bodies] == ["0.1", "0.2"]
    assert all(b["key_id"] == f"cfg:{name}" and b["budget"] == "usd_per_day" for b in bodies)
    assert all(b["period"] and b["limit_usd"] for b in bodies)
    events = [e for e in logs if e["event"] == "budget_alert"]
    assert sorted(e["id"] for e in events) == sorted(alerts.accepted)
