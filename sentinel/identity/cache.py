"""What Sentinel remembers of the identity service's answers: pure, bounded, clock injected.

A known key's principal is *fresh* for ``ttl_ms`` after the answer that brought it, then
*stale*: still served (while one refresh runs) until ``max_stale_ms`` after that answer, and
after that not at all. An unknown key (404) is remembered for ``negative_ttl_ms``.

Known and unknown keys live in two separate LRU maps, each with its own bound: a spray of
random keys fills only the unknown map, so it can never evict the known keys that must keep
working through an outage of the service.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum

from sentinel.auth.keys import Principal

__all__ = ["Freshness", "PrincipalCache"]


class Freshness(StrEnum):
    """What the cache can say about a key now."""

    FRESH = "fresh"  # a principal to serve as is
    STALE = "stale"  # a principal to serve while one refresh runs
    UNKNOWN = "unknown"  # recently answered 404
    MISS = "miss"  # nothing usable: ask the service before answering


@dataclass(slots=True)
class _Known:
    principal: Principal
    fresh_until_ms: int
    usable_until_ms: int


class PrincipalCache:
    """Answers per key digest, with the timing rules of the module docstring."""

    def __init__(
        self,
        *,
        ttl_ms: int,
        max_stale_ms: int,
        negative_ttl_ms: int,
        max_known: int,
        max_unknown: int,
    ) -> None:
        if max_stale_ms < ttl_ms or min(ttl_ms, negative_ttl_ms, max_known, max_unknown) < 1:
            raise ValueError("invalid identity cache settings")
        self._ttl_ms = ttl_ms
        self._max_stale_ms = max_stale_ms
        self._negative_ttl_ms = negative_ttl_ms
        self._max_known = max_known
        self._max_unknown = max_unknown
        self._known: OrderedDict[bytes, _Known] = OrderedDict()
        self._unknown: OrderedDict[bytes, int] = OrderedDict()  # digest -> expiry (ms)

    def __len__(self) -> int:
        return len(self._known) + len(self._unknown)

    @property
    def known_count(self) -> int:
        """Known keys held."""
        return len(self._known)

    @property
    def unknown_count(self) -> int:
        """Unknown keys held."""
        return len(self._unknown)

    def get(self, digest: bytes, now_ms: int) -> tuple[Freshness, Principal | None]:
        """What is known of ``digest`` at ``now_ms`` (the principal with FRESH and STALE)."""
        known = self._known.get(digest)
        if known is not None:
            if now_ms < known.fresh_until_ms:
                self._known.move_to_end(digest)
                return Freshness.FRESH, known.principal
            if now_ms < known.usable_until_ms:
                self._known.move_to_end(digest)
                return Freshness.STALE, known.principal
            del self._known[digest]  # past max_stale: never served again without an answer
            return Freshness.MISS, None
        until = self._unknown.get(digest)
        if until is not None:
            if now_ms < until:
                return Freshness.UNKNOWN, None
            del self._unknown[digest]
        return Freshness.MISS, None

    def usable(self, digest: bytes, now_ms: int) -> Principal | None:
        """The principal of ``digest`` if it may still be served (fresh or stale), else None."""
        freshness, principal = self.get(digest, now_ms)
        return principal if freshness in (Freshness.FRESH, Freshness.STALE) else None

    def learn_known(self, digest: bytes, principal: Principal, now_ms: int) -> None:
        """The service answered ``principal`` for ``digest`` at ``now_ms``."""
        self._unknown.pop(digest, None)
        self._known[digest] = _Known(principal, now_ms + self._ttl_ms, now_ms + self._max_stale_ms)
        self._known.move_to_end(digest)
        while len(self._known) > self._max_known:
            self._known.popitem(last=False)

    def learn_unknown(self, digest: bytes, now_ms: int) -> None:
        """The service answered 404 for ``digest`` at ``now_ms`` (a known key is forgotten)."""
        self._known.pop(digest, None)
        self._unknown[digest] = now_ms + self._negative_ttl_ms
        self._unknown.move_to_end(digest)
        while len(self._unknown) > self._max_unknown:
            self._unknown.popitem(last=False)
