"""Usage records: construction, JSON form, validation of what comes back, and batch ids."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import orjson
import pytest

from sentinel.usage import records as records_module
from sentinel.usage.counts import Usage
from sentinel.usage.records import Source, UsageRecord, batch_id, format_started_at
from tests.usage.fakes import make_record, records


def test_public_api() -> None:
    """The module exports exactly its documented names."""
    assert sorted(records_module.__all__) == [
        "SOURCES",
        "Source",
        "UsageRecord",
        "batch_id",
        "format_started_at",
    ]


def test_started_at_is_iso_utc_with_milliseconds() -> None:
    """Epoch seconds render as ISO-8601 UTC with exactly three fraction digits and a Z."""
    assert format_started_at(1_738_326_645.1234) == "2025-01-31T12:30:45.123Z"
    assert format_started_at(0) == "1970-01-01T00:00:00.000Z"


def test_record_serialises_to_one_json_object_with_every_field() -> None:
    """The JSON form carries all twenty-one fields, in order, on one line."""
    data = make_record(7).to_json()
    assert b"\n" not in data
    obj = orjson.loads(data)
    assert list(obj) == [
        "record_id",
        "request_id",
        "key",
        "key_id",
        "team",
        "model",
        "upstream",
        "endpoint",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cached_tokens",
        "reasoning_tokens",
        "source",
        "started_at",
        "ttfb_ms",
        "duration_ms",
        "request_bytes",
        "response_bytes",
        "cost_usd",
    ]
    assert (obj["record_id"], obj["request_id"]) == ("rec-00007", "req-00007")
    assert obj["started_at"] == "2025-01-31T12:30:45.123Z"


def test_round_trip() -> None:
    """A record read back from its JSON equals the original."""
    for record in records(5):
        assert UsageRecord.from_json(record.to_json()) == record


def test_no_usage_means_source_none_and_zero_counts() -> None:
    """Without usage the record counts nothing and says so; a mismatch is refused."""
    record = UsageRecord.of(
        record_id="rec",
        request_id="r",
        key="k",
        key_id="cfg:k",
        team=None,
        model="",
        upstream="",
        endpoint="/v1/files",
        status=401,
        usage=None,
        source="none",
        started_at=0,
        ttfb_ms=None,
        duration_ms=1,
        request_bytes=0,
        response_bytes=120,
    )
    assert (record.prompt_tokens, record.total_tokens, record.ttfb_ms) == (0, 0, None)
    assert UsageRecord.from_json(record.to_json()) == record
    with pytest.raises(ValueError, match="does not fit"):
        _record(usage=None, source="provider")
    with pytest.raises(ValueError, match="does not fit"):
        _record(usage=Usage(1, 1, 2), source="none")


def _record(usage: Usage | None, source: Source) -> UsageRecord:
    return UsageRecord.of(
        record_id="rec",
        request_id="r",
        key="k",
        key_id="cfg:k",
        team=None,
        model="m",
        upstream="u",
        endpoint="/v1/chat/completions",
        status=200,
        usage=usage,
        source=source,
        started_at=0,
        ttfb_ms=1,
        duration_ms=1,
        request_bytes=1,
        response_bytes=1,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("record_id", 5),
        ("record_id", ""),
        ("record_id", None),
        ("request_id", 5),
        ("prompt_tokens", -1),
        ("prompt_tokens", True),
        ("total_tokens", 1.5),
        ("status", "200"),
        ("source", "guessed"),
        ("started_at", "yesterday"),
        ("started_at", "2025-01-31T12:30:45.123+02:00"),
        ("ttfb_ms", "fast"),
    ],
)
def test_invalid_fields_are_refused(field: str, value: object) -> None:
    """A record read back with a wrong type, range or enum value is a ValueError naming it."""
    obj = orjson.loads(make_record(1).to_json())
    obj[field] = value
    with pytest.raises(ValueError, match=field):
        UsageRecord.from_json(orjson.dumps(obj))


def test_missing_field_and_non_object_are_refused() -> None:
    """A record missing a field, or JSON that is not an object, is refused."""
    obj = orjson.loads(make_record(1).to_json())
    del obj["duration_ms"]
    with pytest.raises(ValueError, match="duration_ms"):
        UsageRecord.from_json(orjson.dumps(obj))
    with pytest.raises(ValueError, match="object"):
        UsageRecord.from_json(b"[1, 2]")


def test_unknown_fields_are_ignored() -> None:
    """A spool written by a newer version (extra fields) still loads."""
    obj = orjson.loads(make_record(1).to_json())
    obj["region"] = "eu"
    assert UsageRecord.from_json(orjson.dumps(obj)) == make_record(1)


def test_record_without_record_id_takes_its_request_id() -> None:
    """A record spooled before ``record_id`` existed reads back with its request id as one."""
    obj = orjson.loads(make_record(3).to_json())
    del obj["record_id"]
    record = UsageRecord.from_json(orjson.dumps(obj))
    assert record == replace(make_record(3), record_id="req-00003")
    assert orjson.loads(record.to_json())["record_id"] == "req-00003"


def test_batch_id_depends_only_on_the_set_of_record_ids() -> None:
    """Order and duplicates do not change a batch id; another set does."""
    batch = records(4)
    assert batch_id(batch) == batch_id(list(reversed(batch))) == batch_id([*batch, batch[0]])
    assert batch_id(batch) != batch_id(batch[:3])
    assert len(batch_id(batch)) == 32


def test_batch_id_ignores_request_ids() -> None:
    """Records sharing a client's request id are distinct in a batch id; request ids are not
    part of it."""
    batch = records(2)
    same_request = [replace(r, request_id="client-retry-7") for r in batch]
    assert batch_id(same_request) == batch_id(batch)
    assert batch_id(same_request) != batch_id(same_request[:1])


def test_batch_id_of_old_records_is_the_one_older_versions_derived() -> None:
    """Without record ids, a batch keeps the id older versions derived from its request ids
    (their spool file names and Idempotency-Keys), so replays de-duplicate across the upgrade."""
    batch = [replace(r, record_id=r.request_id) for r in records(3)]
    ids = sorted(r.request_id for r in batch)
    assert batch_id(batch) == hashlib.sha256(orjson.dumps(ids)).hexdigest()[:32]


def test_a_record_spooled_before_key_ids_gets_its_config_id() -> None:
    """A spooled record without ``key_id`` (written before it existed) takes ``cfg:<key>``."""
    obj = orjson.loads(make_record(3).to_json())
    del obj["key_id"], obj["team"]
    record = UsageRecord.from_dict(obj)
    assert record.key_id == f"cfg:{record.key}" and record.team is None
