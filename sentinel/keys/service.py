"""What the keys API does, apart from HTTP: checked changes, each audited and applied at once.

``KeyAdmin`` validates a request body (400 naming the field), refuses what would clash (409)
or touch a config key (409 ``key_read_only``), writes the change and its audit entry in one
store call, logs the audit entry (never a secret, never a digest), and hands the new record
to this replica's cache before answering, so the replica that answered applies it first.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import structlog

from sentinel.auth.keys import KeyRing
from sentinel.config import KeyConfig
from sentinel.errors import InvalidRequest, NotFound, SentinelError
from sentinel.keys.bodies import (
    CREATE_FIELDS,
    PATCH_FIELDS,
    bad,
    check_expiry,
    editable,
    grace_of,
    imported_digest,
    read_body_fields,
)
from sentinel.keys.records import (
    KEY_ID_PREFIX,
    KeyRecord,
    new_key_id,
    new_secret,
    prefix_of,
    secret_digest,
)
from sentinel.keys.source import RuntimeKeys
from sentinel.keys.store import (
    AuditEntry,
    Conflict,
    IdempotentReply,
    Refused,
    new_audit_id,
)
from sentinel.keys.views import config_key_view

__all__ = ["KeyAdmin", "KeyConflict", "Unprocessable"]

log = structlog.get_logger("sentinel.audit")

_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_TRIES = 5


class KeyConflict(SentinelError):
    """The change clashes with the keys' current state (a taken name, a config key)."""

    status = 409
    error_type = "invalid_request_error"
    default_code = "conflict"
    default_message = "The request conflicts with the current state of the key."


class Unprocessable(SentinelError):
    """An ``Idempotency-Key`` sent again with another body."""

    status = 422
    error_type = "invalid_request_error"
    default_code = "idempotency_key_reused"
    default_message = "This Idempotency-Key was already used with a different request body."


# Neither error repeats the id: a secret pasted where an id belongs must not come back.
def _unknown(key_id: str) -> NotFound:
    return NotFound("No key has this id.", code="key_not_found")


def _read_only(key_id: str) -> KeyConflict:
    return KeyConflict(
        "This key comes from the configuration file and cannot be changed here.",
        code="key_read_only",
    )


