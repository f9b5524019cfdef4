"""Usage records end to end: real sockets, the openai SDK, real sinks, a real Sentinel process.

Every authenticated request leaves exactly one record whose counts equal what the client was
told; the Redis counters add up to the same; and a webhook receiver that refuses connections,
answers 429 and 500 and stalls, with Sentinel restarted in the middle, ends up with every
request's usage exactly once after de-duplicating by ``record_id``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from sentinel.config import Config, RedisConfig
from sentinel.config.usage import UsageSettings, WebhookSettings
from sentinel.usage.records import UsageRecord
from sentinel.usage.sinks.redis import Period, UsageCounters, read_counters
from sentinel.usage.spool import Spool
from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, Gateway, Upstream, make_config, running_gateway
from tests.support.processes import free_port, sentinel_process
from tests.support.redis_server import RedisServer
from tests.support.webhook_receiver import TOKEN_FIELDS, WebhookReceiver

MODEL = "gpt-4o-mini"
MESSAGES: list[Any] = [{"role": "user", "content": "Count the tokens of this request"}]
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


@dataclass(frozen=True)
class Sent:
    """One request as the client saw it: its id, where it went, and the usage it was told."""

    request_id: str
    endpoint: str
    status: int
    usage: dict[str, int]  # prompt/completion/total tokens; all zero when none was counted
    source: str = "provider"


def _tokens(usage: Any) -> dict[str, int]:
    """The three token counts of an SDK usage object or an OpenAI ``usage`` JSON object."""
    if isinstance(usage, dict):
        return {field: int(usage.get(field) or 0) for field in TOKEN_FIELDS}
    return {field: int(getattr(usage, field, None) or 0) for field in TOKEN_FIELDS}


NO_TOKENS = dict.fromkeys(TOKEN_FIELDS, 0)


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _with_usage(config: Config, usage: UsageSettings, redis: RedisConfig | None = None) -> Config:
    return dataclasses.replace(config, usage=usage, redis=redis)


# --- in-process traffic through the SDK ------------------------------------------------------


async def _sdk_traffic(gateway: Gateway, http: aiohttp.ClientSession) -> list[Sent]:
    """Chat (JSON, streamed with and without usage), embeddings and two refusals."""
    sent: list[Sent] = []
    chat = "/v1/chat/completions"
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=gateway.key, max_retries=0
    ) as client:
        raw = await client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
        reply = raw.parse()
        assert reply.usage is not None
        sent.append(Sent(raw.headers["x-request-id"], chat, 200, _tokens(reply.usage)))

        raw_stream = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in raw_stream.parse()]
        seen = [chunk.usage for chunk in chunks if chunk.usage is not None]
        assert len(seen) == 1
        streamed = _tokens(seen[0])
        sent.append(Sent(raw_stream.headers["x-request-id"], chat, 200, streamed))

        # Without include_usage the client sees no usage; Sentinel asks for it anyway, and the
        # mock's usage depends only on the prompt and the chunk count: the same as just above.
        raw_stream = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=MESSAGES, stream=True
        )
        chunks = [chunk async for chunk in raw_stream.parse()]
        assert chunks and all(chunk.usage is None for chunk in chunks)
        sent.append(Sent(raw_stream.headers["x-request-id"], chat, 200, streamed))

        raw_embed = await client.embeddings.with_raw_response.create(
            model="text-embedding-3-small", input=["one", "two three"]
        )
        embedded = raw_embed.parse()
        sent.append(
            Sent(raw_embed.headers["x-request-id"], "/v1/embeddings", 200, _tokens(embedded.usage))
        )

    url = f"{gateway.base_url}/chat/completions"
    bad_key = {"Authorization": "Bearer sk-not-a-key-of-this-gateway"}
    async with http.post(url, json={"model": MODEL, "messages": MESSAGES}, headers=bad_key) as r:
        assert r.status == 401  # never authenticated: no record
    headers = {**AUTH, "Content-Type": "application/json"}
    async with http.post(url, data=b'{"model": "gpt-4o-mini", "messages": [', headers=headers) as r:
        assert r.status == 400
        sent.append(Sent(r.headers["x-request-id"], "/v1/chat/completions", 400, NO_TOKENS, "none"))
    return sent


async def test_jsonl_holds_one_record_per_authenticated_request(
    upstream: Upstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """After shutdown the jsonl file holds each authenticated request once, as the client saw it."""
    path = tmp_path / "usage.jsonl"
    usage = UsageSettings(spool_dir=tmp_path / "spool", jsonl_path=path)
    begun = time.time()
    async with running_gateway(_with_usage(make_config(upstream.url), usage)) as gateway:
        sent = await _sdk_traffic(gateway, http)
    ended = time.time()

    records = [UsageRecord.from_json(line) for line in path.read_bytes().splitlines()]
    by_id = {record.request_id: record for record in records}
    assert len(records) == len(by_id), "a request was recorded twice"
    assert sorted(by_id) == sorted(s.request_id for s in sent)
    for request in sent:
        record = by_id[request.request_id]
        assert record.key == "team-a"
        assert record.endpoint == request.endpoint
        assert record.status == request.status
        assert record.source == request.source
        assert {f: getattr(record, f) for f in TOKEN_FIELDS} == request.usage
        started = datetime.fromisoformat(record.started_at).timestamp()
        assert begun - 0.001 <= started <= ended
        assert record.ttfb_ms is not None and 0 <= record.ttfb_ms <= record.duration_ms
        assert record.request_bytes > 0 and record.response_bytes > 0
        if request.status == 200:
            assert record.upstream == "mock"
            assert record.model == (
                MODEL if "chat" in request.endpoint else "text-embedding-3-small"
            )
        else:  # refused before the body was understood: no model, no upstream
            assert (record.model, record.upstream) == ("", "")


async def test_client_request_id_is_kept_and_each_record_counted(
    upstream: Upstream,
    http: aiohttp.ClientSession,
    private_redis: RedisServer,
    tmp_path: Path,
) -> None:
    """A client's x-request-id, sent twice, is both records' request_id unchanged; their
    record_ids differ, and the Redis counters and the webhook count both."""
    path = tmp_path / "usage.jsonl"
    receiver = WebhookReceiver(free_port())
    await receiver.start()
    redis_config = RedisConfig(url=f"redis://127.0.0.1:{private_redis.port}/0", timeout_ms=500)
    usage = UsageSettings(
        spool_dir=tmp_path / "spool",
        jsonl_path=path,
        webhook=WebhookSettings(url=receiver.url, timeout_ms=2_000),
    )
    config = _with_usage(make_config(upstream.url), usage, redis_config)
    body = {"model": MODEL, "messages": MESSAGES}
    told: list[int] = []
    begun = time.time()
    try:
        async with running_gateway(config) as gateway:
            for _ in range(2):
                headers = {**AUTH, "x-request-id": "client-retry-7"}
                url = f"{gateway.base_url}/chat/completions"
                async with http.post(url, json=body, headers=headers) as r:
                    assert r.status == 200 and r.headers["x-request-id"] == "client-retry-7"
                    told.append((await r.json())["usage"]["total_tokens"])
        ended = time.time()
    finally:
        await receiver.stop()

    written = [UsageRecord.from_json(line) for line in path.read_bytes().splitlines()]
    assert [record.request_id for record in written] == ["client-retry-7"] * 2
    record_ids = {record.record_id for record in written}
    assert len(record_ids) == 2
    assert all(i.startswith("rec_") and len(i) == 36 for i in record_ids)

    assert set(receiver.records) == record_ids, "the webhook got both records"
    assert {r.request_id for r in receiver.records.values()} == {"client-retry-7"}

    redis = private_redis.client()
    try:
        counted = await _bucket_sum(redis, "day", begun, ended, 86_400)
    finally:
        await redis.aclose()
    assert (counted.requests, counted.total_tokens) == (2, sum(told))


# --- Redis counters -------------------------------------------------------------------------


async def _bucket_sum(
    redis: Any, period: Period, begun: float, ended: float, step_s: int
) -> UsageCounters:
    """``team-a``'s counters summed over every ``period`` bucket that ``[begun, ended]`` meets."""
    moments = [*range(int(begun), int(ended) + 1, step_s), ended]
    seen: set[str] = set()
    total = UsageCounters()
    for at in moments:
        label = datetime.fromtimestamp(at, UTC).strftime("%Y%m%d%H%M" if step_s == 60 else "%Y%m%d")
        if label in seen:
            continue
        seen.add(label)
        counters = await read_counters(redis, "team-a", period, at=at)
        total = UsageCounters(*(a + b for a, b in zip(_row(total), _row(counters), strict=True)))
    return total


