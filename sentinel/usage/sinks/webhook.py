"""A sink POSTing batches as JSON to a receiver, with retries, backoff and a circuit breaker.

The body is ``{"batch_id": ..., "records": [...]}`` and the ``Idempotency-Key`` header is the
``batch_id``, which depends only on the batch's record ids: every retry, and every replay from
the spool, of the same batch carries the same key, and each record carries its ``record_id``
for receivers that de-duplicate per record (not ``request_id``: a client may repeat its
``x-request-id``, and each of those requests is billed).

Connection errors, timeouts, 408, 429 and 5xx are retried with exponential backoff and full
jitter; a ``Retry-After`` (seconds or an HTTP date) is waited out when it is within
``backoff_max_ms``, and a longer one opens the breaker for that long instead of stalling the
tracker. Any other status is a ``PoisonBatch``: retrying the same bytes cannot help. The
breaker is ``sentinel.breaker``'s on the sink's own policy (``WEBHOOK_BREAKER`` by default,
``breaker_failures`` and ``breaker_reset_ms`` from the config), timed by a monotonic clock.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

import aiohttp
import orjson

from sentinel.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from sentinel.clock import Clock, MonotonicClock
from sentinel.usage.records import UsageRecord, batch_id
from sentinel.usage.sinks import CircuitOpen, DeliveryError, PoisonBatch

__all__ = ["WEBHOOK_BREAKER", "WebhookSink", "parse_retry_after", "retry_delay"]

_SECONDS = re.compile(r"[0-9]{1,10}")
_SHOWN_BODY_BYTES = 200

WEBHOOK_BREAKER = BreakerPolicy(failures=5, cooldown_ms=30_000)
"""Open after five failed attempts in a row; one probe every 30 s."""


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta seconds or HTTP date); None if bad."""
    if value is None:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def retry_delay(attempt: int, base_s: float, max_s: float, rand: Callable[[], float]) -> float:
    """Full-jitter exponential backoff before retry number ``attempt`` (1 for the first)."""
    return rand() * min(max_s, base_s * 2.0 ** (attempt - 1))


@dataclass(frozen=True, slots=True)
class _Retryable:
    """Why an attempt failed in a way worth retrying, and what the receiver asked for."""

    reason: str
    retry_after_s: float | None = None


class WebhookSink:
    """Delivers batches to ``url`` through the process's one aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_ms: int = 5_000,
        max_attempts: int = 3,
        backoff_ms: int = 200,
        backoff_max_ms: int = 5_000,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        now: Callable[[], float] = time.time,
        clock: Clock | None = None,
        name: str = "webhook",
    ) -> None:
        if max_attempts < 1 or timeout_ms < 1 or backoff_ms < 0 or backoff_max_ms < backoff_ms:
            raise ValueError("invalid webhook retry settings")
        self.url = url
        self._session = session
        self._headers = dict(headers or {})
        self._timeout = aiohttp.ClientTimeout(total=timeout_ms / 1000)
        self._max_attempts = max_attempts
        self._backoff_s = backoff_ms / 1000
        self._backoff_max_s = backoff_max_ms / 1000
        self.breaker = breaker or CircuitBreaker(WEBHOOK_BREAKER)
        self._clock: Clock = clock or MonotonicClock()  # the breaker's: durations, not dates
        self._sleep = sleep
        self._rand = rand
        self._now = now
        self._name = name

    @property
    def name(self) -> str:
        """The sink's name in logs, metrics and the spool."""
        return self._name

    async def deliver(self, batch: Sequence[UsageRecord]) -> None:
        """POST ``batch``, retrying what may pass later; raise once it cannot (yet)."""
        key = batch_id(batch)
        body = orjson.dumps({"batch_id": key, "records": list(batch)})
        headers = {**self._headers, "Content-Type": "application/json", "Idempotency-Key": key}
        failure = _Retryable("not attempted")
        for attempt in range(1, self._max_attempts + 1):
            if not self.breaker.try_acquire(self._clock.now_ms()):
                raise CircuitOpen(f"{self._name}: circuit open (last failure: {failure.reason})")
            outcome = await self._post(body, headers)
            if outcome is None:
                self.breaker.record_success(self._clock.now_ms())
                return
            failure = outcome
            self.breaker.record_failure(self._clock.now_ms())
            if attempt == self._max_attempts or self.breaker.state is BreakerState.OPEN:
                # Giving up: the next try (a replay or the probe) must still honour Retry-After.
                if outcome.retry_after_s:
                    self._hold_open(outcome.retry_after_s)
                break
            wait = self._wait_before_retry(attempt, outcome)
            if wait is None:
                break
            await self._sleep(wait)
        raise DeliveryError(
            f"{self._name}: batch {key} not delivered after {attempt} attempt(s): {failure.reason}"
        )

    def _wait_before_retry(self, attempt: int, outcome: _Retryable) -> float | None:
        """Seconds to sleep before the next attempt; None to give up and let the spool keep it."""
        if outcome.retry_after_s is None:
            return retry_delay(attempt, self._backoff_s, self._backoff_max_s, self._rand)
        if outcome.retry_after_s <= self._backoff_max_s:
            return outcome.retry_after_s
        # Waiting that long here would stall every sink; the open breaker honours it instead.
        self._hold_open(outcome.retry_after_s)
        return None

    def _hold_open(self, seconds: float) -> None:
        """Keep the breaker open for ``seconds`` at least (a long ``Retry-After``)."""
        now = self._clock.now_ms()
        self.breaker.open_until(now + math.ceil(seconds * 1000), now)

    async def _post(self, body: bytes, headers: dict[str, str]) -> _Retryable | None:
        """One attempt: None when accepted, a ``_Retryable`` when worth retrying."""
        try:
            async with self._session.post(
                self.url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as response:
                status = response.status
                if 200 <= status < 300:
                    return None
                retry_after = response.headers.get("Retry-After")
                shown = await response.content.read(_SHOWN_BODY_BYTES)
        except TimeoutError:
            return _Retryable("timeout")
        except aiohttp.ClientError as exc:
            return _Retryable(f"{type(exc).__name__}: {exc}")
        if status in (408, 429) or status >= 500:
            return _Retryable(f"HTTP {status}", parse_retry_after(retry_after, self._now()))
        # The receiver is up and answering: the problem is this batch, not the circuit.
        self.breaker.record_success(self._clock.now_ms())
        text = shown.decode("utf-8", "replace")
        raise PoisonBatch(f"{self._name}: receiver rejected the batch: HTTP {status}: {text!r}")
