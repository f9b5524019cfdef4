"""The webhook sink against a real aiohttp receiver: keys, retries, Retry-After, poison, breaker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime

import aiohttp
import pytest

from sentinel.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from sentinel.usage.records import batch_id
from sentinel.usage.sinks import CircuitOpen, DeliveryError, PoisonBatch
from sentinel.usage.sinks.webhook import WebhookSink, parse_retry_after, retry_delay
from tests.usage.fakes import Receiver, free_port, records


class Sleeps:
    """An injected sleep that records the delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def now_ms(self) -> int:
        return round(self.now * 1000)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make_sink(
    session: aiohttp.ClientSession, port: int, sleeps: Sleeps, **overrides: object
) -> WebhookSink:
    options: dict[str, object] = {
        "headers": {"Authorization": "Bearer receiver-token"},
        "timeout_ms": 300,
        "max_attempts": 3,
        "backoff_ms": 100,
        "backoff_max_ms": 2_000,
        "sleep": sleeps,
        "rand": lambda: 0.5,
        **overrides,
    }
    return WebhookSink(session, f"http://127.0.0.1:{port}/usage", **options)  # type: ignore[arg-type]


async def started(port: int, script: list[str], retry_after: str = "1") -> Receiver:
    receiver = Receiver(script, retry_after=retry_after)
    await receiver.start(port)
    return receiver


async def test_posts_batch_with_idempotency_key(
    session: aiohttp.ClientSession, port: int, sleeps: Sleeps
) -> None:
    """A batch arrives once, keyed by its batch id, with every record and its record id."""
    receiver = await started(port, [])
    try:
        batch = records(3)
        await make_sink(session, port, sleeps).deliver(batch)
        assert receiver.idempotency_keys == [batch_id(batch)]
        assert sorted(receiver.records) == [r.record_id for r in batch]
        assert receiver.records["rec-00001"]["request_id"] == "req-00001"
        assert receiver.records["rec-00001"]["total_tokens"] == batch[1].total_tokens
        assert sleeps.delays == []
    finally:
        await receiver.stop()


async def test_records_sharing_a_request_id_are_all_delivered(
    session: aiohttp.ClientSession, port: int, sleeps: Sleeps
) -> None:
    """Two records carrying one client's request id reach a receiver that de-duplicates by
    record id as two records."""
    receiver = await started(port, [])
    try:
        batch = [replace(r, request_id="client-retry-7") for r in records(2)]
        await make_sink(session, port, sleeps).deliver(batch)
        assert sorted(receiver.records) == ["rec-00000", "rec-00001"]
        assert {r["request_id"] for r in receiver.records.values()} == {"client-retry-7"}
        assert receiver.idempotency_keys == [batch_id(batch)]
    finally:
        await receiver.stop()


async def test_retries_5xx_with_jittered_backoff_and_same_key(
    session: aiohttp.ClientSession, port: int, sleeps: Sleeps
) -> None:
    """500s are retried after full-jitter exponential delays, every try with the same key."""
    receiver = await started(port, ["500", "500"])
    try:
        batch = records(2)
        await make_sink(session, port, sleeps).deliver(batch)
        assert receiver.answers == ["500", "500", "ok"]
        assert receiver.idempotency_keys == [batch_id(batch)] * 3
        assert sleeps.delays == [0.05, 0.1]  # rand 0.5 of 100 ms, then of 200 ms
    finally:
        await receiver.stop()


async def test_honours_retry_after_seconds(
    session: aiohttp.ClientSession, port: int, sleeps: Sleeps
) -> None:
    """A 429 with Retry-After waits exactly that long before the retry."""
    receiver = await started(port, ["429"], retry_after="2")
    try:
        await make_sink(session, port, sleeps).deliver(records(1))
        assert receiver.answers == ["429", "ok"]
        assert sleeps.delays == [2.0]
    finally:
        await receiver.stop()


async def test_long_retry_after_opens_the_breaker_instead_of_waiting(
    session: aiohttp.ClientSession, port: int, sleeps: Sleeps
) -> None:
    """A Retry-After beyond backoff_max gives up now and holds the circuit open that long."""
    clock = Clock()
    breaker = CircuitBreaker(BreakerPolicy(failures=5, cooldown_ms=1_000))
    receiver = await started(port, ["429"], retry_after="120")
    try:
        sink = make_sink(session, port, sleeps, breaker=breaker, clock=clock)
        with pytest.raises(DeliveryError, match="HTTP 429"):
            await sink.deliver(records(1))
        assert sleeps.delays == []
        clock.now = 119
        with pytest.raises(CircuitOpen):
            await sink.deliver(records(1))
        clock.now = 120
        await sink.deliver(records(1))
        assert receiver.answers == ["429", "ok"]
    finally:
        await receiver.stop()


