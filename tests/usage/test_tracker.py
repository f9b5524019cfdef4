"""The usage tracker: batching, spilling, spooling, replay, poison and shutdown drain."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from sentinel.usage.records import UsageRecord
from sentinel.usage.sinks import PoisonBatch, UsageSink
from sentinel.usage.sinks.webhook import WebhookSink
from sentinel.usage.spool import Spool
from sentinel.usage.tracker import UsageTracker
from tests.usage.fakes import GatedSink, MemorySink, Receiver, eventually, free_port, records

Factory = Callable[..., UsageTracker]


@pytest.fixture
async def tracker_factory(spool: Spool) -> AsyncIterator[Factory]:
    """Build trackers over the test's spool; every one is closed at teardown."""
    made: list[UsageTracker] = []

    def make(sinks: Sequence[UsageSink], **options: Any) -> UsageTracker:
        settings = {"flush_interval_ms": 60_000, "replay_interval_ms": 60_000, **options}
        tracker = UsageTracker(sinks, spool, **settings)
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        await tracker.aclose()


@asynccontextmanager
async def running(tracker: UsageTracker) -> AsyncIterator[UsageTracker]:
    tracker.start()
    try:
        yield tracker
    finally:
        await tracker.aclose()


async def test_flushes_a_full_batch_at_once(tracker_factory: Factory) -> None:
    """batch_size records are flushed together without waiting for the interval."""
    sink = MemorySink()
    async with running(tracker_factory([sink], batch_size=3)) as tracker:
        for record in records(3):
            tracker.record(record)
        await eventually(lambda: len(sink.batches) == 1, "one full batch")
        assert sink.batches == [records(3)]
        assert tracker.queue_depth == 0
        assert (tracker.stats.batches_flushed, tracker.stats.records_flushed) == (1, 3)


async def test_flushes_a_partial_batch_by_age(tracker_factory: Factory) -> None:
    """A lone record is flushed once it has waited flush_interval_ms."""
    sink = MemorySink()
    async with running(tracker_factory([sink], batch_size=100, flush_interval_ms=20)) as tracker:
        tracker.record(records(1)[0])
        await eventually(lambda: sink.request_ids == ["req-00000"], "the aged record")
        assert tracker.stats.flush_seconds_total >= tracker.stats.flush_seconds_last >= 0


async def test_every_sink_gets_every_batch_concurrently(tracker_factory: Factory) -> None:
    """A slow sink does not hold back the others: batches go to all sinks concurrently."""
    fast, slow = MemorySink("fast"), GatedSink("slow")
    async with running(tracker_factory([fast, slow], batch_size=2)) as tracker:
        for record in records(2):
            tracker.record(record)
        await eventually(lambda: fast.batches == [records(2)] and slow.waiting == 1, "fast sink")
        slow.gate.set()
        await eventually(lambda: slow.batches == [records(2)], "slow sink")


async def test_close_drains_everything_queued(tracker_factory: Factory, spool: Spool) -> None:
    """aclose() delivers every queued record, in full batches, before returning."""
    sink = MemorySink()
    tracker = tracker_factory([sink], batch_size=100)
    tracker.start()
    for record in records(250):
        tracker.record(record)
    await tracker.aclose()
    assert sink.request_ids == [r.request_id for r in records(250)]
    assert [len(b) for b in sink.batches] == [100, 100, 50]
    assert spool.pending() == []


async def test_close_timeout_spools_what_was_not_delivered(
    tracker_factory: Factory, spool: Spool
) -> None:
    """A sink still busy at the close timeout gets its batch and the queue in the spool."""
    memory, stuck = MemorySink(), GatedSink("stuck")
    tracker = tracker_factory([memory, stuck], batch_size=2, close_timeout_ms=50)
    tracker.start()
    for record in records(2):
        tracker.record(record)
    await eventually(lambda: stuck.waiting == 1, "the stuck delivery")
    for record in records(3, start=2):
        tracker.record(record)
    with capture_logs() as logs:
        await tracker.aclose()
    assert any(e["event"] == "usage_close_timed_out" for e in logs)
    spooled: dict[str, list[str]] = {"memory": [], "stuck": []}
    for entry in spool.pending():
        spooled[entry.sink] += [r.request_id for r in spool.load(entry)]
    everything = sorted(r.request_id for r in records(5))
    assert sorted(spooled["stuck"]) == everything
    assert sorted(memory.request_ids + spooled["memory"]) == everything


