"""Breaker state shared across replicas through Redis (with ``[redis]``).

One owned background task per process, every ``_TICK_S``, in one pipelined round trip:

- publishes the breakers that opened here since the last tick, and removes the entries of
  those that closed here (a probe succeeded: the latest evidence wins);
- reads every upstream's entries and keeps the local breakers open until another replica's
  breaker lets its probe through (``CircuitBreaker.open_until``).

Keys, hash-tagged by upstream so that an upstream's keys share one cluster slot::

    sentinel:breaker:{<upstream>}          string  "<reopen wall ms> <replica>"  PX remaining
    sentinel:breaker:{<upstream>}:models   hash    model → "<reopen wall ms> <replica>"

Model breakers share one hash per upstream so that a replica learns of models it has not
called yet; the hash expires one cooldown after its last write and past entries are ignored.
Redis holds wall-clock times (replicas' monotonic clocks share no origin); they are translated
to the board's clock on read and capped at one cooldown from now, so a skewed clock cannot hold
a breaker open for long. A replica ignores its own entries. Every round trip is bounded by
``timeout_ms``; a failure is logged once and the breakers run on local state until Redis
answers again. Nothing on a request's path waits for Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

import redis.exceptions as redis_errors
import structlog
from redis.asyncio import Redis, RedisCluster

from sentinel.breaker import BreakerState, CircuitBreaker
from sentinel.clock import Clock, WallClock
from sentinel.redis_io.client import hash_tag
from sentinel.upstream.board import HealthBoard

__all__ = ["SharedBreakers", "breaker_key"]

log = structlog.get_logger("sentinel.upstream.shared")

_TICK_S = 0.5
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis_errors.RedisError,
    redis_errors.RedisClusterException,  # not a RedisError
    OSError,  # also the builtin TimeoutError raised by asyncio.timeout
)

Ident = tuple[str, str | None]  # (upstream, model), model None for the upstream's own breaker


def breaker_key(upstream: str, prefix: str = "sentinel") -> str:
    """The Redis key of ``upstream``'s breaker; its model breakers' hash adds ``:models``."""
    return f"{prefix}:breaker:{hash_tag(upstream)}"


class SharedBreakers:
    """Mirrors a ``HealthBoard``'s open breakers through Redis (see the module docstring)."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        board: HealthBoard,
        timeout_ms: int,
        *,
        wall: Clock | None = None,
        prefix: str = "sentinel",
        replica: str | None = None,
    ) -> None:
        self._client = client
        self._board = board
        self._timeout_s = timeout_ms / 1000
        self._wall: Clock = wall or WallClock()
        self.replica = replica or secrets.token_hex(6)
        self._keys = {name: breaker_key(name, prefix) for name in board.upstreams}
        # The reopen time (board clock) last published or adopted, per open breaker.
        self._known: dict[Ident, int] = {}
        self.is_available = True
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sentinel-shared-breakers")

    async def aclose(self) -> None:
        """Stop the task and wait for it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception:  # the task's own boundary: a bug must not end the sharing
                log.exception("breaker_sharing_failed")
            await asyncio.sleep(_TICK_S)

    async def sync(self) -> bool:
        """Publish local changes and adopt other replicas' opens; False when Redis failed."""
        changes = self._changes(self._board.clock.now_ms())
        try:
            async with asyncio.timeout(self._timeout_s):
                replies = await self._exchange(changes)
        except _UNAVAILABLE as exc:
            if self.is_available:
                log.warning("breaker_sharing_unavailable", error=type(exc).__name__)
            self.is_available = False
            return False
        if not self.is_available:
            log.info("breaker_sharing_recovered")
        self.is_available = True
        for ident, due in changes:
            if due is None:
                self._known.pop(ident, None)
            else:
                self._known[ident] = due
        self._adopt(replies[len(replies) - 2 * len(self._keys) :])
        return True

    def _changes(self, now: int) -> list[tuple[Ident, int | None]]:
        """Breakers opened here since they were last published (their reopen time), or closed."""
        changes: list[tuple[Ident, int | None]] = []
        seen: set[Ident] = set()
        for name, health in self._board.upstreams.items():
            breakers: list[tuple[str | None, CircuitBreaker]] = [
                (None, health.breaker),
                *health.models.items(),
            ]
            for model, breaker in breakers:
                ident = (name, model)
                seen.add(ident)
                known = self._known.get(ident)
                due = breaker.probe_due_ms
                if breaker.state is BreakerState.OPEN and due != known and due > now:
                    changes.append((ident, due))
                elif breaker.state is BreakerState.CLOSED and known is not None:
                    changes.append((ident, None))
        # A model breaker forgotten by the board was closed (only closed ones are evicted).
        changes += [(ident, None) for ident in self._known if ident not in seen]
        return changes

    async def _exchange(self, changes: list[tuple[Ident, int | None]]) -> list[Any]:
        """Write ``changes`` and read every upstream's entries in one pipelined round trip."""
        now, wall = self._board.clock.now_ms(), self._wall.now_ms()
        async with self._client.pipeline(transaction=False) as pipe:
            # A pipeline only queues each call; execute() sends them all and awaits.
            for (name, model), due in changes:
                key = self._keys[name]
                if due is None:
                    _ = pipe.delete(key) if model is None else pipe.hdel(f"{key}:models", model)
                    continue
                value = f"{due - now + wall} {self.replica}"
                if model is None:
                    _ = pipe.set(key, value, px=max(1, due - now))
                else:
                    cooldown = self._board[name].policy.cooldown_ms
                    _ = pipe.hset(f"{key}:models", model, value)
                    _ = pipe.pexpire(f"{key}:models", cooldown)
            for key in self._keys.values():
                _ = pipe.get(key)
                _ = pipe.hgetall(f"{key}:models")
            replies: list[Any] = await pipe.execute()
        return replies

    def _adopt(self, replies: list[Any]) -> None:
        """Keep local breakers open while another replica's are (replies: GET, HGETALL …)."""
        now, wall = self._board.clock.now_ms(), self._wall.now_ms()
        for i, name in enumerate(self._keys):
            health = self._board[name]
            cooldown = health.policy.cooldown_ms
            until = self._until(replies[2 * i], now, wall, cooldown)
            if until is not None and health.breaker.open_until(until, now):
                self._known[(name, None)] = health.breaker.probe_due_ms
            for model, value in (replies[2 * i + 1] or {}).items():
                until = self._until(value, now, wall, cooldown)
                if until is None:
                    continue
                text = model.decode(errors="replace") if isinstance(model, bytes) else model
                breaker = health.model_breaker(text)
                if breaker.open_until(until, now):
                    self._known[(name, text)] = breaker.probe_due_ms

    def _until(self, value: Any, now: int, wall: int, cooldown: int) -> int | None:
        """Another replica's reopen time on the board's clock; None for ours, past or garbage."""
        if value is None:
            return None
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        reopen, _, replica = text.partition(" ")
        if replica == self.replica or not reopen.isdigit():
            return None
        remaining = min(int(reopen) - wall, cooldown)
        return now + remaining if remaining > 0 else None