def _row(counters: UsageCounters) -> tuple[int, ...]:
    return dataclasses.astuple(counters)


async def test_redis_counters_add_up_to_the_requests(
    upstream: Upstream,
    http: aiohttp.ClientSession,
    private_redis: RedisServer,
    tmp_path: Path,
) -> None:
    """Per-key minute and day counters equal the requests' sums once Sentinel has stopped."""
    redis_config = RedisConfig(url=f"redis://127.0.0.1:{private_redis.port}/0", timeout_ms=500)
    usage = UsageSettings(spool_dir=tmp_path / "spool", flush_interval_ms=20)
    config = _with_usage(make_config(upstream.url), usage, redis_config)
    begun = time.time()
    async with running_gateway(config) as gateway:
        sent = await _sdk_traffic(gateway, http)
    ended = time.time()

    expected = UsageCounters(
        requests=len(sent), **{f: sum(s.usage[f] for s in sent) for f in TOKEN_FIELDS}
    )
    assert expected.total_tokens > 0
    redis = private_redis.client()
    try:
        assert await _bucket_sum(redis, "minute", begun, ended, 60) == expected
        assert await _bucket_sum(redis, "day", begun, ended, 86_400) == expected
    finally:
        await redis.aclose()


# --- exactly once through a real Sentinel process -------------------------------------------


