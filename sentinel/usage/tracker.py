"""The usage tracker: a bounded queue drained in batches to every sink by one owned task.

``record()`` is called on the request path and never blocks or awaits. Records wait in a
bounded queue; one background task takes them in batches (``batch_size`` records, or whatever
is there once the oldest has waited ``flush_interval_ms``) and hands each batch to every sink
concurrently. A sink that fails gets the batch in the spool, and the same task replays spooled
batches to the sink that failed every ``replay_interval_ms`` (and at start, so batches spooled
before a restart are delivered after it); a spooled batch is removed only once its sink took it.

When the queue is full a record is *spilled*: written to the spool for every sink by a worker
thread, counted in ``stats.spilled``, and delivered by replay later. Only if that spill buffer
is itself full (``capacity`` records waiting for the disk) or the disk fails is a record
dropped, counted in ``stats.dropped`` and logged. ``aclose()`` drains the queue through the
sinks within ``close_timeout_ms``; whatever could not be delivered by then is spooled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from sentinel.usage.records import UsageRecord, batch_id
from sentinel.usage.sinks import PoisonBatch, UsageSink
from sentinel.usage.spool import Spool, SpoolEntry, SpoolError

__all__ = ["TrackerStats", "UsageTracker"]

log = structlog.get_logger("sentinel.usage")

_REPLAY_BATCHES_PER_ROUND = 16  # then flush the queue again before replaying more


@dataclass(slots=True)
class TrackerStats:
    """Monotonic counters for metrics; every field only ever grows."""

    recorded: int = 0  # records handed to record()
    batches_flushed: int = 0  # batches taken from the queue and handed to the sinks
    records_flushed: int = 0
    flush_seconds_last: float = 0.0  # wall time of the latest flush (slowest sink)
    flush_seconds_total: float = 0.0
    spilled: int = 0  # records that found the queue full (or the tracker closed): spooled
    dropped: int = 0  # records lost: spill buffer full or the spool not writable
    delivery_failures: int = 0  # batches a sink did not take, live or on replay
    spooled: int = 0  # (sink, batch) pairs written to the spool after a failed delivery
    poisoned: int = 0  # batches a sink rejected for good, set aside in the spool
    replayed: int = 0  # spooled batches a sink accepted on replay


class UsageTracker:
    """Batches usage records to sinks; see the module docstring for the guarantees."""

    def __init__(
        self,
        sinks: Sequence[UsageSink],
        spool: Spool | None,
        *,
        capacity: int = 10_000,
        batch_size: int = 100,
        flush_interval_ms: int = 1_000,
        replay_interval_ms: int = 5_000,
        close_timeout_ms: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        names = [sink.name for sink in sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must be unique, got {names}")
        if sinks and spool is None:
            raise ValueError("a tracker with sinks needs a spool")
        if capacity < 1 or not 1 <= batch_size <= capacity:
            raise ValueError("need capacity >= 1 and 1 <= batch_size <= capacity")
        self._sinks = tuple(sinks)
        self._by_name = {sink.name: sink for sink in sinks}
        self._spool_or_none = spool
        self._capacity = capacity
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_ms / 1000
        self._replay_interval_s = replay_interval_ms / 1000
        self._close_timeout_s = close_timeout_ms / 1000
        self._clock = clock
        self._pending: deque[UsageRecord] = deque()
        self._oldest_at = 0.0  # when the queue last went from empty to non-empty
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._overflow: list[UsageRecord] = []
        self._spill_write: asyncio.Future[None] | None = None
        self._unsettled: dict[str, Sequence[UsageRecord]] = {}  # sink → batch it has not taken
        self._orphans_logged = False
        self.stats = TrackerStats()

    @property
    def capacity(self) -> int:
        """Records the queue holds before they spill to the spool."""
        return self._capacity

    @property
    def queue_depth(self) -> int:
        """Records waiting in the queue now."""
        return len(self._pending)

    @property
    def sinks(self) -> tuple[UsageSink, ...]:
        """The configured sinks, in order."""
        return self._sinks

    @property
    def _spool(self) -> Spool:
        if self._spool_or_none is None:  # unreachable: __init__ requires one with sinks
            raise RuntimeError("usage tracker has no spool")
        return self._spool_or_none

    def start(self) -> None:
        """Start the background task (in the running loop); call once, from the lifespan."""
        if self._task is not None or self._closing:
            raise RuntimeError("usage tracker already started or closed")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-tracker")

    @property
    def keeps_records(self) -> bool:
        """Whether any sink takes records; with none, ``record`` only counts them."""
        return bool(self._sinks)

    def count_unkept(self) -> None:
        """Count a request whose record was not built, since no sink would keep it."""
        self.stats.recorded += 1

    def record(self, record: UsageRecord) -> None:
        """Queue one request's record; never blocks. A full queue spills it to the spool."""
        self.stats.recorded += 1
        if not self._sinks:
            return
        depth = len(self._pending)
        if depth >= self._capacity or self._closed:
            self._spill(record)
            return
        if depth == 0:
            self._oldest_at = self._clock()
        self._pending.append(record)
        if depth == 0 or depth + 1 >= self._batch_size:
            self._wake.set()

    async def aclose(self) -> None:
        """Drain the queue through the sinks (bounded by ``close_timeout_ms``), then stop.

        What could not be delivered in time is spooled, to be replayed after the next start.
        """
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        task = self._task
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=self._close_timeout_s)
            if not done:
                log.warning("usage_close_timed_out", queued=len(self._pending))
                task.cancel()
                await asyncio.wait({task})
            elif not task.cancelled() and task.exception() is not None:
                log.error("usage_tracker_crashed", exc_info=task.exception())
        self._closed = True
        await self._spool_leftovers()

    # --- the background task ------------------------------------------------------------------

    async def _run(self) -> None:
        replay_at = self._clock()  # replay what an earlier process left first
        while True:
            try:
                if not self._closing and self._clock() >= replay_at:
                    more = await self._replay()
                    replay_at = self._clock() + (0.0 if more else self._replay_interval_s)
                batch = await self._next_batch(replay_at)
                if batch:
                    await self._flush(batch)
                elif self._closing:
                    return
            except Exception:  # the task's outermost boundary: log, pause, carry on
                log.exception("usage_tracker_error")
                if self._closing:
                    return  # aclose() spools whatever is left
                await self._wait(self._replay_interval_s)

    async def _next_batch(self, replay_at: float) -> list[UsageRecord]:
        """Wait for records, then up to a full batch or until the oldest is old enough."""
        if not self._pending and not self._closing:
            await self._wait(replay_at - self._clock())
        if not self._pending:
            return []
        deadline = self._oldest_at + self._flush_interval_s
        while len(self._pending) < self._batch_size and not self._closing:
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            await self._wait(remaining)
        count = min(self._batch_size, len(self._pending))
        return [self._pending.popleft() for _ in range(count)]

    async def _wait(self, timeout_s: float) -> None:
        """Sleep until ``record()`` or ``aclose()`` wakes the task, at most ``timeout_s``."""
        self._wake.clear()
        if timeout_s <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._wake.wait()

    async def _flush(self, batch: list[UsageRecord]) -> None:
        started = self._clock()
        self._unsettled = {sink.name: batch for sink in self._sinks}
        await asyncio.gather(*(self._deliver(sink, batch) for sink in self._sinks))
        elapsed = self._clock() - started
        self.stats.batches_flushed += 1
        self.stats.records_flushed += len(batch)
        self.stats.flush_seconds_last = elapsed
        self.stats.flush_seconds_total += elapsed

    async def _deliver(self, sink: UsageSink, batch: Sequence[UsageRecord]) -> None:
        try:
            await sink.deliver(batch)
        except Exception as exc:  # any sink failure, bugs included, must spool, not lose
            await self._keep(sink, batch, exc)
        self._unsettled.pop(sink.name, None)

    async def _keep(self, sink: UsageSink, batch: Sequence[UsageRecord], exc: Exception) -> None:
        """Spool a batch ``sink`` did not take; a poison one is set aside and logged."""
        poison = isinstance(exc, PoisonBatch)
        self._count_failure(sink, batch_id(batch), len(batch), exc)
        try:
            await asyncio.to_thread(self._spool.append, sink.name, batch, poison=poison)
        except OSError as error:
            self.stats.dropped += len(batch)
            log.error(
                "usage_spool_write_failed", sink=sink.name, records=len(batch), error=str(error)
            )
            return
        self.stats.spooled += 1

    def _count_failure(self, sink: UsageSink, bid: str, size: int, exc: Exception) -> None:
        self.stats.delivery_failures += 1
        fields = {"sink": sink.name, "batch_id": bid, "records": size, "error": str(exc)}
        if isinstance(exc, PoisonBatch):
            self.stats.poisoned += 1
            log.error("usage_batch_poisoned", **fields)
        else:
            log.warning("usage_delivery_failed", error_type=type(exc).__name__, **fields)

    # --- replay -------------------------------------------------------------------------------

    async def _replay(self) -> bool:
        """Replay spooled batches to their sinks; True when more are waiting right now."""
        if self._spool_or_none is None:
            return False  # no sinks, so nothing was ever spooled
        try:
            entries = await asyncio.to_thread(self._spool.pending)
        except OSError as exc:
            log.error("usage_spool_unreadable", error=str(exc))
            return False
        self._log_orphans(entries)
        failed: set[str] = set()  # a sink that failed once this round is not tried again
        attempted = 0
        for entry in entries:
            sink = self._by_name.get(entry.sink)
            if sink is None or entry.sink in failed:
                continue
            if attempted == _REPLAY_BATCHES_PER_ROUND:
                return True
            attempted += 1
            if not await self._replay_entry(sink, entry):
                failed.add(entry.sink)
        return False

    async def _replay_entry(self, sink: UsageSink, entry: SpoolEntry) -> bool:
        """Deliver one spooled batch; False when the sink failed (the batch stays spooled)."""
        spool = self._spool
        try:
            batch = await asyncio.to_thread(spool.load, entry)
        except FileNotFoundError:
            return True  # another worker sharing the spool replayed it
        except (SpoolError, OSError) as exc:
            log.error("usage_spool_file_invalid", file=entry.path.name, error=str(exc))
            await asyncio.to_thread(spool.set_aside, entry)
            return True
        try:
            await sink.deliver(batch)
        except Exception as exc:  # as in _deliver: the batch simply stays in the spool
            self._count_failure(sink, entry.batch_id, len(batch), exc)
            if isinstance(exc, PoisonBatch):
                await asyncio.to_thread(spool.set_aside, entry)
                return True
            return False
        await asyncio.to_thread(spool.remove, entry)
        self.stats.replayed += 1
        return True

    def _log_orphans(self, entries: list[SpoolEntry]) -> None:
        if self._orphans_logged:
            return
        orphans = sorted({e.sink for e in entries if e.sink not in self._by_name})
        if orphans:
            self._orphans_logged = True
            log.warning(
                "usage_spool_unknown_sinks", sinks=orphans, directory=str(self._spool.directory)
            )

    # --- spilling and shutdown ----------------------------------------------------------------

    def _spill(self, record: UsageRecord) -> None:
        self.stats.spilled += 1
        if len(self._overflow) >= self._capacity:
            self.stats.dropped += 1
            if self.stats.dropped % 1000 == 1:  # one line per thousand: the disk is stuck
                log.error(
                    "usage_record_dropped",
                    record_id=record.record_id,
                    request_id=record.request_id,
                    reason="spill_full",
                    dropped_total=self.stats.dropped,
                )
            return
        self._overflow.append(record)
        if self._spill_write is None:
            self._start_spill_write()

    def _start_spill_write(self) -> None:
        records, self._overflow = self._overflow, []
        loop = asyncio.get_running_loop()
        write = loop.run_in_executor(None, self._spool_for_every_sink, records)
        write.add_done_callback(functools.partial(self._spill_written, records))
        self._spill_write = write

    def _spool_for_every_sink(self, records: list[UsageRecord]) -> None:
        for start in range(0, len(records), self._batch_size):
            chunk = records[start : start + self._batch_size]
            for sink in self._sinks:
                self._spool.append(sink.name, chunk)

    def _spill_written(self, records: list[UsageRecord], write: asyncio.Future[None]) -> None:
        self._spill_write = None
        error = None if write.cancelled() else write.exception()
        if write.cancelled() or error is not None:
            self.stats.dropped += len(records)
            log.error("usage_spill_failed", records=len(records), error=repr(error))
        if self._overflow:
            self._start_spill_write()

    async def _spool_leftovers(self) -> None:
        """Spool what the task did not deliver: unsettled batches and the queue's records."""
        unsettled, self._unsettled = self._unsettled, {}
        for name, batch in unsettled.items():
            try:
                await asyncio.to_thread(self._spool.append, name, batch)
                self.stats.spooled += 1
            except OSError as exc:
                self.stats.dropped += len(batch)
                log.error("usage_spool_write_failed", sink=name, records=len(batch), error=str(exc))
        queued = list(self._pending)
        self._pending.clear()
        if queued:
            log.info("usage_spooled_at_close", records=len(queued))
            self._overflow.extend(queued)
            if self._spill_write is None:
                self._start_spill_write()
        while self._spill_write is not None:
            await asyncio.wait({self._spill_write})
