"""Captures and releases of external-ledger holds, batched off the request's path.

A request that held credits at the ledger ends with one ``Settlement``: a capture of its exact
cost, or a release when it charged nothing. Settlements queue here and one owned background
task sends them in batches (``POST {url}/captures`` and ``POST {url}/releases``) once
``capture_batch_max`` are waiting or the oldest has waited ``capture_batch_ms``.

Nothing is dropped on the way: a batch that fails (connection refused, timeout, any status but
200, a reply that is not the protocol's) goes back to the front of the queue and is sent again
after a full-jitter backoff, as often as it takes, each failure logged. That is safe because
the ledger settles each ``hold_id`` at most once: a replay of a batch it already applied
charges nothing twice. What the ledger refuses for good (an unknown or expired hold) is logged
as an error with the hold, the request and the amount. The queue is bounded by
``max_pending``: while it is full the ledger takes no new holds (503), so no settlement is
ever pushed out. At shutdown the queue is tried for ``close_timeout_ms``; anything still
undelivered is logged, and its hold expires at the ledger (``expires_at``): the backstop.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from sentinel.config.budgets import format_usd
from sentinel.usage.sinks.webhook import retry_delay

__all__ = ["BatchFailed", "Settlement", "SettlementBatches"]

log = structlog.get_logger("sentinel.money")

CAPTURES = "captures"
RELEASES = "releases"
_DONE = {CAPTURES: frozenset({"captured"}), RELEASES: frozenset({"released", "unknown", "expired"})}
"""Per-item results that settle an item; any other is the ledger refusing it for good."""
_BACKOFF_BASE_S = 0.1
_BACKOFF_MAX_S = 30.0
_SHOWN_UNDELIVERED = 100


class BatchFailed(Exception):
    """A batch got no usable answer; it is sent again after ``retry_after_s`` (or a backoff)."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Settlement:
    """How one hold ends: captured for ``nano_usd``, or released (``nano_usd`` None)."""

    hold_id: str
    request_id: str
    nano_usd: int | None

    @property
    def kind(self) -> str:
        """Which batch it travels in: ``captures`` or ``releases``."""
        return RELEASES if self.nano_usd is None else CAPTURES

    def wire(self) -> dict[str, str]:
        """The item as the protocol sends it."""
        item = {"hold_id": self.hold_id, "request_id": self.request_id}
        if self.nano_usd is not None:
            item["amount_usd"] = format_usd(self.nano_usd)
        return item


Send = Callable[[str, list[Settlement]], Awaitable[dict[str, str]]]
"""POST one batch (``captures`` or ``releases``); each hold id's result, or ``BatchFailed``."""