async def test_queue_full_spills_to_the_spool_and_delivers_later(
    tracker_factory: Factory, spool: Spool
) -> None:
    """Records beyond capacity are spilled (counted), spooled for every sink, then replayed."""
    first, second = MemorySink("first"), MemorySink("second")
    tracker = tracker_factory([first, second], capacity=2, batch_size=2)
    for record in records(5):
        tracker.record(record)  # not started yet: nothing drains the queue
    assert (tracker.stats.recorded, tracker.stats.spilled, tracker.queue_depth) == (5, 3, 2)
    await eventually(lambda: len(spool.pending()) == 4, "spill files: 2 chunks x 2 sinks")
    async with running(tracker):
        await eventually(
            lambda: len(first.request_ids) == len(second.request_ids) == 5, "all delivered"
        )
    for sink in (first, second):
        assert sorted(sink.request_ids) == [r.request_id for r in records(5)]
    assert tracker.stats.replayed == 4
    assert tracker.stats.dropped == 0
    assert spool.pending() == []


async def test_spill_buffer_full_drops_and_counts(tracker_factory: Factory, spool: Spool) -> None:
    """Only when the spill buffer is full too is a record dropped, counted and logged."""
    tracker = tracker_factory([MemorySink()], capacity=1, batch_size=1)
    with capture_logs() as logs:
        for record in records(4):  # 1 queued, 1 being written, 1 buffered, 1 dropped
            tracker.record(record)
    assert (tracker.stats.spilled, tracker.stats.dropped) == (3, 1)
    dropped = [e for e in logs if e["event"] == "usage_record_dropped"]
    assert [(e["record_id"], e["request_id"]) for e in dropped] == [("rec-00003", "req-00003")]
    await eventually(lambda: len(spool.pending()) == 2, "both spill writes")


async def test_failed_delivery_is_spooled_and_replayed_once(
    tracker_factory: Factory, spool: Spool
) -> None:
    """A batch a sink refused is spooled and replayed until it is taken, then removed."""
    flaky, steady = MemorySink("flaky", failures=2), MemorySink("steady")
    tracker = tracker_factory([flaky, steady], batch_size=3, replay_interval_ms=5)
    async with running(tracker):
        for record in records(3):
            tracker.record(record)
        await eventually(lambda: flaky.batches == [records(3)], "the replayed batch")
        await eventually(lambda: spool.pending() == [], "the spool emptied")
    assert steady.batches == [records(3)]
    assert tracker.stats.delivery_failures == 2
    assert (tracker.stats.spooled, tracker.stats.replayed) == (1, 1)


async def test_spool_left_by_a_previous_process_is_replayed_at_start(
    tracker_factory: Factory, spool: Spool
) -> None:
    """Batches spooled before a restart are delivered right after start, to their sink only."""
    spool.append("webhook", records(2))
    spool.append("jsonl", records(1, start=9))
    webhook, jsonl = MemorySink("webhook"), MemorySink("jsonl")
    async with running(tracker_factory([webhook, jsonl])):
        await eventually(lambda: spool.pending() == [], "the replay")
    assert (webhook.batches, jsonl.batches) == ([records(2)], [records(1, start=9)])


