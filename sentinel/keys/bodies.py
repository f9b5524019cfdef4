"""What a keys API body may hold: the shared principal fields, ``expires_at``, ``metadata``,
an imported ``key_sha256``, a rotation's ``grace_s``; each problem a 400 naming its field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from sentinel.auth.fields import FIELD_NAMES, FieldProblem, read_fields
from sentinel.config.budgets import BUDGET_FIELDS
from sentinel.config.limits import LIMIT_FIELDS
from sentinel.errors import InvalidRequest
from sentinel.keys.records import KeyRecord

__all__ = [
    "CREATE_FIELDS",
    "PATCH_FIELDS",
    "bad",
    "check_expiry",
    "editable",
    "grace_of",
    "imported_digest",
    "read_body_fields",
]

MAX_METADATA_BYTES = 4096
MAX_GRACE_S = 30 * 86_400
MAX_TIME_S = 10**11  # about the year 5138: a bound, not a policy
_DIGEST = re.compile(r"(?:sha256:)?([0-9a-fA-F]{64})")
_EXTRA = frozenset(("expires_at", "metadata"))
CREATE_FIELDS = FIELD_NAMES | _EXTRA | {"key_sha256"}
PATCH_FIELDS = FIELD_NAMES | _EXTRA


def bad(field: str, message: str) -> InvalidRequest:
    """The 400 of one invalid field."""
    return InvalidRequest(f"{field}: {message}", code="invalid_value", param=field)


def read_body_fields(
    data: Mapping[str, Any], known: frozenset[str], *, need_name: bool
) -> dict[str, Any]:
    """Checked fields of a body: the shared ones, ``expires_at`` and ``metadata``."""
    try:
        fields = read_fields(data, known=known, need_name=need_name)
    except FieldProblem as problem:
        raise bad(problem.field, problem.message) from None
    expires_at = data.get("expires_at")
    if expires_at is not None and (
        isinstance(expires_at, bool)
        or not isinstance(expires_at, int)
        or not 0 < expires_at < MAX_TIME_S
    ):
        raise bad("expires_at", "expected null or a time in Unix seconds")
    metadata = data.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise bad("metadata", "expected a JSON object")
    if len(orjson.dumps(metadata)) > MAX_METADATA_BYTES:
        raise bad("metadata", f"must be at most {MAX_METADATA_BYTES} bytes of JSON")
    return {
        "name": fields.name,
        "team": fields.team,
        "models": fields.models,
        "limits": {n: v for n, v in fields.limits.items() if v is not None},
        "budgets": {n: getattr(fields.budgets, n) for n in BUDGET_FIELDS},
        "metadata": metadata,
        "expires_at": expires_at,
    }


def editable(record: KeyRecord) -> dict[str, Any]:
    """The record's fields in body form, for a patch to be laid over."""
    budgets = record.view(0)
    return {
        "team": record.team,
        "models": None if record.models is None else list(record.models),
        **{n: record.limits.get(n) for n in LIMIT_FIELDS},
        **{n: budgets[n] for n in BUDGET_FIELDS},
        "metadata": dict(record.metadata),
        "expires_at": record.expires_at,
    }


def check_expiry(expires_at: int | None, now: float) -> None:
    if expires_at is not None and expires_at <= now:
        raise bad("expires_at", "must be in the future (revoke a key to end it now)")


def imported_digest(value: object) -> str:
    """The hex digest of an imported ``key_sha256`` (``sha256:<hex>`` or bare hex)."""
    match = _DIGEST.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise bad("key_sha256", 'expected "sha256:" and 64 hex digits')
    return match.group(1).lower()


def grace_of(body: Mapping[str, Any]) -> int:
    """A rotation body's ``grace_s`` (default 0); any other field is a 400."""
    for name in body:
        if name != "grace_s":
            raise bad(str(name)[:64], "unknown field")
    grace_s = body.get("grace_s", 0)
    if isinstance(grace_s, bool) or not isinstance(grace_s, int) or not 0 <= grace_s <= MAX_GRACE_S:
        raise bad("grace_s", f"expected a whole number of seconds from 0 to {MAX_GRACE_S}")
    return grace_s