class SettlementBatches:
    """The queue of settlements and the task that delivers them (see the module docstring)."""

    def __init__(
        self,
        send: Send,
        *,
        batch_ms: int,
        batch_max: int,
        max_pending: int,
        close_timeout_ms: int,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._send = send
        self._batch_s = batch_ms / 1000
        self._batch_max = batch_max
        self._max_pending = max_pending
        self._close_timeout_s = close_timeout_ms / 1000
        self._rand = rand
        self._pending: deque[Settlement] = deque()
        self._sending = 0  # taken from the queue by a batch in flight
        self._arrived = asyncio.Event()
        self._filled = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches_sent = 0  # POSTs that got their 200
        self.failures = 0  # POSTs that did not

    @property
    def pending(self) -> int:
        """Settlements not yet delivered (queued or in a batch in flight)."""
        return len(self._pending) + self._sending

    @property
    def is_full(self) -> bool:
        """Whether the queue is at ``max_pending``: no new hold may be taken until it drains."""
        return self.pending >= self._max_pending

    def add(self, settlement: Settlement) -> None:
        """Queue one settlement (never blocks, never drops: holds stop first when full)."""
        self._pending.append(settlement)
        self._arrived.set()
        if len(self._pending) >= self._batch_max:
            self._filled.set()

    def start(self) -> None:
        """Begin delivering in the background (an owned task)."""
        self._task = asyncio.create_task(self._run(), name="ledger-settlements")

    async def aclose(self) -> None:
        """Stop the task, then try what is left for ``close_timeout_ms``; log the rest."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        deadline = time.monotonic() + self._close_timeout_s
        attempt = 0
        while self._pending and time.monotonic() < deadline:
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self._send_batch()
                attempt = 0
            except (BatchFailed, TimeoutError):
                attempt += 1
                delay = retry_delay(attempt, _BACKOFF_BASE_S, 1.0, self._rand)
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        if self._pending:
            self._log_undelivered()

    async def _run(self) -> None:
        attempt = 0
        while True:
            await self._arrived.wait()
            if len(self._pending) < self._batch_max:
                try:  # the oldest waits batch_ms at most for others to join it
                    async with asyncio.timeout(self._batch_s):
                        await self._filled.wait()
                except TimeoutError:
                    pass
            try:
                await self._send_batch()
                attempt = 0
            except BatchFailed as failure:
                attempt += 1
                delay = retry_delay(attempt, _BACKOFF_BASE_S, _BACKOFF_MAX_S, self._rand)
                if failure.retry_after_s is not None:
                    delay = max(delay, min(failure.retry_after_s, _BACKOFF_MAX_S))
                await asyncio.sleep(delay)
            except Exception as exc:  # a task's boundary: keep delivering whatever broke
                log.error("ledger_settlements_crashed", exc_info=exc)
                await asyncio.sleep(_BACKOFF_MAX_S)

    async def _send_batch(self) -> None:
        """Send up to ``batch_max`` settlements (captures, then releases); a batch that fails
        goes back to the front of the queue, in order, and raises ``BatchFailed``."""
        taken = [self._pending.popleft() for _ in range(min(self._batch_max, len(self._pending)))]
        if not self._pending:
            self._arrived.clear()
        if len(self._pending) < self._batch_max:
            self._filled.clear()
        self._sending += len(taken)
        unsent = list(taken)
        try:
            for kind in (CAPTURES, RELEASES):
                batch = [s for s in taken if s.kind == kind]
                if batch:
                    results = await self._deliver(kind, batch)
                    unsent = [s for s in unsent if s.kind != kind or s.hold_id not in results]
                    self._settled(kind, batch, results)
        finally:
            self._sending -= len(taken)
            if unsent:  # sent again, first: the ledger settles each hold once
                self._pending.extendleft(reversed(unsent))
                self._arrived.set()
                if len(self._pending) >= self._batch_max:
                    self._filled.set()
        if unsent:
            raise BatchFailed("some holds were not in the ledger's results")

    async def _deliver(self, kind: str, batch: list[Settlement]) -> dict[str, str]:
        try:
            results = await self._send(kind, batch)
        except BatchFailed as failure:
            self.failures += 1
            log.warning("ledger_batch_failed", batch=kind, items=len(batch), reason=failure.reason)
            raise
        self.batches_sent += 1
        return results

    def _settled(self, kind: str, batch: list[Settlement], results: dict[str, str]) -> None:
        """Log what the ledger refused for good (it is not sent again)."""
        done = _DONE[kind]
        for settlement in batch:
            status = results.get(settlement.hold_id)
            if status is None or status in done:
                continue
            log.error(
                "ledger_settlement_refused",
                batch=kind,
                result=status[:40],
                hold_id=settlement.hold_id,
                request_id=settlement.request_id,
                amount_usd=(
                    format_usd(settlement.nano_usd) if settlement.nano_usd is not None else None
                ),
            )

    def _log_undelivered(self) -> None:
        left = list(self._pending)
        for settlement in left[:_SHOWN_UNDELIVERED]:
            log.error(
                "ledger_settlement_undelivered",
                batch=settlement.kind,
                hold_id=settlement.hold_id,
                request_id=settlement.request_id,
                amount_usd=(
                    format_usd(settlement.nano_usd) if settlement.nano_usd is not None else None
                ),
            )
        log.error("ledger_settlements_undelivered", count=len(left))