async def test_unknown_sinks_in_the_spool_are_kept_and_logged(
    tracker_factory: Factory, spool: Spool
) -> None:
    """Batches for a sink no longer configured stay spooled, with a warning naming it."""
    spool.append("retired", records(1))
    with capture_logs() as logs:
        async with running(tracker_factory([MemorySink()])):
            await eventually(
                lambda: any(e["event"] == "usage_spool_unknown_sinks" for e in logs), "warning"
            )
    assert [e.sink for e in spool.pending()] == ["retired"]
    warning = next(e for e in logs if e["event"] == "usage_spool_unknown_sinks")
    assert warning["sinks"] == ["retired"]


async def test_invalid_spool_file_is_set_aside(tracker_factory: Factory, spool: Spool) -> None:
    """A damaged spool file is moved to poison/ with an error log instead of blocking replay."""
    entry = spool.append("memory", records(1))
    entry.path.write_bytes(b"not json\n")
    with capture_logs() as logs:
        async with running(tracker_factory([MemorySink()])):
            await eventually(lambda: spool.poisoned() != [], "the damaged file set aside")
    assert spool.pending() == []
    assert any(e["event"] == "usage_spool_file_invalid" for e in logs)


async def test_poison_batch_is_kept_in_the_spool_and_logged(
    tracker_factory: Factory, spool: Spool
) -> None:
    """A webhook 4xx keeps the batch under poison/, logs it, and never retries it."""
    port = free_port()
    receiver = Receiver(["400"])
    await receiver.start(port)
    try:
        async with aiohttp.ClientSession() as session:
            sink = WebhookSink(session, f"http://127.0.0.1:{port}/usage")
            tracker = tracker_factory([sink], batch_size=2, replay_interval_ms=5)
            with capture_logs() as logs:
                async with running(tracker):
                    for record in records(2):
                        tracker.record(record)
                    await eventually(lambda: tracker.stats.poisoned == 1, "the poisoned batch")
    finally:
        await receiver.stop()
    assert receiver.answers == ["400"]
    assert spool.pending() == []
    [poisoned] = spool.poisoned()
    assert spool.load(poisoned) == records(2)
    [line] = [e for e in logs if e["event"] == "usage_batch_poisoned"]
    assert (line["sink"], line["records"], line["log_level"]) == ("webhook", 2, "error")
    assert "HTTP 400" in line["error"]


async def test_poison_on_replay_is_set_aside(tracker_factory: Factory, spool: Spool) -> None:
    """A spooled batch the sink rejects for good on replay moves to poison/."""

    class Rejecting(MemorySink):
        async def deliver(self, batch: Sequence[UsageRecord]) -> None:
            raise PoisonBatch("no")

    spool.append("memory", records(1))
    async with running(tracker_factory([Rejecting()])) as tracker:
        await eventually(lambda: tracker.stats.poisoned == 1, "the poisoned replay")
    assert spool.pending() == []
    assert len(spool.poisoned()) == 1


async def test_record_after_close_is_spooled(tracker_factory: Factory, spool: Spool) -> None:
    """A record arriving after aclose() is spooled for the next start, not lost."""
    tracker = tracker_factory([MemorySink()])
    tracker.start()
    await tracker.aclose()
    tracker.record(records(1)[0])
    assert tracker.stats.spilled == 1
    await eventually(lambda: len(spool.pending()) == 1, "the late record spooled")


async def test_no_sinks_counts_and_discards(tmp_path: Path) -> None:
    """A tracker without sinks needs no spool and accepts records without keeping them."""
    tracker = UsageTracker([], None)
    tracker.start()
    tracker.record(records(1)[0])
    assert (tracker.stats.recorded, tracker.queue_depth) == (1, 0)
    await tracker.aclose()


def test_invalid_construction_is_refused(spool: Spool) -> None:
    """Duplicate sink names, sinks without a spool and bad sizes are ValueErrors."""
    with pytest.raises(ValueError, match="unique"):
        UsageTracker([MemorySink(), MemorySink()], spool)
    with pytest.raises(ValueError, match="spool"):
        UsageTracker([MemorySink()], None)
    with pytest.raises(ValueError, match="batch_size"):
        UsageTracker([MemorySink()], spool, capacity=5, batch_size=10)
