"""Budget alerts: one event per budget, window and threshold, however many replicas see it.

After every settlement that charged money, the gate hands over what each budget has charged so
far in its current window (``Spending``). Each threshold of ``[budgets] alert_thresholds``
(fractions of the budget; default 0.5, 0.8, 1.0) that the window has reached becomes an alert
whose id is a hash of (owner, window, period, threshold): deterministic, so every replica
that sees the crossing computes the same id. The first to *claim* it (a Redis ``SET NX``, or
an ``INSERT OR IGNORE`` into the state file without Redis) logs ``budget_alert`` and, with
``[budgets.webhook]``, POSTs it with ``Idempotency-Key: <id>``, retrying connection errors,
timeouts, 408, 429 and 5xx with full-jitter backoff like the usage webhook. A replica that
dies between claiming and delivering loses that one alert (at most once, never twice).

Claims and posts run in one owned background task fed by a bounded queue; a full queue drops
the alert (counted, and retried by the next charge that still crosses it).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass
from operator import ge
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson
import structlog
from redis.asyncio import Redis, RedisCluster

from sentinel.config.budgets import format_usd
from sentinel.config.spending import BASIS
from sentinel.config.usage import WebhookSettings
from sentinel.limits.decision import Reservation
from sentinel.limits.spec import TEAM_MONEY, Dimension
from sentinel.limits.spending import Spending
from sentinel.statefile import open_state_db
from sentinel.usage.sinks.webhook import parse_retry_after, retry_delay

__all__ = ["AlertClaims", "BudgetAlert", "BudgetAlerts", "RedisClaims", "SqliteClaims"]

log = structlog.get_logger("sentinel.money")

CLAIM_TTL_MS = 400 * 86_400_000
"""How long a claimed alert id is remembered: past any window, ``usd_total`` included."""
_QUEUE = 1_000
_SEEN = 100_000
_KNOWN_FLOORS = 1_024
_NEVER = 2**63  # above any nano-USD a counter holds (below 2**53)


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """One threshold reached by one budget window."""

    id: str
    owner: str  # the key id, or ``team:<name>``
    dimension: Dimension
    period: str  # the counter: ``usd_day:2026-12-07``, ``usd_total``
    threshold: int  # basis points
    limit: int  # nano-USD
    spent: int  # nano-USD charged in the window when it was seen

    def payload(self, now_s: int) -> dict[str, Any]:
        """The webhook body and the log event's fields."""
        team = self.owner.removeprefix("team:") if self.owner.startswith("team:") else None
        return {
            "object": "budget_alert",
            "id": self.id,
            "key_id": None if team else self.owner,
            "team": team,
            "budget": str(self.dimension).removeprefix("team_"),
            "period": self.period.partition(":")[2] or None,
            "threshold": str(self.threshold / BASIS),
            "limit_usd": format_usd(self.limit),
            "spent_usd": format_usd(self.spent),
            "created_at": now_s,
        }


class AlertClaims(Protocol):
    """Who sends an alert: the first replica to claim its id."""

    async def claim(self, alert_id: str) -> bool:
        """True exactly once per id, across every replica."""
        ...


class RedisClaims:
    """Claims as ``SET <prefix>:alert:<id> NX PX <400 days>``."""

    def __init__(self, client: Redis | RedisCluster, prefix: str = "sentinel") -> None:
        self._client = client
        self._prefix = prefix

    async def claim(self, alert_id: str) -> bool:
        """Whether this call set the id first."""
        key = f"{self._prefix}:alert:{alert_id}"
        return bool(await self._client.set(key, b"1", nx=True, px=CLAIM_TTL_MS))


class SqliteClaims:
    """Claims as rows of the state file's ``budget_alerts`` table."""

    def __init__(self, state_dir: Path) -> None:
        self._state_dir = state_dir
        self._db: sqlite3.Connection | None = None  # opened by the first alert

    async def claim(self, alert_id: str) -> bool:
        """Whether this call inserted the id first."""
        try:
            if self._db is None:
                self._db = open_state_db(self._state_dir)
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS budget_alerts (id TEXT PRIMARY KEY, at_ms INTEGER)"
                )
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO budget_alerts (id, at_ms) VALUES (?, ?)",
                (alert_id, int(time.time() * 1000)),
            )
        except sqlite3.Error as exc:
            log.error("budget_alert_claim_failed", exc_info=exc)
            return False
        return cursor.rowcount == 1

    def close(self) -> None:
        """Close the state file's connection, if the alerts opened it."""
        if self._db is not None:
            self._db.close()


