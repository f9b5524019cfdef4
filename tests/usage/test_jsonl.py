"""The JSONL sink: one line per record, rotation by size, bounded history."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sentinel.usage.records import UsageRecord
from sentinel.usage.sinks import DeliveryError
from sentinel.usage.sinks.jsonl import JsonlSink
from tests.usage.fakes import records


def _lines(path: Path) -> list[UsageRecord]:
    return [UsageRecord.from_json(line) for line in path.read_bytes().splitlines()]


async def test_appends_one_line_per_record(tmp_path: Path) -> None:
    """Batches are appended in order, one JSON object per line, parent folders created."""
    path = tmp_path / "logs" / "usage.jsonl"
    sink = JsonlSink(path)
    await sink.deliver(records(2))
    await sink.deliver(records(3, start=2))
    assert _lines(path) == records(5)
    assert all(orjson.loads(line) for line in path.read_bytes().splitlines())


async def test_rotates_by_size_and_keeps_the_newest(tmp_path: Path) -> None:
    """Past rotate_bytes the file moves to .1, .1 to .2, and the oldest beyond keep is gone."""
    path = tmp_path / "usage.jsonl"
    line_bytes = len(records(1)[0].to_json()) + 1
    sink = JsonlSink(path, rotate_bytes=2 * line_bytes + 10, keep=2)
    for n in range(7):  # two records fit a file, so batches of one rotate every second one
        await sink.deliver(records(1, start=n))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "usage.jsonl",
        "usage.jsonl.1",
        "usage.jsonl.2",
    ]
    assert _lines(path) == records(1, start=6)
    assert _lines(tmp_path / "usage.jsonl.1") == records(2, start=4)
    assert _lines(tmp_path / "usage.jsonl.2") == records(2, start=2)
    for file in tmp_path.iterdir():
        assert file.stat().st_size <= sink.rotate_bytes


async def test_batches_are_never_split_across_files(tmp_path: Path) -> None:
    """A batch larger than rotate_bytes lands whole in a fresh file."""
    path = tmp_path / "usage.jsonl"
    sink = JsonlSink(path, rotate_bytes=10, keep=1)
    await sink.deliver(records(1))
    await sink.deliver(records(3, start=1))
    assert _lines(path) == records(3, start=1)
    assert _lines(tmp_path / "usage.jsonl.1") == records(1)


async def test_keep_zero_keeps_no_history(tmp_path: Path) -> None:
    """With keep=0 a full file is discarded instead of rotated."""
    path = tmp_path / "usage.jsonl"
    sink = JsonlSink(path, rotate_bytes=10, keep=0)
    await sink.deliver(records(1))
    await sink.deliver(records(1, start=1))
    assert [p.name for p in tmp_path.iterdir()] == ["usage.jsonl"]
    assert _lines(path) == records(1, start=1)


async def test_unwritable_path_is_a_delivery_error(tmp_path: Path) -> None:
    """A path that cannot be written raises DeliveryError, so the tracker spools the batch."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DeliveryError, match="cannot write"):
        await JsonlSink(blocker / "usage.jsonl").deliver(records(1))