def _process_config(tmp_path: Path, upstream_url: str, port: int, webhook_url: str) -> Path:
    digest = hashlib.sha256(CLIENT_KEY.encode()).hexdigest()
    path = tmp_path / "sentinel.toml"
    path.write_text(
        f"""
[server]
bind = "127.0.0.1:{port}"
shutdown_grace_s = 5

[[upstreams]]
name = "mock"
base_url = "{upstream_url}"
api_key = "env:UP_KEY"

[[keys]]
name = "team-a"
key_sha256 = "sha256:{digest}"

[usage]
spool_dir = "{tmp_path / "spool"}"
batch_size = 4
flush_interval_ms = 1000
replay_interval_ms = 100
close_timeout_ms = 4000

[usage.webhook]
url = "{webhook_url}"
timeout_ms = 300
max_attempts = 2
backoff_ms = 20
backoff_max_ms = 500
breaker_failures = 3
breaker_reset_ms = 200
"""
    )
    return path


async def _stop(child: asyncio.subprocess.Process) -> None:
    """SIGTERM, as an orchestrator would, and expect a clean exit."""
    child.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(child.wait(), 20) == 0


async def _chat(session: aiohttp.ClientSession, port: int, n: int) -> Sent:
    """Request ``n``: streamed with include_usage when odd, plain JSON when even."""
    stream = n % 2 == 1
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "x " * n}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    headers = {**AUTH, "x-mock-chunks": str(3 + n % 5)}
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    async with session.post(url, json=body, headers=headers) as response:
        assert response.status == 200
        request_id = response.headers["x-request-id"]
        if stream:
            usages = [
                event["usage"]
                for line in (await response.read()).splitlines()
                if line.startswith(b"data: {")
                and (event := orjson.loads(line[6:])).get("usage") is not None
            ]
            assert len(usages) == 1
            usage = usages[0]
        else:
            usage = (await response.json())["usage"]
    return Sent(request_id, "/v1/chat/completions", 200, _tokens(usage))


