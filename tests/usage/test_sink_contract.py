"""One contract over every sink: a file-safe name, replays accepted, failure as DeliveryError."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from sentinel.usage.sinks import DeliveryError, UsageSink
from sentinel.usage.sinks.jsonl import JsonlSink
from sentinel.usage.sinks.redis import RedisCounterSink
from sentinel.usage.sinks.webhook import WebhookSink
from tests.usage.fakes import Receiver, free_port, records

Make = Callable[[bool], Awaitable[UsageSink]]


async def _no_sleep(delay: float) -> None:
    return None


@pytest.fixture(params=["jsonl", "webhook", "redis"])
async def make_sink(
    request: pytest.FixtureRequest, tmp_path: Path, redis_port: int
) -> AsyncIterator[Make]:
    """Builds the parametrised sink, working (True) or pointed at something broken (False)."""
    closers: list[Callable[[], Awaitable[object]]] = []
    session = aiohttp.ClientSession()
    closers.append(session.close)

    async def make(working: bool) -> UsageSink:
        if request.param == "jsonl":
            blocker = tmp_path / "blocker"
            blocker.write_text("x")
            return JsonlSink(tmp_path / "usage.jsonl" if working else blocker / "usage.jsonl")
        if request.param == "webhook":
            port = free_port()
            if working:
                receiver = Receiver()
                await receiver.start(port)
                closers.insert(0, receiver.stop)
            url = f"http://127.0.0.1:{port}/usage"
            return WebhookSink(session, url, max_attempts=2, sleep=_no_sleep)
        client = Redis(port=redis_port if working else free_port(), retry=Retry(NoBackoff(), 0))
        closers.insert(0, client.aclose)
        return RedisCounterSink(client)

    yield make
    for close in closers:
        await close()


async def test_name_can_name_spool_files(make_sink: Make) -> None:
    """Every sink's name fits the spool's file naming."""
    sink = await make_sink(True)
    assert re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", sink.name)


async def test_accepts_a_batch_and_its_replay(make_sink: Make) -> None:
    """A batch, and the same batch replayed, are both accepted without error."""
    sink = await make_sink(True)
    await sink.deliver(records(3))
    await sink.deliver(records(3))


async def test_failure_is_a_delivery_error(make_sink: Make) -> None:
    """A sink that cannot deliver raises DeliveryError, never returns quietly."""
    sink = await make_sink(False)
    with pytest.raises(DeliveryError):
        await sink.deliver(records(1))
