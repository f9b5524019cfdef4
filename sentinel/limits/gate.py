"""The proxy's side of the limits: admit a request before the upstream call, settle it after.

``Gate`` wraps whichever ``LimitStore`` the deployment uses (``GuardedStore`` over Redis, or
``MemoryStore`` in embedded mode) with the clock and the reservation rule. ``admit`` raises
the 429 (or the 503 of ``on_unavailable = "deny"``); ``settle`` never raises and always runs
to completion, even when the request's task is being cancelled, so no reservation leaks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

import structlog

from sentinel.clock import Clock, WallClock
from sentinel.config.limits import LimitDefaults
from sentinel.limits.decision import Decision, Reservation
from sentinel.limits.guarded import GuardedStore
from sentinel.limits.headers import refusal_error
from sentinel.limits.spec import Admission, Dimension, LimitSpec, reservation_tokens
from sentinel.limits.spending import Spending
from sentinel.limits.store import LimitStore
from sentinel.telemetry.metrics import Metrics

__all__ = ["Gate", "keep_recovering"]

RECOVERY_INTERVAL_S = 0.25
"""How often a degraded store is offered a probe (the breaker decides whether it runs)."""
_MAX_REFUSED = 100_000
"""Keys remembered as refused at once; beyond it (expired ones dropped first) the store is
asked again, which is only slower."""

log = structlog.get_logger("sentinel.limits")


class Gate:
    """Admission and settlement for the request path, over one store."""

    def __init__(
        self,
        store: LimitStore,
        defaults: LimitDefaults,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self._metrics = metrics
        self._renew_every_s = defaults.lease_ttl_ms / 3 / 1000
        self._reserve = defaults.default_completion_reserve
        self._clock = clock or WallClock()
        self._settling: set[asyncio.Task[None]] = set()
        self._held: dict[str, Reservation] = {}  # by id: leases renewed while requests run
        # Keys refused for their request rate, until when: refused again before their prompt
        # is counted (the cheap check), since only time can free a request window.
        self._refused: dict[str, tuple[int, Decision]] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._on_spent: Callable[[Reservation, Spending], None] | None = None

    def watch_spending(self, on_spent: Callable[[Reservation, Spending], None]) -> None:
        """Call ``on_spent`` after every settlement that charged money (the budget alerts);
        it must not block (it runs in the settlement's task)."""
        self._on_spent = on_spent

    def tokens_to_reserve(
        self,
        prompt_tokens: int,
        body: Mapping[str, object],
        caps: tuple[str, ...],
        choices: tuple[str, ...],
    ) -> int:
        """Prompt plus completion cap times choices (no ``caps``: the API completes nothing)."""
        if not caps:
            return max(0, prompt_tokens)
        return reservation_tokens(prompt_tokens, body, self._reserve, caps=caps, choices=choices)

    def refuse_early(self, key_name: str) -> None:
        """Raise the 429 again for a key its request rate refused until later, before the
        request's body is read or counted; nothing is asked of the store."""
        refused = self._refused.get(key_name)
        if refused is None:
            return
        until_ms, decision = refused
        now_ms = self._clock.now_ms()
        if now_ms >= until_ms:
            del self._refused[key_name]
            return
        if decision.refusal is not None:
            refusal = replace(decision.refusal, retry_after_ms=until_ms - now_ms)
            raise refusal_error(replace(decision, refusal=refusal), 0)

    def _remember_refusal(self, key_name: str, decision: Decision, now_ms: int) -> None:
        refusal = decision.refusal
        if refusal is None or refusal.dimension is not Dimension.REQUESTS or decision.degraded:
            # Tokens, quotas and leases can free early or depend on the request; the local
            # share of a degraded store gives way to the shared window when Redis returns.
            return
        if refusal.exceeds_limit or refusal.retry_after_ms <= 0:
            return
        if len(self._refused) >= _MAX_REFUSED:
            self._refused = {k: v for k, v in self._refused.items() if v[0] > now_ms}
            if len(self._refused) >= _MAX_REFUSED:
                return
        self._refused[key_name] = (now_ms + refusal.retry_after_ms, decision)

    async def admit(
        self, key_name: str, spec: LimitSpec, request_id: str, tokens: int, nano_usd: int = 0
    ) -> Decision:
        """An allowed decision holding a reservation; the 429 (``RateLimited``) otherwise, or
        the 402 (``PaymentRequired``) when money refused it. ``nano_usd`` is the money hold."""
        admission = Admission(
            key_name=key_name, request_id=request_id, tokens=tokens, nano_usd=nano_usd
        )
        started = time.perf_counter()
        now_ms = self._clock.now_ms()
        try:
            decision = await self.store.admit(spec, admission, now_ms)
        finally:
            if self._metrics is not None:
                self._metrics.store_call("admit", time.perf_counter() - started)
        refusal = decision.refusal
        if self._metrics is not None:
            verdict = "denied" if refusal else "degraded" if decision.degraded else "allowed"
            self._metrics.limit_decision(verdict, str(refusal.dimension) if refusal else None)
        if decision.reservation is None:
            self._remember_refusal(key_name, decision, now_ms)
            raise refusal_error(decision, tokens, nano_usd)
        return decision

    def holding(self, reservation: Reservation | None) -> _Holding:
        """Keep ``reservation``'s ``max_parallel`` lease and money hold alive while the body
        runs: a stream may outlast ``lease_ttl_ms``, and its slot must not be freed (nor its
        hold dropped) while it is still going.

        One background task renews every lease held, each ``lease_ttl_ms / 3``; it stops
        when none is left and starts again with the next."""
        return _Holding(self, reservation)

    def _hold(self, reservation: Reservation) -> None:
        self._held[reservation.reservation_id] = reservation
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_held(), name="lease-renewal")

    async def _renew_held(self) -> None:
        try:
            while self._held:
                await asyncio.sleep(self._renew_every_s)
                held = list(self._held.values())
                now_ms = self._clock.now_ms()
                results = await asyncio.gather(
                    *(self.store.renew(r, now_ms) for r in held), return_exceptions=True
                )
                for reservation, result in zip(held, results, strict=True):
                    if isinstance(result, Exception):  # the next round tries again
                        log.warning(
                            "limits_renew_failed", key=reservation.key_name, error=str(result)
                        )
        finally:
            self._renewer = None

    async def settle(
        self, reservation: Reservation, tokens: int, *, produced: bool, nano_usd: int = 0
    ) -> None:
        """Charge ``tokens`` instead of the reservation; with nothing produced, release it all.
        A money hold is replaced by ``nano_usd``, the request's real cost.

        Runs in its own task and is shielded: a cancelled request still settles.
        """
        task = asyncio.create_task(self._settle(reservation, tokens, produced, nano_usd))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        await asyncio.shield(task)

    async def _settle(
        self, reservation: Reservation, tokens: int, produced: bool, nano_usd: int
    ) -> None:
        try:
            spent = await self.store.settle(
                reservation,
                tokens if produced else 0,
                self._clock.now_ms(),
                release_request=not produced,
                nano_usd=nano_usd,
            )
            if spent is not None and self._on_spent is not None:
                self._on_spent(reservation, spent)
        except Exception as exc:  # a settlement must never fail the response it follows
            log.error("limits_settle_failed", key=reservation.key_name, exc_info=exc)

    async def drain(self) -> None:
        """Wait for settlements still running, and stop renewing leases (at shutdown)."""
        if self._renewer is not None:
            self._renewer.cancel()
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)


class _Holding:
    """``Gate.holding``'s context manager: a lease is renewed from enter to exit."""

    __slots__ = ("_gate", "_reservation")

    def __init__(self, gate: Gate, reservation: Reservation | None) -> None:
        self._gate = gate
        self._reservation = (
            reservation if reservation is not None and reservation.needs_renewal else None
        )

    def __enter__(self) -> None:
        if self._reservation is not None:
            self._gate._hold(self._reservation)

    def __exit__(self, *exc: object) -> None:
        if self._reservation is not None:
            self._gate._held.pop(self._reservation.reservation_id, None)


async def keep_recovering(
    store: GuardedStore, clock: Clock | None = None, interval_s: float = RECOVERY_INTERVAL_S
) -> None:
    """Probe a degraded store in the background, so recovery (replaying settlements, writing
    local usage back) does not wait for the next request; runs until cancelled."""
    clock = clock or WallClock()
    while True:
        await asyncio.sleep(interval_s)
        if not store.is_degraded:
            continue
        try:
            await store.recover(clock.now_ms())
        except Exception as exc:  # the next round tries again
            log.error("limits_recovery_failed", exc_info=exc)
