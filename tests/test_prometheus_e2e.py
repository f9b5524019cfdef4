"""The Grafana dashboard proven against a real Prometheus scraping a real Sentinel under load.

Sentinel (in-process, on a real socket, limits on Redis) serves chat, streams, embeddings,
refusals and upstream errors while Debian's ``prometheus`` scrapes its ``/metrics`` every
second with the admin token. Then every PromQL expression of
``deploy/grafana/dashboards/sentinel.json`` must return at least one finite sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sentinel.config import AdminConfig, KeyConfig, RedisConfig, TelemetryConfig, hash_key
from sentinel.config.usage import UsageSettings
from tests.conftest import CLIENT_KEY, Gateway, StartGateway, Upstream, make_config
from tests.support import dashboard
from tests.support.prometheus_server import (
    PrometheusServer,
    PrometheusUnavailable,
    find_or_install_prometheus,
    running_prometheus,
    scrape_config,
)
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "admin-token-for-the-prometheus-test"
LIMITED_KEY = "sk-test-limited-key-0123456789"
DEADLINE_S = 30


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """Debian's prometheus, installed on first use when missing (as root)."""
    try:
        return find_or_install_prometheus()
    except PrometheusUnavailable as missing:
        pytest.skip(str(missing))


@pytest.fixture
async def gateway(
    private_redis: RedisServer, upstream: Upstream, start_gateway: StartGateway, tmp_path: Path
) -> Gateway:
    """Sentinel with an admin-token-protected /metrics, limits on Redis, a usage sink, and a
    second key whose rpm is low enough to be refused under the test's load.

    Redis comes first among the arguments so that it is torn down after the gateway, whose
    last flush still writes to it."""
    config = make_config(upstream.url)
    limited = KeyConfig(name="limited", key_sha256=hash_key(LIMITED_KEY), rpm=3)
    config = dataclasses.replace(
        config,
        keys=(dataclasses.replace(config.keys[0], rpm=100_000, tpm=100_000_000), limited),
        redis=RedisConfig(url=f"redis://127.0.0.1:{private_redis.port}/0", timeout_ms=1_000),
        admin=AdminConfig(token=ADMIN_TOKEN),
        telemetry=TelemetryConfig(metrics_public=False),
        usage=UsageSettings(
            spool_dir=tmp_path / "spool",
            jsonl_path=tmp_path / "usage.jsonl",
            flush_interval_ms=200,
        ),
    )
    return await start_gateway(config)


async def test_every_dashboard_query_returns_data(
    gateway: Gateway, prometheus_binary: str, tmp_path: Path
) -> None:
    """Each panel's PromQL finds data in Prometheus once Sentinel has served some load."""
    queries = dashboard.queries(dashboard.load())
    assert queries
    config = scrape_config(f"127.0.0.1:{gateway.port}", interval_s=1, bearer=ADMIN_TOKEN)
    async with (
        running_prometheus(prometheus_binary, tmp_path, config) as prometheus,
        aiohttp.ClientSession() as http,
    ):
        load = asyncio.create_task(_drive_load(http, gateway))
        try:
            await _wait_for_scrapes(prometheus, samples=3)
            missing = await _queries_without_data(prometheus, queries)
        finally:
            load.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load
        assert not missing, (
            "dashboard queries without data:\n"
            + "\n".join(f"- {q.panel} [{q.ref_id}]: {q.expr}" for q in missing)
            + f"\nprometheus log:\n{prometheus.log_tail()}"
        )


async def _wait_for_scrapes(prometheus: PrometheusServer, samples: int) -> None:
    """Until Prometheus holds ``samples`` successful scrapes of Sentinel."""
    expr = 'sum_over_time(up{job="sentinel"}[1m])'
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        result = await prometheus.query(expr)
        if result and float(result[0]["value"][1]) >= samples:
            return
        await asyncio.sleep(0.2)
    up = await prometheus.query('up{job="sentinel"}')
    raise AssertionError(f"no {samples} good scrapes: up={up}\n{prometheus.log_tail()}")


async def _queries_without_data(
    prometheus: PrometheusServer, queries: list[dashboard.Query]
) -> list[dashboard.Query]:
    """The queries still without a finite sample when the deadline passes (rates need two
    scrapes of a series, so a series that appeared late gets a few more seconds)."""
    pending = list(queries)
    deadline = time.monotonic() + DEADLINE_S
    while pending and time.monotonic() < deadline:
        pending = [q for q in pending if not _has_data(await prometheus.query(q.expr))]
        if pending:
            await asyncio.sleep(0.5)
    return pending


def _has_data(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


async def _drive_load(http: aiohttp.ClientSession, gateway: Gateway) -> None:
    """Every kind of request the dashboard shows, over and over, until cancelled."""
    base = gateway.base_url
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}
    calls: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        ("/chat/completions", chat, auth),
        ("/chat/completions", {**chat, "stream": True}, auth),
        ("/embeddings", {"model": "text-embedding-3-small", "input": "some text"}, auth),
        ("/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "say hi"}, auth),
        ("/chat/completions", chat, {**auth, "x-mock-fault": "status:500"}),
        ("/chat/completions", chat, {"Authorization": f"Bearer {LIMITED_KEY}"}),
        ("/chat/completions", chat, {"Authorization": "Bearer sk-not-a-key-at-all"}),
    ]
    while True:
        for path, body, headers in calls:
            async with http.post(base + path, json=body, headers=headers) as response:
                await response.read()
        await asyncio.sleep(0.05)
