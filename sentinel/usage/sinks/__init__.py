"""Where usage batches go: the ``UsageSink`` protocol and how a delivery fails.

A sink raises on failure and returns only once the whole batch is accepted; the tracker spools
what a sink could not take and replays it later to that same sink. Failures form a small tree::

    DeliveryError        the batch may succeed later: spooled, replayed
    ├── CircuitOpen      not even tried: the sink's circuit breaker is open
    └── PoisonBatch      rejected for good (e.g. a 4xx): set aside in the spool, logged

Implementations: ``jsonl.JsonlSink``, ``webhook.WebhookSink``, ``redis.RedisCounterSink``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sentinel.usage.records import UsageRecord

__all__ = ["CircuitOpen", "DeliveryError", "PoisonBatch", "UsageSink"]


class DeliveryError(Exception):
    """A sink did not take a batch; trying the same batch again later may work."""


class CircuitOpen(DeliveryError):
    """The sink's circuit breaker is open, so the batch was not even attempted."""


class PoisonBatch(DeliveryError):
    """The receiver rejected the batch itself; retrying the same bytes cannot help."""


class UsageSink(Protocol):
    """A destination for usage batches; ``name`` is short, stable and unique per tracker."""

    @property
    def name(self) -> str:
        """Names the sink in logs, metrics and spool file names (``[a-z0-9_-]+``)."""
        ...

    async def deliver(self, batch: Sequence[UsageRecord]) -> None:
        """Deliver every record of ``batch`` or raise (``DeliveryError`` when it is expected)."""
        ...
