"""The owner index: which key created each object, and each key's objects in creation order.

``OwnerIndex`` is the seam; ``MemoryOwners`` (one process) and ``RedisOwners`` (every replica,
``redis_index.py``) implement it, and one contract test suite runs against both. Ownership is
a security decision, so an index that cannot answer raises ``OwnershipUnavailable``: a failure
never reads as "yours" nor as "nobody's".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import orjson

from sentinel.errors import ServiceUnavailable
from sentinel.tenancy.objects import ObjectKind, ObjectRef

__all__ = [
    "MAX_PAGE",
    "MemoryOwners",
    "OwnerIndex",
    "OwnershipUnavailable",
    "check_limit",
    "placeholder",
]

MAX_PAGE = 100
"""The most objects one ``page`` call returns (OpenAI's own list limit)."""


class OwnershipUnavailable(ServiceUnavailable):
    """The owner index could not answer (timeout, connection refused, cluster down)."""

    default_code = "ownership_unavailable"
    default_message = "Object ownership cannot be checked right now; try again later."


class OwnerIndex(Protocol):
    """Who owns each object created through the gateway, and each owner's objects by kind."""

    async def owner_of(self, ref: ObjectRef) -> str | None:
        """The owner of ``ref``, or None when the gateway never saw it created."""
        ...

    async def claim(
        self, ref: ObjectRef, owner: str, created_at: int, snapshot: bytes | None
    ) -> None:
        """Record that ``owner`` created ``ref``; the first owner wins for good.

        A re-claim by the same owner with a ``snapshot`` (the object's own JSON) replaces the
        stored snapshot and ``created_at``; one without a snapshot changes nothing. A claim of
        an object another owner holds changes nothing either.
        """
        ...

    async def release(self, ref: ObjectRef) -> None:
        """Forget ``ref`` (after its successful DELETE); unknown objects are no error."""
        ...

    async def page(
        self, owner: str, kind: ObjectKind, *, after: str | None, limit: int, ascending: bool
    ) -> tuple[list[bytes], bool]:
        """Up to ``limit`` (1..100) snapshots of ``owner``'s objects of ``kind``, and whether
        more follow.

        Newest first by ``created_at`` (equal ones by id, descending), or the exact reverse
        when ``ascending``; the page starts after the object ``after`` when ``owner`` holds
        it, else at the start. An object claimed without a snapshot shows as ``placeholder``.
        """
        ...


def placeholder(ref: ObjectRef) -> bytes:
    """The snapshot of an object claimed without one: ``{"id": ..., "object": <kind>}``."""
    return orjson.dumps({"id": ref.id, "object": ref.kind})


def check_limit(limit: int) -> None:
    """``ValueError`` unless ``1 <= limit <= MAX_PAGE``: callers clamp what clients send."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be 1..{MAX_PAGE}, got {limit}")


@dataclass(slots=True)
class _Entry:
    owner: str
    created_at: int
    snapshot: bytes | None


class MemoryOwners:
    """The owner index in this process's memory, for a single replica and for tests.

    Nothing is ever evicted: memory grows with every object created (and shrinks with every
    release), and a restart forgets every owner. A page sorts the owner's objects of one kind.
    """

    def __init__(self) -> None:
        self._entries: dict[ObjectRef, _Entry] = {}
        self._owned: dict[tuple[str, ObjectKind], set[str]] = {}

    async def owner_of(self, ref: ObjectRef) -> str | None:
        """The owner of ``ref``, or None when the gateway never saw it created."""
        entry = self._entries.get(ref)
        return None if entry is None else entry.owner

    async def claim(
        self, ref: ObjectRef, owner: str, created_at: int, snapshot: bytes | None
    ) -> None:
        """Record that ``owner`` created ``ref``; the first owner wins for good."""
        entry = self._entries.get(ref)
        if entry is None:
            self._entries[ref] = _Entry(owner, created_at, snapshot)
            self._owned.setdefault((owner, ref.kind), set()).add(ref.id)
        elif entry.owner == owner and snapshot is not None:
            entry.created_at = created_at
            entry.snapshot = snapshot

    async def release(self, ref: ObjectRef) -> None:
        """Forget ``ref`` (after its successful DELETE); unknown objects are no error."""
        entry = self._entries.pop(ref, None)
        if entry is not None:
            owned = self._owned[entry.owner, ref.kind]
            owned.discard(ref.id)
            if not owned:
                del self._owned[entry.owner, ref.kind]

    async def page(
        self, owner: str, kind: ObjectKind, *, after: str | None, limit: int, ascending: bool
    ) -> tuple[list[bytes], bool]:
        """Up to ``limit`` snapshots of ``owner``'s objects of ``kind``, and whether more follow."""
        check_limit(limit)
        refs = [ObjectRef(kind, object_id) for object_id in self._owned.get((owner, kind), ())]
        refs.sort(key=lambda ref: (self._entries[ref].created_at, ref.id), reverse=not ascending)
        start = 0
        if after is not None:
            ids = [ref.id for ref in refs]
            start = ids.index(after) + 1 if after in ids else 0
        chosen = refs[start : start + limit]
        snapshots = [self._entries[ref].snapshot or placeholder(ref) for ref in chosen]
        return snapshots, start + limit < len(refs)
