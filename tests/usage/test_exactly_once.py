"""Exactly-once, proven end to end against a real webhook receiver and a restart in the middle.

The receiver first refuses connections (not listening), then answers 429 with Retry-After,
then 500, then stalls past the client's timeout, then works. Sentinel's tracker is closed and a
new one opened on the same spool half-way, as a restart would. At the end the receiver's totals,
de-duplicated by record id, must equal the sum of every recorded request's usage.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import aiohttp

from sentinel.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from sentinel.usage.records import UsageRecord
from sentinel.usage.sinks.webhook import WebhookSink
from sentinel.usage.spool import Spool
from sentinel.usage.tracker import UsageTracker
from tests.usage.fakes import Receiver, eventually, expected_totals, free_port, records


class Sleeps:
    """The webhook's injected sleep: remembers each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Clock:
    """The breakers' clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 0.0

    def now_ms(self) -> int:
        return round(self.now * 1000)


def spooled_ids(spool_dir: Path) -> set[str]:
    spool = Spool(spool_dir)
    return {r.record_id for entry in spool.pending() for r in spool.load(entry)}


class Sentinel:
    """One 'process': a tracker with a webhook sink over the shared spool directory."""

    def __init__(self, session: aiohttp.ClientSession, url: str, spool_dir: Path) -> None:
        self.clock = Clock()
        self.sleeps = Sleeps()
        self.sink = WebhookSink(
            session,
            url,
            timeout_ms=200,
            max_attempts=2,
            backoff_ms=100,
            backoff_max_ms=5_000,
            breaker=CircuitBreaker(BreakerPolicy(failures=3, cooldown_ms=30_000)),
            clock=self.clock,
            sleep=self.sleeps,
        )
        self.tracker = UsageTracker(
            [self.sink],
            Spool(spool_dir),
            capacity=50,
            batch_size=10,
            flush_interval_ms=10,
            replay_interval_ms=10,
            close_timeout_ms=5_000,
        )
        self.tracker.start()


async def test_every_token_counted_exactly_once(spool_dir: Path) -> None:
    """Refusals, 429, 500, a stall and a restart lose nothing and count nothing twice."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/usage"
    receiver = Receiver(["429", "500", "stall"], retry_after="1")
    recorded: list[UsageRecord] = []

    def record(sentinel: Sentinel, batch: list[UsageRecord]) -> None:
        for item in batch:
            sentinel.tracker.record(item)
            recorded.append(item)

    async with aiohttp.ClientSession() as session:
        # Process one: the receiver is not listening yet; 60 records, 10 of them beyond capacity.
        first = Sentinel(session, url, spool_dir)
        record(first, records(60))
        assert first.tracker.stats.spilled == 10
        await eventually(lambda: first.sink.breaker.state is BreakerState.OPEN, "open circuit")
        await eventually(
            lambda: spooled_ids(spool_dir) == {r.record_id for r in recorded}, "all spooled"
        )
        record(first, records(5, start=60))  # queued when the restart comes
        await first.tracker.aclose()
        assert spooled_ids(spool_dir) == {r.record_id for r in recorded}

        # Process two, on the same spool; the receiver now listens and misbehaves, then works.
        await receiver.start(port)
        try:
            second = Sentinel(session, url, spool_dir)
            record(second, records(30, start=65))
            await eventually(lambda: receiver.answers == ["429", "500", "stall"], "the faults")
            await eventually(lambda: second.sink.breaker.state is BreakerState.OPEN, "reopen")
            second.clock.now += 30  # the breaker lets one probe through; the receiver is fine
            record(second, records(10, start=95))
            await eventually(lambda: spooled_ids(spool_dir) == set(), "the spool drained")
            await eventually(lambda: len(receiver.records) == len(recorded), "every record")
            await second.tracker.aclose()
        finally:
            await receiver.stop()

    assert sorted(receiver.records) == sorted(r.record_id for r in recorded)
    assert receiver.totals() == expected_totals(recorded)
    assert max(receiver.copies.values()) == 2, "the stalled batch arrived twice, counted once"
    repeated = [key for key, seen in Counter(receiver.idempotency_keys).items() if seen > 1]
    assert repeated, "retried batches must carry the same Idempotency-Key"
    assert 1.0 in second.sleeps.delays, "Retry-After: 1 was honoured"
    assert Spool(spool_dir).poisoned() == []
    assert second.tracker.stats.replayed >= 1
    assert first.tracker.stats.dropped == second.tracker.stats.dropped == 0
