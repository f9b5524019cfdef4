"""Prepaid credits in an external ledger (``[credits] url``): hold, then capture or release.

The protocol (README, "External ledger"); every body is JSON, every amount an exact decimal
string of USD with at most 9 decimals, and every call carries ``Authorization: Bearer
<token>``::

    POST {url}/holds      {"account", "amount_usd", "hold_id", "expires_at"}
         201 | 200        {"hold_id", "balance_usd"}     held (200: this hold_id again)
         402              {"error": ..., "balance_usd"?}  the balance cannot cover it
    POST {url}/captures   {"captures": [{"hold_id", "amount_usd", "request_id"}, ...]}
    POST {url}/releases   {"releases": [{"hold_id", "request_id"}, ...]}
         200              {"results": [{"hold_id", "status"}, ...]}
    GET  {url}/accounts/{account}
         200              {"balance_usd", "held_usd"?}   (only for GET /v1/key)

``hold_id`` is the idempotency key: the reservation id of the request's admission, so a hold,
a capture or a release sent twice is applied once. A hold is on the request's path and bounded
by ``timeout_ms`` (``sentinel.deadline``), a limit on holds in flight (``max_holds``) and a
circuit breaker (``sentinel.breaker``); a timeout, a refused connection, any other status, a
reply that is not the protocol's, an open breaker or a full settlement queue is 503
``credits_unavailable``, never an admission. A hold whose answer was lost is released at once
(the release of a hold the ledger never made is harmless). Captures and releases travel in
batches off the request's path (``sentinel.money.ledger_batches``).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import orjson
import structlog

from sentinel.breaker import BreakerPolicy, CircuitBreaker
from sentinel.clock import Clock, MonotonicClock
from sentinel.config.budgets import format_usd, parse_usd
from sentinel.config.credits import CreditsConfig
from sentinel.deadline import Deadline
from sentinel.errors import PaymentRequired, PermissionDenied, ServiceUnavailable
from sentinel.money.ledger_batches import BatchFailed, Settlement, SettlementBatches
from sentinel.upstream.client import read_capped
from sentinel.usage.sinks.webhook import parse_retry_after

if TYPE_CHECKING:
    from sentinel.auth.keys import Principal

__all__ = [
    "CreditsRefused",
    "CreditsUnavailable",
    "ExternalLedger",
    "Held",
    "HoldAnswer",
    "LedgerHold",
    "Refused",
    "Unanswered",
    "balance_headers",
    "read_batch_answer",
    "read_hold_answer",
]

log = structlog.get_logger("sentinel.money")

MAX_ANSWER_BYTES = 1024 * 1024
"""A batch's results are small; a longer answer is a broken ledger."""
_BATCH_TIMEOUT_S = 10.0
"""One batch's deadline: it is on no request's path, and is sent again if it runs out."""
_REMAINING = b"x-sentinel-budget-remaining-usd"
_RESET = b"x-sentinel-budget-reset"


class CreditsUnavailable(ServiceUnavailable):
    """The ledger cannot be asked right now: the request is refused, never admitted."""

    default_code = "credits_unavailable"
    default_message = "Credits cannot be checked right now. Please try again shortly."


@dataclass(frozen=True, slots=True)
class LedgerHold:
    """A hold the ledger granted: settled once, by a capture or a release."""

    hold_id: str
    account: str
    nano_usd: int
    balance: int  # nano-USD left on the account after this hold, as the ledger said


@dataclass(frozen=True, slots=True)
class Held:
    """The ledger held the amount; ``balance`` (nano-USD) is what is left after it."""

    balance: int


@dataclass(frozen=True, slots=True)
class Refused:
    """402: the balance cannot cover the hold; ``balance`` is what is left, if it said."""

    balance: int | None


@dataclass(frozen=True, slots=True)
class Unanswered:
    """No answer the protocol knows: ``reason`` for the log."""

    reason: str
    maybe_held: bool = True  # False: the hold never reached the ledger (no connection)


HoldAnswer = Held | Refused | Unanswered
_NO_SLOT = Unanswered("no hold slot free in time", maybe_held=False)


def read_hold_answer(status: int, body: bytes, hold_id: str) -> HoldAnswer:
    """What the ledger's answer to a hold means (pure: the protocol in one place)."""
    if status not in (200, 201, 402):
        return Unanswered(f"HTTP {status}")
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if status == 402:
        balance = _amount(data.get("balance_usd")) if isinstance(data, dict) else None
        return Refused(balance)
    if not isinstance(data, dict) or data.get("hold_id") != hold_id:
        return Unanswered("answer is not a hold of this hold_id")
    balance = _amount(data.get("balance_usd"))
    if balance is None:
        return Unanswered("answer has no balance_usd")
    return Held(balance)