class BudgetAlerts:
    """Turns settled spending into alerts, claims them and delivers them (see module doc)."""

    def __init__(
        self,
        thresholds: tuple[int, ...],
        claims: AlertClaims,
        *,
        session: aiohttp.ClientSession | None = None,
        webhook: WebhookSettings | None = None,
    ) -> None:
        self._thresholds = thresholds
        self._lowest = thresholds[0] if thresholds else BASIS + 1
        self._claims = claims
        self._session = session
        self._webhook = webhook if session is not None else None
        self._queue: asyncio.Queue[BudgetAlert] = asyncio.Queue(_QUEUE)
        self._seen: OrderedDict[str, None] = OrderedDict()  # ids this process has handled
        self._known_floors: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.sent = 0

    def observe(self, reservation: Reservation, spent: Spending) -> None:
        """Queue every alert ``spent`` reaches that this process has not handled yet."""
        limits = spent.limits
        known = self._known_floors.get(id(limits))  # the usual case, without a call
        floors = known[1] if known is not None and known[0] is limits else self._floors(limits)
        if not any(map(ge, spent.values, floors)):  # as long as each other: Spending checks
            return  # below every lowest threshold: what nearly every settlement is
        lowest = self._lowest
        for dimension, period, value, limit in spent:
            if value * BASIS < limit * lowest or not limit:
                continue
            owner = f"team:{reservation.team}" if dimension in TEAM_MONEY else reservation.key_name
            for threshold in self._thresholds:
                if value * BASIS < limit * threshold:
                    break  # thresholds are sorted: the higher ones are not reached either
                alert_id = _alert_id(owner, period, threshold)
                if alert_id in self._seen:
                    continue
                alert = BudgetAlert(alert_id, owner, dimension, period, threshold, limit, value)
                try:
                    self._queue.put_nowait(alert)
                except asyncio.QueueFull:
                    self.dropped += 1
                    continue
                self._remember(alert_id)

    def start(self) -> None:
        """Start the task that claims and delivers alerts."""
        self._task = asyncio.create_task(self._run(), name="budget-alerts")

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (within ``timeout_s``), then stop."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except TimeoutError:
            pass
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        if isinstance(self._claims, SqliteClaims):
            self._claims.close()

    def _floors(self, limits: tuple[int, ...]) -> tuple[int, ...]:
        """The least nano-USD charged that reaches the lowest threshold of each of ``limits``
        (a reservation's tuple, shared by every reservation alike: kept by its identity); a
        limit of 0 (credits) never alerts."""
        known = self._known_floors.get(id(limits))
        if known is not None and known[0] is limits:
            return known[1]
        lowest = self._lowest
        floors = tuple(-(-limit * lowest // BASIS) if limit else _NEVER for limit in limits)
        if len(self._known_floors) >= _KNOWN_FLOORS:
            self._known_floors.clear()
        self._known_floors[id(limits)] = (limits, floors)  # holds limits: its id stays its own
        return floors

    def _remember(self, alert_id: str) -> None:
        self._seen[alert_id] = None
        if len(self._seen) > _SEEN:
            self._seen.popitem(last=False)

    async def _run(self) -> None:
        while True:
            alert = await self._queue.get()
            try:
                await self._handle(alert)
            except Exception as exc:  # one alert's trouble must not stop the others
                log.error("budget_alert_failed", alert_id=alert.id, exc_info=exc)
            finally:
                self._queue.task_done()

    async def _handle(self, alert: BudgetAlert) -> None:
        try:
            claimed = await self._claims.claim(alert.id)
        except Exception as exc:  # unsure: forget it here, so that a later charge asks again
            self._seen.pop(alert.id, None)
            log.warning("budget_alert_claim_failed", alert_id=alert.id, error=str(exc))
            return
        if not claimed:
            return
        payload = alert.payload(int(time.time()))
        log.warning("budget_alert", **payload)
        self.sent += 1
        if self._webhook is not None and self._session is not None:
            await _post(self._session, self._webhook, alert.id, orjson.dumps(payload))


def _alert_id(owner: str, period: str, threshold: int) -> str:
    digest = hashlib.sha256(f"{owner}\n{period}\n{threshold}".encode()).hexdigest()
    return f"alert_{digest[:32]}"


async def _post(
    session: aiohttp.ClientSession, hook: WebhookSettings, alert_id: str, body: bytes
) -> None:
    """POST one alert, retried like the usage webhook; logged when it cannot be delivered."""
    headers = {
        **dict(hook.headers),
        "Content-Type": "application/json",
        "Idempotency-Key": alert_id,
    }
    timeout = aiohttp.ClientTimeout(total=hook.timeout_ms / 1000)
    reason = "not attempted"
    for attempt in range(1, hook.max_attempts + 1):
        retry_after: float | None = None
        try:
            async with session.post(
                hook.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                if 200 <= response.status < 300:
                    return
                reason = f"HTTP {response.status}"
                if response.status not in (408, 429) and response.status < 500:
                    break  # the receiver refuses this alert: retrying cannot help
                retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
        except TimeoutError:
            reason = "timeout"
        except aiohttp.ClientError as exc:
            reason = type(exc).__name__
        if attempt < hook.max_attempts:
            wait = retry_delay(
                attempt, hook.backoff_ms / 1000, hook.backoff_max_ms / 1000, random.random
            )
            if retry_after is not None:
                wait = min(retry_after, hook.backoff_max_ms / 1000)
            await asyncio.sleep(wait)
    log.error("budget_alert_not_delivered", alert_id=alert_id, reason=reason)
