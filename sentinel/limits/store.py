"""The seam between the proxy and the limit stores: one Protocol, three implementations.

``MemoryStore`` (one process), ``RedisStore`` (exact across replicas) and ``GuardedStore``
(Redis with a fail-closed local fallback) all satisfy ``LimitStore``; the contract tests run
the same scenarios against each. Every call takes ``now_ms`` from an injected clock.
"""

from __future__ import annotations

from typing import Protocol

from sentinel.limits.decision import Decision, Reservation
from sentinel.limits.spec import Admission, LimitSpec
from sentinel.limits.spending import Spending
from sentinel.limits.window import KeyState, Timing, WindowUsage

__all__ = ["LimitStore", "MergingStore", "StoreUnavailable"]


class StoreUnavailable(Exception):
    """The store could not answer in time (timeout, connection refused, cluster down).

    Raised by ``RedisStore`` only; ``GuardedStore`` turns it into a degraded local decision
    or a 503, never into an admission.
    """


class LimitStore(Protocol):
    """Admission, settlement and lease renewal for the limits of every API key."""

    async def admit(self, spec: LimitSpec, admission: Admission, now_ms: int) -> Decision:
        """Check every dimension of ``spec`` and, only if all fit, record the request."""
        ...

    async def settle(
        self,
        reservation: Reservation,
        actual_tokens: int,
        now_ms: int,
        *,
        release_request: bool = False,
        nano_usd: int = 0,
    ) -> Spending | None:
        """Replace the reserved tokens with ``actual_tokens`` and release the lease.

        ``release_request=True`` also gives the request slot back (an upstream failure that
        produced nothing). A reservation holding money drops its hold and is charged
        ``nano_usd``, the real cost; what it has charged on each money counter so far is
        returned (None when nothing was charged or the settlement was deferred). Call
        exactly once per admitted request.
        """
        ...

    async def renew(self, reservation: Reservation, now_ms: int) -> bool:
        """Extend the reservation's lease and money hold by the lease TTL; False when both
        are already gone."""
        ...

    async def usage(self, key_name: str, spec: LimitSpec, now_ms: int) -> WindowUsage:
        """What ``key_name`` has used at ``now_ms`` on every dimension."""
        ...

    async def state(self, key_name: str) -> KeyState:
        """Every raw counter and lease stored for ``key_name`` (for admin and leak tests)."""
        ...


class MergingStore(LimitStore, Protocol):
    """A store that can take in usage recorded elsewhere (the write-back after an outage)."""

    timing: Timing

    async def merge(self, key_name: str, state: KeyState, now_ms: int) -> None:
        """Add ``state``'s live usage and leases to what is stored for ``key_name``."""
        ...
