"""Runtime keys as a ``PrincipalSource``: a bounded local cache kept current by the store.

The hot path for a key this replica has seen is one dict lookup and no I/O. Keys are looked
up in the store on first sight, one lookup per digest however many requests wait on it.
Unknown digests are remembered briefly, and forgotten on every change anywhere, so a key
created on one replica works on every other as soon as the change reaches it.

Changes reach a replica two ways: the store announces each one (Redis pub/sub), and the
replica compares the store's version with its own every ``CHECK_EVERY_S`` (a missed message,
a reconnect). Either way it reads the change log since its version and refreshes the keys
it holds; a store that lost its data (another epoch) or a log that no longer reaches back
far enough empties the cache. A key revoked or expired is refused from then on; requests
already admitted finish.

When the store cannot be asked, keys already cached keep their last known state, and an
unknown digest is never admitted: the request gets 503 ``key_store_unavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections import OrderedDict
from dataclasses import dataclass

import structlog

from sentinel.auth.fields import principal_of
from sentinel.auth.keys import Principal
from sentinel.config.limits import LimitDefaults
from sentinel.errors import AuthenticationFailed
from sentinel.keys.records import KeyRecord
from sentinel.keys.store import KeyStore, KeyStoreUnavailable

__all__ = ["CHECK_EVERY_S", "RuntimeKeys"]

log = structlog.get_logger("sentinel.keys")

CHECK_EVERY_S = 0.2
"""How often the store's version is compared with this replica's (the bound on a missed
announcement; the issue asks for at least every 250 ms)."""
MAX_CACHED = 100_000
"""Digests held at once (least recently used go first)."""
MAX_UNKNOWN = 10_000
UNKNOWN_TTL_S = 5.0
"""How long an unknown digest is not asked about again (unless a change comes first)."""
TOUCH_EVERY_S = 60
"""How coarse ``last_used_at`` is: at most one update per key per this many seconds."""
_FLUSH_EVERY_S = 10.0


@dataclass(slots=True)
class _Entry:
    """What one digest opens: the principal (None: refused, revoked), until when."""

    digest: bytes
    key_id: str
    version: int
    principal: Principal | None
    until: float | None  # expires_at, or the end of a rotation's grace period
    expires_at: int | None
    used_at: float = 0.0


class RuntimeKeys:
    """The runtime keys of one replica: cache, lookups and the keeping-current loop."""

    def __init__(self, store: KeyStore, defaults: LimitDefaults) -> None:
        self.store = store
        self._defaults = defaults
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()
        self._by_id: dict[str, set[bytes]] = {}
        self._unknown: dict[bytes, float] = {}  # digest -> monotonic time it is asked again
        self._pending: dict[bytes, asyncio.Future[KeyRecord | None]] = {}
        self._used: dict[str, int] = {}
        self._recheck: set[str] = set()  # keys held from a lookup that raced a change
        self._generation = 0  # moves on with every change seen: a lookup older is not cached
        self._epoch: str | None = None
        self._version = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # --- the request path ------------------------------------------------------------------

    async def resolve(self, key: bytes, digest: bytes) -> Principal | None:
        """The principal of ``digest``; ``AuthenticationFailed`` for a revoked or expired key,
        None for an unknown one, 503 when an unseen digest cannot be looked up."""
        entry = self._cache.get(digest)
        if entry is None:
            if self._unknown.get(digest, 0.0) > time.monotonic():
                return None
            entry = await self._lookup(digest)
            if entry is None:
                return None
        # The lookup is by digest, so its timing says nothing about any stored key; the
        # constant-time compare keeps the accept path free of early exits all the same.
        if entry.principal is None or not hmac.compare_digest(entry.digest, digest):
            raise AuthenticationFailed()
        now = time.time()
        if entry.until is not None and now >= entry.until:
            raise AuthenticationFailed()
        self._cache.move_to_end(digest)
        if now - entry.used_at >= TOUCH_EVERY_S:
            entry.used_at = now
            self._used[entry.key_id] = int(now)
        return entry.principal

    async def _lookup(self, digest: bytes) -> _Entry | None:
        """Look ``digest`` up in the store, once for every request waiting on it."""
        pending = self._pending.get(digest)
        if pending is not None:
            try:
                # Shielded: a waiter that goes away must not cancel the others' answer.
                await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this request was cancelled
                return await self._lookup(digest)  # the one asking was: ask again
            return self._cache.get(digest)
        pending = asyncio.get_running_loop().create_future()
        self._pending[digest] = pending
        generation = self._generation
        try:
            record = await self.store.find(digest.hex())
        except BaseException as error:
            if isinstance(error, KeyStoreUnavailable):
                pending.set_exception(error)
                pending.exception()  # retrieved: the waiters raise it themselves
            else:
                pending.cancel()
            raise
        finally:
            del self._pending[digest]
        if record is not None and digest.hex() not in record.digests(time.time()):
            record = None
        if record is None:
            if generation == self._generation:
                self._remember_unknown(digest)
        else:
            self._hold(record, add=True)
            if generation != self._generation:
                # A change came in while the store answered, perhaps to this key, and was
                # skipped as not held: read it again at once.
                self._recheck.add(record.id)
                self._wake.set()
        pending.set_result(record)
        return self._cache.get(digest)

    def _remember_unknown(self, digest: bytes) -> None:
        if len(self._unknown) >= MAX_UNKNOWN:
            now = time.monotonic()
            self._unknown = {d: t for d, t in self._unknown.items() if t > now}
            if len(self._unknown) >= MAX_UNKNOWN:
                self._unknown.clear()
        self._unknown[digest] = time.monotonic() + UNKNOWN_TTL_S

    # --- applying changes ------------------------------------------------------------------

    def apply(self, record: KeyRecord) -> None:
        """Take a changed ``record`` in (if this replica holds the key) and forget unknown
        digests: one of them may be this key's."""
        self._unknown.clear()
        self._generation += 1
        self._hold(record, add=False)

    def _hold(self, record: KeyRecord, *, add: bool) -> None:
        """Cache every digest that opens ``record`` now, in place of what was cached for it (an
        older version never replaces a newer one); a key not cached stays out unless ``add``."""
        held = self._by_id.get(record.id)
        if held is None and not add:
            return
        if held:
            current = self._cache.get(next(iter(held)))
            if current is not None and current.version > record.version:
                return
            for digest in held:
                self._cache.pop(digest, None)
        now = time.time()
        principal = None
        if record.status(now) == "active":
            principal = principal_of(record.fields(), record.id, self._defaults)
        digests: set[bytes] = set()
        for hex_digest, until in record.digests(now).items():
            digest = bytes.fromhex(hex_digest)
            ends = [t for t in (record.expires_at, until) if t is not None]
            self._cache[digest] = _Entry(
                digest,
                record.id,
                record.version,
                principal,
                min(ends) if ends else None,
                record.expires_at,
            )
            digests.add(digest)
        self._by_id[record.id] = digests
        while len(self._cache) > MAX_CACHED:
            _, gone = self._cache.popitem(last=False)
            siblings = self._by_id.get(gone.key_id)
            if siblings is not None:
                siblings.discard(gone.digest)
                if not siblings:
                    del self._by_id[gone.key_id]

    def expires_at(self, key_id: str) -> int | None:
        """When the cached key ``key_id`` expires (None: never, or not cached)."""
        for digest in self._by_id.get(key_id, ()):
            entry = self._cache.get(digest)
            if entry is not None:
                return entry.expires_at
        return None

    def forget_all(self) -> None:
        """Empty the cache (the store lost its data, or this replica fell too far behind)."""
        self._cache.clear()
        self._by_id.clear()
        self._unknown.clear()
        self._generation += 1

    def changed(self) -> None:
        """Something changed somewhere: catch up now rather than at the next check."""
        self._wake.set()

    async def sync(self) -> None:
        """Catch up with the store: its epoch, then every change since this replica's version;
        then read again the keys a lookup took in while a change came."""
        await self._catch_up()
        if self._recheck:
            ids = list(self._recheck)
            records = await self.store.get_many(ids)
            self._recheck.difference_update(ids)
            for record in records:
                self._hold(record, add=False)

    async def _catch_up(self) -> None:
        head = await self.store.head()
        if head.epoch != self._epoch:
            if self._epoch == "":
                # The store was empty when last seen: all it holds now is in its change log.
                self._epoch = head.epoch
            else:
                # Another store (one that lost its data), or the first sight of this one after
                # lookups whose changes since cannot be told: start over.
                if self._epoch is not None:
                    log.info("keys_store_replaced", cached=len(self._by_id))
                if self._epoch is not None or self._by_id:
                    self.forget_all()
                self._epoch, self._version = head.epoch, head.version
                self._unknown.clear()
                self._generation += 1
                return
        if head.version == self._version:
            return
        changed = (
            None if head.version < self._version else await self.store.changes_since(self._version)
        )
        if changed is None:
            self.forget_all()
        else:
            for record in await self.store.get_many([i for i in changed if i in self._by_id]):
                self._hold(record, add=False)
            self._unknown.clear()
            self._generation += 1
        self._version = head.version

    # --- the background work ---------------------------------------------------------------

    async def start(self) -> None:
        """Learn the store's version (if it answers), then start listening for announcements
        and checking the version."""
        with contextlib.suppress(KeyStoreUnavailable):
            await self.sync()
        self._tasks = [
            asyncio.create_task(self.store.listen(self.changed), name="keys-listen"),
            asyncio.create_task(self._keep_current(), name="keys-sync"),
        ]

    async def _keep_current(self) -> None:
        flushed = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CHECK_EVERY_S):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.sync()
                if self._used and time.monotonic() - flushed >= _FLUSH_EVERY_S:
                    flushed = time.monotonic()
                    used, self._used = self._used, {}
                    await self.store.touch(used)
            except KeyStoreUnavailable:
                pass  # the last known state stands; the next check tries again
            except Exception:  # the loop's boundary: keeping current must outlive any bug
                log.exception("keys_sync_failed")

    async def aclose(self) -> None:
        """Stop the background work and write the last ``last_used_at`` values."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._used:
            with contextlib.suppress(KeyStoreUnavailable):
                await self.store.touch(self._used)
        await self.store.aclose()