async def test_retry_after_outlasts_the_breaker_it_opens(
    session: aiohttp.ClientSession, port: int, sleeps: Sleeps
) -> None:
    """A 429 that opens the breaker keeps it open for its Retry-After, not just reset_after."""
    clock = Clock()
    breaker = CircuitBreaker(BreakerPolicy(failures=1, cooldown_ms=1_000))
    receiver = await started(port, ["429"], retry_after="5")
    try:
        sink = make_sink(session, port, sleeps, breaker=breaker, clock=clock)
        with pytest.raises(DeliveryError, match="HTTP 429"):
            await sink.deliver(records(1))
        clock.now = 4.9
        with pytest.raises(CircuitOpen):
            await sink.deliver(records(1))
        clock.now = 5
        await sink.deliver(records(1))
        assert receiver.answers == ["429", "ok"]
    finally:
        await receiver.stop()


async def test_other_4xx_is_poison_without_retry(
    session: aiohttp.ClientSession, port: int, sleeps: Sleeps
) -> None:
    """A 400 raises PoisonBatch after one attempt and leaves the circuit closed."""
    receiver = await started(port, ["400"])
    try:
        sink = make_sink(session, port, sleeps)
        with pytest.raises(PoisonBatch, match="HTTP 400"):
            await sink.deliver(records(1))
        assert receiver.answers == ["400"]
        assert sink.breaker.state is BreakerState.CLOSED
    finally:
        await receiver.stop()


async def test_connection_refused_is_retried_then_fails(
    session: aiohttp.ClientSession, port: int, sleeps: Sleeps
) -> None:
    """With nothing listening every attempt fails and the sink raises DeliveryError."""
    with pytest.raises(DeliveryError, match="after 3 attempt"):
        await make_sink(session, port, sleeps).deliver(records(1))
    assert len(sleeps.delays) == 2


async def test_timeout_is_retried_with_the_same_key(
    session: aiohttp.ClientSession, port: int, sleeps: Sleeps
) -> None:
    """A receiver that stalls past the timeout gets the batch again under the same key."""
    receiver = await started(port, ["stall"])
    try:
        batch = records(2)
        await make_sink(session, port, sleeps, timeout_ms=100).deliver(batch)
        assert receiver.answers == ["stall", "ok"]
        assert receiver.idempotency_keys == [batch_id(batch)] * 2
        assert receiver.copies["rec-00000"] == 2  # stored twice, counted once by record id
    finally:
        await receiver.stop()


async def test_open_circuit_sends_nothing(
    session: aiohttp.ClientSession, port: int, sleeps: Sleeps
) -> None:
    """Once failures open the breaker, deliveries fail fast without touching the network."""
    clock = Clock()
    breaker = CircuitBreaker(BreakerPolicy(failures=2, cooldown_ms=30_000))
    sink = make_sink(session, port, sleeps, breaker=breaker, clock=clock, max_attempts=5)
    with pytest.raises(DeliveryError, match="after 2 attempt"):
        await sink.deliver(records(1))
    assert len(sleeps.delays) == 1  # no sleep once the second failure opened the circuit
    receiver = await started(port, [])
    try:
        with pytest.raises(CircuitOpen, match="circuit open"):
            await sink.deliver(records(1))
        assert receiver.answers == []
        clock.now = 30
        await sink.deliver(records(1))
        assert breaker.state is BreakerState.CLOSED
    finally:
        await receiver.stop()


def test_parse_retry_after() -> None:
    """Retry-After is read as delta seconds or an HTTP date; junk and past dates are handled."""
    now = datetime(2025, 1, 31, 12, 0, 0, tzinfo=UTC).timestamp()
    later = format_datetime(datetime(2025, 1, 31, 12, 0, 30, tzinfo=UTC), usegmt=True)
    earlier = format_datetime(datetime(2025, 1, 31, 11, 0, 0, tzinfo=UTC), usegmt=True)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after(later, now) == 30.0
    assert parse_retry_after(earlier, now) == 0.0
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after("1.5", now) is None


def test_retry_delay_is_full_jitter_capped() -> None:
    """Delays grow exponentially from the base, are capped, and scale with the random draw."""
    assert retry_delay(1, 0.1, 1.0, lambda: 1.0) == pytest.approx(0.1)
    assert retry_delay(3, 0.1, 1.0, lambda: 1.0) == pytest.approx(0.4)
    assert retry_delay(10, 0.1, 1.0, lambda: 1.0) == pytest.approx(1.0)
    assert retry_delay(10, 0.1, 1.0, lambda: 0.0) == 0.0