class KeyAdmin:
    """Create, change, revoke, rotate and list runtime keys; every change audited."""

    def __init__(
        self,
        keys: RuntimeKeys,
        config_keys: tuple[KeyConfig, ...],
        ring: KeyRing,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runtime = keys
        self._store = keys.store
        self._config = {k.name: k for k in config_keys}
        self._ring = ring
        self._clock = clock

    # --- reading ---------------------------------------------------------------------------

    async def view(self, key_id: str) -> dict[str, Any]:
        """One key's view (config or runtime); 404 for an unknown id."""
        if key_id.startswith("cfg:") and key_id[4:] in self._config:
            return config_key_view(self._config[key_id[4:]])
        record = await self._record(key_id)
        return await self._view(record)

    async def page(self, limit: int, after: str | None) -> dict[str, Any]:
        """A page of the list: config keys in file order, then runtime keys by creation."""
        head: list[dict[str, Any]] = []
        runtime_after: str | None = None
        configured = [config_key_view(k) for k in self._config.values()]
        if after is None:
            head = configured
        elif after.startswith("cfg:"):
            ids = [v["id"] for v in configured]
            if after not in ids:
                raise bad("after", "no key with this id")
            head = configured[ids.index(after) + 1 :]
        else:
            runtime_after = after
        data = head[:limit]
        room = limit - len(data)
        try:
            records, more = await self._store.page(max(room, 1), runtime_after)
        except LookupError:
            raise bad("after", "no key with this id") from None
        if room > 0:
            used = await self._store.last_used([r.id for r in records])
            now = self._clock()
            data += [r.view(now, used.get(r.id)) for r in records]
            has_more = more
        else:
            has_more = len(head) > limit or bool(records)
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }

    async def audit(self, limit: int, after: str | None) -> dict[str, Any]:
        """A page of the audit log, newest first."""
        entries, more = await self._store.audit_page(limit, after)
        return {
            "object": "list",
            "data": entries,
            "first_id": entries[0]["id"] if entries else None,
            "last_id": entries[-1]["id"] if entries else None,
            "has_more": more,
        }

    # --- changing --------------------------------------------------------------------------

    async def create(
        self, body: Mapping[str, Any], actor: str, idempotency_key: str | None
    ) -> tuple[dict[str, Any], bool]:
        """Create a key from ``body``; the reply (with the secret, unless imported) and
        whether it replays an earlier create with the same ``Idempotency-Key``."""
        body_hash = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        if idempotency_key is not None:
            if not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
                raise InvalidRequest(
                    "Idempotency-Key: expected 1 to 255 printable ASCII characters.",
                    param="Idempotency-Key",
                )
            prior = await self._store.remembered(idempotency_key)
            if prior is not None:
                return self._replay(prior, body_hash), True
        now = self._clock()
        record, secret = self._new_record(body, now)
        view = record.view(now)
        audit = self._audit(actor, "key.created", record.id, None, view, now)
        remember = None
        if idempotency_key is not None:
            remember = (idempotency_key, IdempotentReply(body_hash, {**view, "key": None}))
        try:
            prior = await self._store.create(record, audit, remember)
        except Refused as refused:
            if refused.what == "name":
                raise KeyConflict(
                    f"The name {record.name!r} is taken by another key.",
                    code="key_name_taken",
                    param="name",
                ) from None
            raise KeyConflict(
                "This key_sha256 belongs to another key.", code="key_exists", param="key_sha256"
            ) from None
        if prior is not None:
            return self._replay(prior, body_hash), True
        self._logged(audit)
        self.runtime.apply(record)
        return {**view, "key": secret}, False

    def _new_record(self, body: Mapping[str, Any], now: float) -> tuple[KeyRecord, str | None]:
        """The record a create body asks for, and its new secret (None for an import)."""
        fields = read_body_fields(body, CREATE_FIELDS, need_name=True)
        if fields["name"] in self._config:
            raise KeyConflict(
                f"The name {fields['name']!r} is taken by a key in the configuration file.",
                code="key_name_taken",
                param="name",
            )
        check_expiry(fields["expires_at"], now)
        secret: str | None = None
        imported = body.get("key_sha256")
        if imported is not None:
            digest = imported_digest(imported)
            if self._ring.lookup(bytes.fromhex(digest)) is not None:
                raise KeyConflict(
                    "This key_sha256 belongs to a key in the configuration file.",
                    code="key_exists",
                    param="key_sha256",
                )
        else:
            secret = new_secret()
            digest = secret_digest(secret).hex()
        record = KeyRecord(
            id=new_key_id(),
            name=fields["name"],
            digest=digest,
            key_prefix=None if secret is None else prefix_of(secret),
            created_at=int(now),
            team=fields["team"],
            models=fields["models"],
            limits=fields["limits"],
            budgets=fields["budgets"],
            metadata=fields["metadata"],
            expires_at=fields["expires_at"],
        )
        return record, secret

    def _replay(self, prior: IdempotentReply, body_hash: str) -> dict[str, Any]:
        if prior.body_hash != body_hash:
            raise Unprocessable()
        return dict(prior.reply)

    async def patch(self, key_id: str, body: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """Change the fields ``body`` names (null clears one); 400 if the result is invalid."""
        if "name" in body:
            raise bad("name", "cannot be changed; create a new key instead")

        def change(record: KeyRecord, now: float) -> KeyRecord:
            if record.revoked_at is not None:
                raise KeyConflict("This key is revoked.", code="key_revoked")
            merged = {**editable(record), **body, "name": record.name}
            fields = read_body_fields(merged, PATCH_FIELDS, need_name=True)
            if "expires_at" in body:
                check_expiry(fields["expires_at"], now)
            return record.changed(
                team=fields["team"],
                models=fields["models"],
                limits=fields["limits"],
                budgets=fields["budgets"],
                metadata=fields["metadata"],
                expires_at=fields["expires_at"],
            )

        return await self._change(key_id, actor, "key.updated", change)

    async def revoke(self, key_id: str, actor: str) -> dict[str, Any]:
        """Revoke ``key_id`` for good (a revoked key stays revoked; revoking again is a no-op)."""

        def change(record: KeyRecord, now: float) -> KeyRecord | None:
            if record.revoked_at is not None:
                return None
            return record.changed(revoked_at=int(now), grace=())

        return await self._change(key_id, actor, "key.revoked", change)

    async def rotate(self, key_id: str, body: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """A new secret for ``key_id``; the one it replaces keeps working ``grace_s`` seconds
        (earlier secrets stop now)."""
        grace_s = grace_of(body)
        secret = new_secret()

        def change(record: KeyRecord, now: float) -> KeyRecord:
            if record.revoked_at is not None:
                raise KeyConflict("This key is revoked.", code="key_revoked")
            # Only the secret replaced now gets a grace: a rotation ends earlier graces, so
            # rotating with grace_s=0 retires every earlier secret at once (a leak).
            grace = ((record.digest, int(now) + grace_s),) if grace_s > 0 else ()
            return record.changed(
                digest=secret_digest(secret).hex(), key_prefix=prefix_of(secret), grace=grace
            )

        view = await self._change(key_id, actor, "key.rotated", change)
        return {**view, "key": secret, "grace_s": grace_s}

    async def _change(
        self,
        key_id: str,
        actor: str,
        action: str,
        change: Callable[[KeyRecord, float], KeyRecord | None],
    ) -> dict[str, Any]:
        """Read, change and write back ``key_id``, again from the top when another replica
        changed it in between."""
        if key_id.startswith("cfg:") and key_id[4:] in self._config:
            raise _read_only(key_id)
        for _ in range(_TRIES):
            record = await self._record(key_id)
            now = self._clock()
            changed = change(record, now)
            if changed is None:
                return await self._view(record)
            audit = self._audit(actor, action, key_id, record.view(now), changed.view(now), now)
            try:
                await self._store.replace(changed, audit)
            except Conflict:
                continue
            except LookupError:
                raise _unknown(key_id) from None
            except Refused:
                raise KeyConflict(
                    "Another live key holds this key's name.", code="key_name_taken"
                ) from None
            self._logged(audit)
            self.runtime.apply(changed)
            return await self._view(changed)
        raise KeyConflict("The key kept changing; try again.", code="key_busy")

    # --- helpers ---------------------------------------------------------------------------

    async def _record(self, key_id: str) -> KeyRecord:
        record = await self._store.get(key_id) if key_id.startswith(KEY_ID_PREFIX) else None
        if record is None:
            raise _unknown(key_id)
        return record

    async def _view(self, record: KeyRecord) -> dict[str, Any]:
        used = await self._store.last_used([record.id])
        return record.view(self._clock(), used.get(record.id))

    def _audit(
        self,
        actor: str,
        action: str,
        key_id: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        now: float,
    ) -> AuditEntry:
        return AuditEntry(
            id=new_audit_id(int(now * 1000)),
            at=int(now),
            actor=actor,
            action=action,
            key_id=key_id,
            before=before,
            after=after,
        )

    def _logged(self, audit: AuditEntry) -> None:
        before, after = audit.before or {}, audit.after or {}
        changed = sorted(k for k in {*before, *after} if before.get(k) != after.get(k))
        log.info(
            "admin_audit",
            audit_id=audit.id,
            actor=audit.actor,
            action=audit.action,
            key_id=audit.key_id,
            changed=changed,
        )
