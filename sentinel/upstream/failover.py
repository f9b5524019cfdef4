"""One request's attempts over its upstream candidates, before the first byte reaches the client.

An attempt fails over to the next candidate on a connection error, a timeout before the
response headers, the upstream refusing Sentinel's key, a 429 or a 5xx; any other answer
(2xx, other 4xx) is the request's answer. Candidates whose breakers are open are skipped;
each upstream is tried once, except that after a 429 an upstream with a spare key is tried
again with it. Between attempts there is an exponential backoff with jitter, raised to the
upstream's ``retry-after`` when the next attempt goes to the same upstream and it asked for
less than ``max_retry_after_ms``. When every attempt failed, an upstream's 429/5xx answer is
relayed as it is; otherwise the last error (502/504) is raised. Once ``open`` returned, the
response is the caller's: nothing is retried after the relay began.

What the breakers count, so that no tenant can open a breaker every tenant shares:

- no answer (connection error, timeout before the headers, Sentinel's upstream key refused):
  a failure whoever asked, since no request body can cause it;
- a 5xx answer, or a relay cut mid-way: a failure of the caller's ``key``, which counts only
  once two keys failed within the breaker window (a crafted request can provoke a 500);
- a 429: nothing (the provider's rate limit on the shared account, not its health);
- anything else: a success.

A pass-through request's failures count on its model's breaker only, never on the
upstream-wide one: its bodies and endpoints are the tenant's to choose.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp

from sentinel.config import RoutingConfig
from sentinel.errors import SentinelError, ServiceUnavailable
from sentinel.http.context import RequestContext
from sentinel.upstream.board import HealthBoard, UpstreamHealth
from sentinel.upstream.call import UPSTREAM_BUSY, open_upstream, upstream_url
from sentinel.upstream.routing import Candidate

__all__ = ["Failover", "Served", "backoff_ms", "retry_after_ms"]

Body = bytes | AsyncIterator[bytes] | None
_MAX_BENCH_MS = 60_000


def is_retryable(status: int) -> bool:
    """Whether an upstream answer with ``status`` should go to the next candidate."""
    return status == 429 or status >= 500


def backoff_ms(attempt: int, base_ms: int, max_ms: int, rng: random.Random) -> float:
    """The pause before retry number ``attempt`` (1-based): exponential, half of it jittered."""
    ceiling: int = min(max_ms, base_ms << (attempt - 1))
    return ceiling / 2 + rng.random() * ceiling / 2


def retry_after_ms(headers: Mapping[str, str]) -> int | None:
    """The wait an upstream asked for (``retry-after-ms``, else ``retry-after`` seconds)."""
    for name, scale in (("retry-after-ms", 1), ("retry-after", 1000)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            number = float(value)
        except ValueError:
            continue  # an HTTP date: not worth waiting for
        if math.isfinite(number) and number >= 0:
            return int(number * scale)
    return None


@dataclass(slots=True)
class Served:
    """The attempt that answered: its candidate and response, and its outcome still to count."""

    candidate: Candidate
    response: aiohttp.ClientResponse
    health: UpstreamHealth
    board: HealthBoard
    key: str  # the caller's stable id: a source of failures for the breakers
    passthrough: bool  # a pass-through request never counts on the upstream-wide breaker
    counted: bool = False  # a relayed 429/5xx was already counted
    finished: bool = False
    released: bool = False

    def release(self) -> None:
        """Close the response and give its connection slot back to the upstream's pool."""
        self.response.close()
        if not self.released:
            self.released = True
            self.candidate.target.slots.give()

    def finish(self, *, interrupted: bool) -> None:
        """The relay ended: count the outcome on the breakers; the call is no longer in flight;
        the response is released."""
        self.release()
        if self.finished:
            return
        self.finished = True
        self.health.in_flight -= 1
        if not self.counted:
            self.count(interrupted=interrupted)

    def count(self, *, interrupted: bool = False) -> None:
        """Count this answer on the breakers, once (see the module docstring)."""
        self.counted = True
        status = self.response.status
        if status == 429:
            return
        now = self.board.clock.now_ms()
        if interrupted or status >= 500:
            self.health.record_failure(
                self.candidate.model, now, source=self.key, upstream_wide=not self.passthrough
            )
        else:
            self.health.record_success(self.candidate.model, now)


