"""Metrics through the real gateway: ``/metrics`` access, what requests record, bounded labels."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from sentinel.config import AdminConfig, Config, KeyConfig, RedisConfig, TelemetryConfig, hash_key
from sentinel.config.usage import UsageSettings
from sentinel.telemetry.metrics import BoundedLabel
from tests.conftest import CLIENT_KEY, StartGateway, Upstream, make_config
from tests.support.redis_server import RedisServer

ADMIN = "admin-token-for-metrics-0123"
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def _config(upstream: Upstream, **telemetry: Any) -> Config:
    config = make_config(upstream.url)
    key = KeyConfig(name="team-a", key_sha256=hash_key(CLIENT_KEY), rpm=3)
    return dataclasses.replace(
        config,
        keys=(key,),
        admin=AdminConfig(token=ADMIN),
        telemetry=TelemetryConfig(**telemetry),
    )


async def _scrape(http: aiohttp.ClientSession, url: str) -> dict[tuple[str, frozenset[Any]], float]:
    async with http.get(f"{url}/metrics", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/plain")
        text = await r.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _total(samples: dict[tuple[str, frozenset[Any]], float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


async def test_metrics_need_the_admin_token_unless_public(
    upstream: Upstream, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(_config(upstream))
    for headers in ({}, {"Authorization": "Bearer wrong"}, AUTH):
        async with http.get(f"{gateway.url}/metrics", headers=headers) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "invalid_admin_token"
    await _scrape(http, gateway.url)

    public = await start_gateway(_config(upstream, metrics_public=True))
    async with http.get(f"{public.url}/metrics") as r:
        assert r.status == 200

    closed = dataclasses.replace(_config(upstream), admin=AdminConfig())
    hidden = await start_gateway(closed)
    async with http.get(f"{hidden.url}/metrics") as r:
        assert r.status == 404


async def test_requests_tokens_and_limit_decisions_are_recorded(
    upstream: Upstream, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(_config(upstream))
    sent_tokens = {"input": 0, "output": 0}
    statuses = []
    for body in (CHAT, {**CHAT, "stream": True, "stream_options": {"include_usage": True}}):
        async with http.post(f"{gateway.base_url}/chat/completions", json=body, headers=AUTH) as r:
            statuses.append(r.status)
            if body.get("stream"):
                text = await r.text()
                usage_line = next(line for line in text.splitlines() if '"usage":{' in line)
                usage = orjson.loads(usage_line.removeprefix("data: "))["usage"]
            else:
                usage = (await r.json())["usage"]
            sent_tokens["input"] += usage["prompt_tokens"]
            sent_tokens["output"] += usage["completion_tokens"]
    for _ in range(2):  # rpm = 3: the third request passes, the fourth is refused
        async with http.post(f"{gateway.base_url}/chat/completions", json=CHAT, headers=AUTH) as r:
            statuses.append(r.status)
            await r.read()
    assert statuses == [200, 200, 200, 429]
    samples = await _scrape(http, gateway.url)

    route = "/v1/chat/completions"
    assert _total(samples, "sentinel_requests_total", http_route=route, sentinel_key="team-a") == 4
    assert (
        _total(
            samples,
            "sentinel_requests_total",
            http_route=route,
            http_response_status_code="429",
            error_type="rate_limit_exceeded",
        )
        == 1
    )
    assert _total(samples, "sentinel_limits_decisions_total", sentinel_decision="allowed") == 3
    denied = _total(
        samples,
        "sentinel_limits_decisions_total",
        sentinel_decision="denied",
        sentinel_limit_dimension="requests",
    )
    assert denied == 1
    # Token sums: the two measured requests plus the third (same as the first).
    tokens_in = _total(samples, "gen_ai_client_token_usage_sum", gen_ai_token_type="input")
    tokens_out = _total(samples, "gen_ai_client_token_usage_sum", gen_ai_token_type="output")
    assert tokens_in > sent_tokens["input"] and tokens_out > sent_tokens["output"]
    assert _total(samples, "gen_ai_server_time_to_first_token_seconds_count") == 1
    assert _total(samples, "gen_ai_client_operation_duration_seconds_count") == 4
    assert _total(samples, "sentinel_gateway_overhead_seconds_count", http_route=route) == 4
    assert _total(samples, "sentinel_upstream_requests_total", sentinel_upstream="mock") == 3
    assert _total(samples, "sentinel_usage_records_total") == 4


async def test_client_chosen_model_names_cannot_grow_the_series(
    upstream: Upstream, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(
        dataclasses.replace(_config(upstream), keys=make_config("x").keys)
    )
    for n in range(70):
        body = {**CHAT, "model": f"model-{n}"}
        async with http.post(f"{gateway.base_url}/chat/completions", json=body, headers=AUTH) as r:
            assert r.status == 200
            await r.read()
    samples = await _scrape(http, gateway.url)
    models = {
        dict(labels)["gen_ai_request_model"]
        for name, labels in samples
        if name == "gen_ai_client_operation_duration_seconds_count"
    }
    assert len(models) == 65 and "other" in models


def test_bounded_label_keeps_the_first_values() -> None:
    label = BoundedLabel(limit=2)
    assert [label(v) for v in ("a", "b", "c", "a", None, "")] == [
        "a",
        "b",
        "other",
        "a",
        "none",
        "none",
    ]


async def test_the_fallback_and_drain_counters_are_exported(
    upstream: Upstream,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    private_redis: RedisServer,
) -> None:
    """What the limits' fallback did (settlements queued and dropped included) and what the
    drainer did are counters on /metrics, not only fields in memory."""
    config = dataclasses.replace(
        _config(upstream),
        redis=RedisConfig(url=f"redis://127.0.0.1:{private_redis.port}/0", timeout_ms=200),
        usage=UsageSettings(drain_on_disconnect=True, spool_dir=Path(tempfile.mkdtemp())),
    )
    gateway = await start_gateway(config)
    private_redis.stop()
    async with http.post(f"{gateway.base_url}/chat/completions", json=CHAT, headers=AUTH) as r:
        assert r.status == 200 and r.headers["x-sentinel-degraded"] == "limits"
    samples = await _scrape(http, gateway.url)
    names = {name for name, _ in samples}
    for name in (
        "sentinel_limits_store_unavailable_total",
        "sentinel_limits_local_decisions_total",
        "sentinel_limits_settlements_queued_total",
        "sentinel_limits_settlements_dropped_total",
        "sentinel_limits_recoveries_total",
        "sentinel_streams_drained_total",
        "sentinel_streams_drain_stopped_total",
        "sentinel_streams_drain_skipped_total",
    ):
        assert name in names, name
    assert _total(samples, "sentinel_limits_local_decisions_total") >= 1
    assert _total(samples, "sentinel_limits_store_unavailable_total") >= 1