def read_batch_answer(body: bytes, sent: list[Settlement]) -> dict[str, str]:
    """Each sent hold id's result from a batch's 200; ``BatchFailed`` when it is not the
    protocol's. Results for holds not sent are ignored."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BatchFailed("answer is not JSON") from None
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list):
        raise BatchFailed("answer has no results list")
    ids = {s.hold_id for s in sent}
    found: dict[str, str] = {}
    for item in results:
        if not isinstance(item, dict):
            continue
        hold_id, status = item.get("hold_id"), item.get("status")
        if isinstance(hold_id, str) and hold_id in ids and isinstance(status, str):
            found[hold_id] = status
    return found


def _amount(value: object) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_usd(value)
    except ValueError:
        return None


def balance_headers(pairs: list[tuple[bytes, bytes]], balance: int) -> list[tuple[bytes, bytes]]:
    """``pairs`` with ``x-sentinel-budget-remaining-usd`` at most ``balance`` (credits never
    renew: the reset becomes ``never`` when the ledger's balance is the tightest)."""
    current = next((v for k, v in pairs if k == _REMAINING), None)
    shown = _amount(current.decode("latin-1")) if current is not None else None
    if shown is not None and shown <= balance:
        return pairs
    kept = [(k, v) for k, v in pairs if k not in (_REMAINING, _RESET)]
    kept += [(_REMAINING, format_usd(balance).encode("ascii")), (_RESET, b"never")]
    return kept


class ExternalLedger:
    """Holds at the ledger on the request's path; settlements batched behind it."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: CreditsConfig,
        *,
        clock: Clock | None = None,
    ) -> None:
        self._session = session
        self.settings = settings
        self._clock: Clock = clock or MonotonicClock()
        self._timeout_s = settings.timeout_ms / 1000
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Accept-Encoding": "identity",  # the session does not decompress
        }
        if settings.token:
            self._headers["Authorization"] = f"Bearer {settings.token}"
        self.breaker = CircuitBreaker(
            BreakerPolicy(
                failures=settings.breaker_failures, cooldown_ms=settings.breaker_cooldown_ms
            )
        )
        self._slots = asyncio.Semaphore(settings.max_holds)
        self.held = 0  # holds the ledger granted
        self.refused = 0  # holds it refused (402)
        self.unavailable = 0  # holds refused with 503: it could not be asked or did not answer
        self.batches = SettlementBatches(
            self._send_batch,
            batch_ms=settings.capture_batch_ms,
            batch_max=settings.capture_batch_max,
            max_pending=settings.max_pending,
            close_timeout_ms=settings.close_timeout_ms,
        )

    def start(self) -> None:
        """Begin delivering settlements."""
        self.batches.start()

    async def aclose(self) -> None:
        """Deliver what is queued (for ``close_timeout_ms``), before the session closes."""
        await self.batches.aclose()

    def account_of(self, principal: Principal) -> str:
        """Whose balance ``principal``'s requests hold against; 403 ``credits_account_missing``
        for a key without a team when accounts are teams'."""
        if self.settings.account == "key":
            return principal.id
        if principal.team is None:
            raise PermissionDenied(
                "Credits on this gateway are held per team, and this key belongs to no team. "
                "Ask an administrator to give it one.",
                code="credits_account_missing",
            )
        return "team:" + principal.team

    async def hold(self, account: str, nano_usd: int, hold_id: str, request_id: str) -> LedgerHold:
        """Hold ``nano_usd`` on ``account``; 402 ``insufficient_credits`` when the ledger says
        the balance cannot cover it, 503 ``credits_unavailable`` when it cannot be asked."""
        if self.batches.is_full:
            raise self._unavailable(1_000, hold_id, "settlement queue full")
        now = self._clock.now_ms()
        if not self.breaker.try_acquire(now):
            raise self._unavailable(self.breaker.retry_in_ms(now), hold_id, "breaker open")
        answer = await self._ask_hold(account, nano_usd, hold_id, request_id)
        now = self._clock.now_ms()
        if isinstance(answer, Unanswered):
            if answer is not _NO_SLOT:  # Sentinel's own congestion says nothing of the ledger
                self.breaker.record_failure(now)
            if answer.maybe_held:  # give back what it may have held (harmless if it did not)
                self.batches.add(Settlement(hold_id, request_id, None))
            raise self._unavailable(self.breaker.retry_in_ms(now), hold_id, answer.reason)
        self.breaker.record_success(now)
        if isinstance(answer, Refused):
            self.refused += 1
            raise CreditsRefused(nano_usd, answer.balance)
        self.held += 1
        return LedgerHold(hold_id, account, nano_usd, answer.balance)

    def settle(self, hold: LedgerHold, nano_usd: int, request_id: str) -> None:
        """Capture the request's cost (nano-USD, as its record's ``cost_usd`` rounded up),
        or release the hold when it cost nothing; queued, never blocking."""
        self.batches.add(Settlement(hold.hold_id, request_id, nano_usd or None))

    async def balance(self, account: str) -> dict[str, Any] | None:
        """The account as ``GET {url}/accounts/{account}`` shows it; None when it cannot say."""
        url = f"{self.settings.url}/accounts/{quote(account, safe='')}"
        try:
            with Deadline(asyncio.get_running_loop().time() + self._timeout_s):
                async with self._session.get(
                    url, headers=self._headers, allow_redirects=False
                ) as response:
                    body = await _read(response)
                    status = response.status
        except (TimeoutError, aiohttp.ClientError) as error:
            log.warning("ledger_balance_unavailable", reason=type(error).__name__)
            return None
        data = _json(body) if status == 200 else None
        balance = _amount(data.get("balance_usd")) if isinstance(data, dict) else None
        if data is None or balance is None:
            log.warning("ledger_balance_unavailable", reason=f"HTTP {status}")
            return None
        held = _amount(data.get("held_usd"))
        return {
            "balance_usd": format_usd(balance),
            "held_usd": None if held is None else format_usd(held),
        }

    async def _ask_hold(
        self, account: str, nano_usd: int, hold_id: str, request_id: str
    ) -> HoldAnswer:
        """POST the hold within ``timeout_ms``, waiting for a slot included."""
        body = orjson.dumps(
            {
                "account": account,
                "amount_usd": format_usd(nano_usd),
                "hold_id": hold_id,
                "expires_at": int(time.time()) + self.settings.hold_ttl_s,
            }
        )
        slot = False
        try:
            with Deadline(asyncio.get_running_loop().time() + self._timeout_s):
                await self._slots.acquire()
                slot = True
                async with self._session.post(
                    f"{self.settings.url}/holds",
                    data=body,
                    headers=self._headers,
                    allow_redirects=False,
                ) as response:
                    data = await _read(response)
                    status = response.status
        except TimeoutError:
            return Unanswered("timeout") if slot else _NO_SLOT
        except aiohttp.ClientConnectorError as error:
            return Unanswered(type(error).__name__, maybe_held=False)
        except aiohttp.ClientError as error:
            return Unanswered(type(error).__name__)
        except BaseException:
            if slot:  # the client left while the hold was in flight: it may stand there
                self.batches.add(Settlement(hold_id, request_id, None))
            raise
        finally:
            if slot:
                self._slots.release()
        if data is None:
            return Unanswered("answer too long or encoded")
        return read_hold_answer(status, data, hold_id)

    async def _send_batch(self, kind: str, batch: list[Settlement]) -> dict[str, str]:
        body = orjson.dumps({kind: [s.wire() for s in batch]})
        try:
            async with asyncio.timeout(_BATCH_TIMEOUT_S):
                async with self._session.post(
                    f"{self.settings.url}/{kind}",
                    data=body,
                    headers=self._headers,
                    allow_redirects=False,
                ) as response:
                    data = await _read(response)
                    status = response.status
                    retry_after = response.headers.get("Retry-After")
        except TimeoutError:
            raise BatchFailed("timeout") from None
        except aiohttp.ClientError as error:
            raise BatchFailed(type(error).__name__) from None
        if status != 200:
            raise BatchFailed(f"HTTP {status}", parse_retry_after(retry_after, time.time()))
        if data is None:
            raise BatchFailed("answer too long or encoded")
        return read_batch_answer(data, batch)

    def _unavailable(self, retry_in_ms: int, hold_id: str, reason: str) -> CreditsUnavailable:
        self.unavailable += 1
        log.warning("ledger_hold_failed", hold_id=hold_id, reason=reason)
        seconds = max(1, math.ceil(retry_in_ms / 1000))
        return CreditsUnavailable(headers={"retry-after": str(seconds)}, reason=reason)


class CreditsRefused(PaymentRequired):
    """The ledger answered 402: the balance cannot cover the hold. ``balance`` is what it
    said is left (None when it did not say), for the budget headers."""

    def __init__(self, nano_usd: int, balance: int | None) -> None:
        left = f"${format_usd(balance)} is available" if balance is not None else "less is left"
        super().__init__(
            f"This key's prepaid credits cannot cover this request: it holds up to "
            f"${format_usd(nano_usd)} and {left}. Ask an administrator to add credits.",
            code="insufficient_credits",
            headers={"x-should-retry": "false"},
        )
        self.balance = balance


async def _read(response: aiohttp.ClientResponse) -> bytes | None:
    """The body, or None when it is encoded or longer than ``MAX_ANSWER_BYTES``."""
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        return None
    return await read_capped(response, MAX_ANSWER_BYTES)


def _json(body: bytes | None) -> Any:
    if body is None:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