async def _send(port: int, start: int, count: int) -> list[Sent]:
    async with aiohttp.ClientSession() as session:
        return list(
            await asyncio.gather(*(_chat(session, port, n) for n in range(start, start + count)))
        )


def _spooled_ids(spool_dir: Path) -> list[str]:
    """Every request id in the webhook's spooled batches (repeats included)."""
    spool = Spool(spool_dir)
    found: list[str] = []
    for entry in spool.pending("webhook"):
        try:
            found.extend(r.request_id for r in spool.load(entry))
        except FileNotFoundError:
            continue  # replayed and removed while we looked
    return found


@pytest.mark.slow
async def test_webhook_gets_every_request_exactly_once_across_faults_and_a_restart(
    upstream: Upstream, tmp_path: Path
) -> None:
    """Refusals, 429, 500, a stall and a SIGTERM restart: nothing lost, nothing counted twice."""
    port = free_port()
    receiver = WebhookReceiver(free_port(), stall_s=1.0)
    config = _process_config(tmp_path, upstream.url, port, receiver.url)
    spool_dir = tmp_path / "spool"
    sent: list[Sent] = []
    log_path = tmp_path / "sentinel.log"
    try:
        with log_path.open("w") as log:
            # First process: nobody listens, so every batch ends up in the spool.
            async with sentinel_process(config, port, log, {"UP_KEY": UPSTREAM_KEY}) as first:
                sent += await _send(port, 0, 6)
                ids = sorted(s.request_id for s in sent)
                await _until(lambda: sorted(_spooled_ids(spool_dir)) == ids, "all spooled")

                # The receiver comes up and refuses: 429 with Retry-After, then 500.
                receiver.mode = "429"
                await receiver.start()
                await _until(lambda: receiver.answers["429"] > 0, "a 429")
                receiver.mode = "500"
                await _until(lambda: receiver.answers["500"] > 0, "a 500")
                waited = receiver.answered_at["500"][0] - receiver.answered_at["429"][-1]
                assert waited >= 0.95, f"Retry-After: 1 was not honoured ({waited:.3f} s)"
                sent += await _send(port, 6, 6)
                # Mid-way, within flush_interval_ms of the last response: two of these records
                # are normally still queued, and only the shutdown drain can spool them.
                await _stop(first)
            assert not receiver.records, "429 and 500 take nothing"
            spooled = _spooled_ids(spool_dir)
            assert sorted(set(spooled)) == sorted(s.request_id for s in sent), "drained to spool"

            # Second process on the same spool: the receiver stalls past the timeout, then works.
            receiver.mode = "stall"
            async with sentinel_process(config, port, log, {"UP_KEY": UPSTREAM_KEY}) as second:
                await _until(lambda: receiver.answers["stall"] >= 2, "two stalled deliveries")
                # The receiver recovers; the stalled batches, which it already holds, come again.
                receiver.mode = "ok"
                sent += await _send(port, 12, 6)
                everything = {s.request_id for s in sent}
                await _until(
                    lambda: set(receiver.request_ids) == everything and not _spooled_ids(spool_dir),
                    "every record delivered and the spool empty",
                    timeout_s=15,
                )
                await _stop(second)
    except BaseException:
        print(log_path.read_text()[-20_000:])
        raise
    finally:
        await receiver.stop()

    assert len({s.request_id for s in sent}) == len(sent) == 18
    assert receiver.request_ids == sorted(s.request_id for s in sent), "one record each"
    assert receiver.totals() == {f: sum(s.usage[f] for s in sent) for f in TOKEN_FIELDS}
    by_request = {record.request_id: record for record in receiver.records.values()}
    for request in sent:
        record = by_request[request.request_id]
        assert {f: getattr(record, f) for f in TOKEN_FIELDS} == request.usage
        assert (record.key, record.endpoint, record.status) == ("team-a", request.endpoint, 200)
    assert receiver.duplicates > 0, "the stalled batches arrived again, and were counted once"