class Failover:
    """Tries a request's candidates in order (see the module docstring)."""

    def __init__(
        self,
        routing: RoutingConfig,
        board: HealthBoard,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.routing = routing
        self.board = board
        self._rng = rng or random.Random()  # jitter, not security
        self._sleep = sleep

    def usable(self, candidates: list[Candidate]) -> list[Candidate]:
        """The candidates whose breakers let calls through; 503 at once when there are none."""
        now = self.board.clock.now_ms()
        found = [c for c in candidates if self.board[c.name].is_available(c.model, now)]
        if found:
            return found
        wait = min(self.board[c.name].retry_in_ms(c.model, now) for c in candidates)
        wait = max(wait, 1)
        raise ServiceUnavailable(
            "Every upstream provider for this request is unavailable; try again later.",
            code="upstreams_unavailable",
            headers={"retry-after": str(math.ceil(wait / 1000)), "retry-after-ms": str(wait)},
            upstreams=[c.name for c in candidates],
        )

    async def open(
        self,
        session: aiohttp.ClientSession,
        ctx: RequestContext,
        candidates: list[Candidate],
        *,
        method: str,
        path: str,
        query: bytes,
        headers: dict[str, str],
        body: Callable[[Candidate], Body],
        replayable: bool,
        key: str,
        passthrough: bool,
    ) -> Served:
        """Call candidates until one answers; ``SentinelError`` when every attempt failed.

        ``key`` is the caller's stable id and ``passthrough`` whether the request came through
        the pass-through endpoint: both decide what a failure counts for on the breakers.
        """
        queue = deque(candidates)
        allowed = self.routing.max_attempts if replayable else 1
        tried = 0
        held: Served | None = None  # the last 429/5xx answer, relayed if nothing better comes
        error: SentinelError | None = None
        wait_asked: int | None = None
        previous: str | None = None
        try:
            while queue and tried < allowed:
                candidate = queue.popleft()
                health = self.board[candidate.name]
                if not health.try_acquire(candidate.model, self.board.clock.now_ms()):
                    continue
                if tried:
                    same = candidate.name == previous
                    await self._pause(tried, wait_asked if same else None)
                tried += 1
                previous = ctx.upstream = candidate.name
                keys = candidate.target.keys
                key_index = keys.pick(self.board.clock.now_ms())
                url = upstream_url(candidate.target, path, query, candidate.model)
                started = time.perf_counter_ns()
                health.in_flight += 1
                try:
                    response = await open_upstream(
                        session, candidate.target, ctx, method, url, dict(headers),
                        body(candidate), key_index,
                    )  # fmt: skip
                except SentinelError as failure:
                    health.in_flight -= 1
                    if failure.code != UPSTREAM_BUSY:  # a full pool is ours, not the upstream's
                        now = self.board.clock.now_ms()
                        health.record_failure(candidate.model, now, upstream_wide=not passthrough)
                    elapsed_ns = time.perf_counter_ns() - started
                    ctx.attempts.append(_attempt(candidate, None, failure.code, elapsed_ns))
                    error, wait_asked = failure, None
                    continue
                except BaseException:
                    health.in_flight -= 1
                    raise
                elapsed_ns = time.perf_counter_ns() - started
                health.observe_latency(elapsed_ns / 1_000_000)
                ctx.attempts.append(_attempt(candidate, response.status, None, elapsed_ns))
                served = Served(candidate, response, health, self.board, key, passthrough)
                if held is not None:
                    held.release()
                    held = None
                if not is_retryable(response.status):
                    return served
                served.count()
                health.in_flight -= 1
                now = self.board.clock.now_ms()
                held, error = served, None
                wait_asked = retry_after_ms(response.headers)
                if response.status == 429 and len(keys) > 1:
                    pause = wait_asked if wait_asked is not None else self.routing.backoff_max_ms
                    keys.bench(key_index, now + min(pause, _MAX_BENCH_MS))
                    if keys.has_spare(key_index, now):
                        queue.appendleft(candidate)  # the same upstream, with another key
        except BaseException:
            if held is not None:  # cancelled while a fallback answer was held: give it back
                held.release()
            raise
        if held is not None:
            held.health.in_flight += 1
            ctx.upstream = held.candidate.name
            return held
        if error is not None:
            raise error
        return self._no_attempt(candidates)

    def _no_attempt(self, candidates: list[Candidate]) -> Served:
        """Every breaker closed its door between ``usable`` and the first attempt."""
        self.usable(candidates)  # raises the 503 when none is usable now
        raise ServiceUnavailable(
            "Every upstream provider for this request is unavailable; try again later.",
            code="upstreams_unavailable",
            headers={"retry-after": "1"},
        )

    async def _pause(self, attempt: int, asked_ms: int | None) -> None:
        routing = self.routing
        delay = backoff_ms(attempt, routing.backoff_ms, routing.backoff_max_ms, self._rng)
        if asked_ms is not None and asked_ms <= routing.max_retry_after_ms:
            delay = max(delay, asked_ms)
        if delay > 0:
            await self._sleep(delay / 1000)


def _attempt(
    candidate: Candidate, status: int | None, code: str | None, elapsed_ns: int
) -> dict[str, object]:
    entry: dict[str, object] = {
        "upstream": candidate.name,
        "status": status,
        "ms": (elapsed_ns + 500) // 1000 / 1000,  # to the microsecond, by integer division
    }
    if code is not None:
        entry["code"] = code
    return entry
