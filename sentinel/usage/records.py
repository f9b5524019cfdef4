"""One usage record per request, as every sink and the spool store it: one JSON object.

``record_id`` is the idempotency key all the way down: it is unique per record, the webhook
receiver and the Redis counters de-duplicate by it, and a batch's ``batch_id`` is derived from
the set of its ``record_id`` values, so a batch replayed from the spool carries the same key as
the first try. ``request_id`` is the ``x-request-id`` the response carried (the client's own when
it sent one), for joining records with the client's logs; a client may repeat it.

Records spooled by versions before ``record_id`` existed have none: read back, they take their
``request_id`` (which those versions made unique) as their ``record_id``, so their replays
de-duplicate against what those versions already delivered.

``UsageRecord`` is built for every request: a slotted dataclass that is not frozen (a frozen
one sets each field through ``object.__setattr__``, several times slower to build); it is never
changed once built, and hashes by value (``unsafe_hash``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, get_args

import orjson

from sentinel.timestamps import utc_second
from sentinel.usage.counts import Usage

__all__ = ["SOURCES", "Source", "UsageRecord", "batch_id", "format_started_at"]

Source = Literal["provider", "estimated", "none"]
SOURCES: frozenset[str] = frozenset(get_args(Source))

_TEXT_FIELDS = ("request_id", "key", "model", "upstream", "endpoint", "started_at")
_COUNT_FIELDS = (
    "status",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "duration_ms",
    "request_bytes",
    "response_bytes",
)


def format_started_at(epoch_s: float) -> str:
    """``epoch_s`` as ISO-8601 UTC with milliseconds: ``2025-01-31T12:30:45.123Z``."""
    seconds, millis = divmod(int(epoch_s * 1000), 1000)
    return f"{utc_second(seconds)}.{millis:03d}Z"


@dataclass(slots=True, unsafe_hash=True)  # built per request: see the module doc
class UsageRecord:
    """What one request cost and how it went; ``ttfb_ms`` is None when no byte ever came back."""

    record_id: str
    request_id: str
    key: str
    key_id: str  # the key's stable id (cfg:<name> for the config file's keys)
    team: str | None
    model: str
    upstream: str
    endpoint: str
    status: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    source: Source
    started_at: str
    ttfb_ms: int | None
    duration_ms: int
    request_bytes: int
    response_bytes: int
    cost_usd: str | None = None  # exact decimal USD (sentinel.money); None: the model has no price

    @classmethod
    def of(
        cls,
        *,
        record_id: str,
        request_id: str,
        key: str,
        key_id: str,
        team: str | None,
        model: str,
        upstream: str,
        endpoint: str,
        status: int,
        usage: Usage | None,
        source: Source,
        started_at: float,
        ttfb_ms: int | None,
        duration_ms: int,
        request_bytes: int,
        response_bytes: int,
        cost_usd: str | None = None,
    ) -> UsageRecord:
        """Build a record from the request path's values; ``started_at`` is epoch seconds.

        ``usage`` is None exactly when ``source`` is ``"none"`` (nothing was counted, e.g. a
        request refused before it reached an upstream); the counts are then zero.
        """
        if (usage is None) != (source == "none"):
            raise ValueError(f"usage {usage!r} does not fit source {source!r}")
        counts = usage or Usage(0, 0, 0)
        return cls(  # positional: measurably cheaper than 20 keywords on the request path
            record_id,
            request_id,
            key,
            key_id,
            team,
            model,
            upstream,
            endpoint,
            status,
            counts.prompt_tokens,
            counts.completion_tokens,
            counts.total_tokens,
            counts.cached_tokens,
            counts.reasoning_tokens,
            source,
            format_started_at(started_at),
            ttfb_ms,
            duration_ms,
            request_bytes,
            response_bytes,
            cost_usd,
        )

    def to_json(self) -> bytes:
        """The record as one compact JSON object (no trailing newline)."""
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> UsageRecord:
        """Parse one serialised record; ``ValueError`` if it is not a valid one."""
        obj = orjson.loads(data)
        if not isinstance(obj, dict):
            raise ValueError("usage record: expected a JSON object")
        return cls.from_dict(obj)

    @classmethod
    def from_dict(cls, obj: Mapping[str, object]) -> UsageRecord:
        """Validate and build a record from its JSON form; unknown fields are ignored.

        Spool files outlive the process that wrote them, so nothing read back is trusted. A
        record without ``record_id`` (written before it existed) takes its ``request_id``.
        """
        for name in _TEXT_FIELDS:
            if not isinstance(obj.get(name), str):
                raise ValueError(f"usage record: {name}: expected a string")
        for name in _COUNT_FIELDS:
            if not _is_count(obj.get(name)):
                raise ValueError(f"usage record: {name}: expected a non-negative integer")
        ttfb = obj.get("ttfb_ms")
        if ttfb is not None and not _is_count(ttfb):
            raise ValueError("usage record: ttfb_ms: expected a non-negative integer or null")
        if not _is_utc_timestamp(obj["started_at"]):
            raise ValueError("usage record: started_at: expected an ISO-8601 UTC timestamp")
        if obj.get("source") not in SOURCES:
            raise ValueError(f"usage record: source: expected one of {sorted(SOURCES)}")
        record_id = obj.get("record_id", obj["request_id"])
        if not isinstance(record_id, str) or not record_id:
            raise ValueError("usage record: record_id: expected a non-empty string")
        # Records written before keys had ids: a config key's id is cfg:<name>.
        key_id = obj.get("key_id", f"cfg:{obj['key']}")
        if not isinstance(key_id, str) or not key_id:
            raise ValueError("usage record: key_id: expected a non-empty string")
        team = obj.get("team")
        if team is not None and not isinstance(team, str):
            raise ValueError("usage record: team: expected a string or null")
        cost = obj.get("cost_usd")  # absent in records written before prices existed
        if cost is not None and not (isinstance(cost, str) and _COST.fullmatch(cost)):
            raise ValueError("usage record: cost_usd: expected a decimal string or null")
        values = {f.name: obj.get(f.name) for f in dataclasses.fields(cls)}
        values["record_id"] = record_id
        values["key_id"] = key_id
        return cls(**values)  # type: ignore[arg-type]  # every field was checked above


_COST = re.compile(r"\d{1,16}(?:\.\d{1,15})?")


def _is_count(value: object) -> bool:
    # ``type(...) is int`` rejects bools, which are ints to isinstance.
    return type(value) is int and value >= 0


def _is_utc_timestamp(value: object) -> bool:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return False
    return parsed.utcoffset() == timedelta(0)


def batch_id(records: Iterable[UsageRecord]) -> str:
    """A key for a batch that depends only on the *set* of its record ids (order ignored)."""
    ids = sorted({r.record_id for r in records})
    return hashlib.sha256(orjson.dumps(ids)).hexdigest()[:32]
