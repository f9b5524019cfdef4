"""The identity service as a ``PrincipalSource``: keys Sentinel does not hold, resolved remotely.

``resolve`` answers from ``PrincipalCache`` when it can (a dict hit on the hot path) and asks
the service otherwise, with these guarantees:

- **Single flight.** At most one lookup per key is in flight; every request that needs the
  answer awaits that one (shielded: a client that goes away does not cancel it for the rest).
- **Stale while refreshing.** Past ``ttl_s`` a known key is served at once while one
  background refresh runs; a 404 from that refresh forgets the key.
- **Fail closed, honestly.** When the service is down, slow, 5xx, throttling or its breaker
  is open, a known key keeps working until ``max_stale_s`` after its last good answer;
  anything else gets 503 ``identity_unavailable``. A failure is never taken for "unknown",
  so it is never a 401 and never admits anyone.
- **Bounded.** Lookups have a deadline; at most ``max_lookups`` run at once and four times as
  many keys may wait (as long again) for a turn (a new key beyond that gets 503); a 429
  silences every lookup for its ``Retry-After``; a circuit breaker (``sentinel.breaker``)
  stops the hammering of a dead service; both caches are LRU-bounded.

Keys and digests never reach a log line: a digest is shown by its first eight hex digits.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from sentinel.auth.fields import principal_of
from sentinel.auth.keys import Principal
from sentinel.breaker import BreakerPolicy, CircuitBreaker
from sentinel.clock import Clock, MonotonicClock
from sentinel.config.identity import IdentityServiceConfig
from sentinel.config.limits import LimitDefaults
from sentinel.errors import ServiceUnavailable
from sentinel.identity.cache import Freshness, PrincipalCache
from sentinel.identity.lookup import Answer, Failed, Found, Unknown, ask

__all__ = ["IdentityService", "IdentityStats", "IdentityUnavailable"]

log = structlog.get_logger("sentinel.identity")

_WAITING_FACTOR = 4
"""Keys whose lookup may wait for a slot, per slot (``max_lookups``); a new key beyond is 503."""

_NO_SLOT = Failed("no lookup slot free in time")

_Outcome = Principal | None | Failed
"""What one lookup settled: the principal, None for unknown, or why there is no answer."""


class IdentityUnavailable(ServiceUnavailable):
    """A credential Sentinel cannot confirm or deny right now: never admitted, never a 401."""

    default_code = "identity_unavailable"
    default_message = "The identity service cannot confirm this key right now; try again shortly."


@dataclass(slots=True)
class IdentityStats:
    """What the identity service source did, counted since startup (for ``/metrics``)."""

    lookups: int = 0  # lookups sent to the service
    failures: int = 0  # lookups that got no answer (error, timeout, bad answer, 429)
    stale_served: int = 0  # requests answered from an entry past ttl_s
    unavailable: int = 0  # requests refused with 503 identity_unavailable


def unavailable(retry_in_ms: int, **context: Any) -> IdentityUnavailable:
    """The 503 with a ``retry-after`` of at least one second."""
    seconds = max(1, math.ceil(retry_in_ms / 1000))
    return IdentityUnavailable(headers={"retry-after": str(seconds)}, **context)


def shown(digest: bytes) -> str:
    """A digest as logs show it: enough to tell keys apart, too little to look one up."""
    return digest.hex()[:8]


class IdentityService:
    """Principals of keys the identity service knows (see the module docstring)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: IdentityServiceConfig,
        defaults: LimitDefaults,
        *,
        clock: Clock | None = None,
    ) -> None:
        self._session = session
        self._settings = settings
        self._defaults = defaults
        self._clock: Clock = clock or MonotonicClock()
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_ms / 1000)
        self.cache = PrincipalCache(
            ttl_ms=settings.ttl_s * 1000,
            max_stale_ms=settings.max_stale_s * 1000,
            negative_ttl_ms=settings.negative_ttl_s * 1000,
            max_known=settings.max_entries,
            max_unknown=settings.max_unknown_entries,
        )
        self.breaker = CircuitBreaker(
            BreakerPolicy(
                failures=settings.breaker_failures, cooldown_ms=settings.breaker_cooldown_ms
            )
        )
        self._flights: dict[bytes, asyncio.Task[_Outcome]] = {}  # running and waiting
        self._slots = asyncio.Semaphore(settings.max_lookups)  # running
        self._quiet_until_ms = 0  # a 429's Retry-After: no lookups before this
        self.stats = IdentityStats()

    async def resolve(self, key: bytes, digest: bytes) -> Principal | None:
        """The principal of ``digest``, None when the service says it is unknown."""
        now = self._clock.now_ms()
        freshness, principal = self.cache.get(digest, now)
        if freshness is Freshness.FRESH:
            return principal
        if freshness is Freshness.UNKNOWN:
            return None
        if freshness is Freshness.STALE:
            self.stats.stale_served += 1
            self._flight(digest, now)  # one refresh in the background; this request goes on
            return principal
        flight = self._flight(digest, now)
        if flight is None:
            self.stats.unavailable += 1
            raise unavailable(self._retry_in_ms(now), key_digest=shown(digest))
        outcome = await asyncio.shield(flight)
        if not isinstance(outcome, Failed):
            return outcome
        self.stats.unavailable += 1
        raise unavailable(
            outcome.backoff_ms or self._retry_in_ms(self._clock.now_ms()),
            key_digest=shown(digest),
            reason=outcome.reason,
        )

    async def aclose(self) -> None:
        """Cancel the lookups in flight (at shutdown, before the session closes)."""
        flights = list(self._flights.values())
        for flight in flights:
            flight.cancel()
        await asyncio.gather(*flights, return_exceptions=True)

    @property
    def in_flight(self) -> int:
        """Lookups running or waiting for a slot now."""
        return len(self._flights)

    def _flight(self, digest: bytes, now_ms: int) -> asyncio.Task[_Outcome] | None:
        """The lookup of ``digest`` in flight, started if none is and one may start now."""
        flight = self._flights.get(digest)
        if flight is not None:
            return flight
        waiting_room = self._settings.max_lookups * _WAITING_FACTOR
        if now_ms < self._quiet_until_ms or len(self._flights) >= waiting_room:
            return None
        if not self.breaker.try_acquire(now_ms):
            return None
        self.stats.lookups += 1
        flight = asyncio.create_task(self._look_up(digest), name="identity-lookup")
        self._flights[digest] = flight
        flight.add_done_callback(lambda _: self._flights.pop(digest, None))
        return flight

    async def _look_up(self, digest: bytes) -> _Outcome:
        """Ask the service about ``digest`` and teach the cache and the breaker its answer."""
        return self._learn(digest, await self._ask_in_turn(digest))

    async def _ask_in_turn(self, digest: bytes) -> Answer:
        """Ask once a slot is free, waiting ``timeout_ms`` at most for one."""
        settings = self._settings
        try:
            async with asyncio.timeout(settings.timeout_ms / 1000):
                await self._slots.acquire()
        except TimeoutError:
            return _NO_SLOT
        try:
            return await ask(
                self._session, settings.url, digest, token=settings.token, deadline=self._timeout
            )
        except Exception as error:  # a task's boundary: whatever broke, it is no answer
            return Failed(f"internal: {type(error).__name__}")
        finally:
            self._slots.release()

    def _learn(self, digest: bytes, answer: Answer) -> _Outcome:
        """What ``answer`` teaches the cache, the breaker and the back-off."""
        if answer is _NO_SLOT:
            return answer  # Sentinel's own congestion: nothing learnt about the service
        now = self._clock.now_ms()
        if isinstance(answer, Found):
            fields = answer.fields
            principal = principal_of(fields, f"idp:{fields.name}", self._defaults)
            self.cache.learn_known(digest, principal, now)
            self.breaker.record_success(now)
            if answer.ignored:
                log.info("identity_fields_ignored", key_digest=shown(digest), fields=answer.ignored)
            return principal
        if isinstance(answer, Unknown):
            self.cache.learn_unknown(digest, now)
            self.breaker.record_success(now)
            return None
        self.stats.failures += 1
        if answer.backoff_ms is not None:
            self._quiet_until_ms = max(self._quiet_until_ms, now + answer.backoff_ms)
            log.warning(
                "identity_throttled", key_digest=shown(digest), backoff_ms=answer.backoff_ms
            )
        else:
            self.breaker.record_failure(now)
            log.warning(
                "identity_lookup_failed",
                key_digest=shown(digest),
                reason=answer.reason,
                breaker=str(self.breaker.state),
            )
        return answer

    def _retry_in_ms(self, now_ms: int) -> int:
        """How long until a lookup might go through again."""
        return max(self._quiet_until_ms - now_ms, self.breaker.retry_in_ms(now_ms), 1_000)
