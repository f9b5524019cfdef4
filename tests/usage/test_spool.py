"""The on-disk spool: atomic per-(sink, batch) files, replay order, poison, and bad directories."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sentinel.usage.records import batch_id
from sentinel.usage.spool import Spool, SpoolEntry, SpoolError
from tests.usage.fakes import records


def test_directory_is_created_private(spool_dir: Path) -> None:
    """A missing spool directory is created with mode 0o700."""
    Spool(spool_dir)
    assert spool_dir.is_dir()
    assert stat.S_IMODE(spool_dir.stat().st_mode) == 0o700


def test_unwritable_directory_fails_clearly(tmp_path: Path) -> None:
    """A spool path that cannot be a writable directory raises SpoolError naming it."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolError, match="not a writable directory") as info:
        Spool(blocker / "spool")
    assert str(blocker / "spool") in str(info.value)


def test_append_load_remove_round_trip(spool: Spool) -> None:
    """A spooled batch loads back equal and is gone once removed."""
    batch = records(3)
    entry = spool.append("webhook", batch)
    assert entry == SpoolEntry("webhook", batch_id(batch), entry.path)
    assert entry.path.name == f"webhook.{batch_id(batch)}.jsonl"
    assert spool.pending() == [entry]
    assert spool.load(entry) == batch
    spool.remove(entry)
    assert spool.pending() == []
    spool.remove(entry)  # twice is fine: another worker may have removed it


def test_same_batch_twice_is_one_file(spool: Spool) -> None:
    """Spooling a batch again (any order) overwrites its file instead of duplicating it."""
    batch = records(3)
    spool.append("webhook", batch)
    spool.append("webhook", list(reversed(batch)))
    assert len(spool.pending()) == 1


def test_files_are_written_atomically(spool: Spool) -> None:
    """No temporary file is left behind and spool files are private to the owner."""
    entry = spool.append("jsonl", records(2))
    names = os.listdir(spool.directory)
    assert sorted(names) == sorted(["poison", entry.path.name])
    assert stat.S_IMODE(entry.path.stat().st_mode) == 0o600


def test_pending_is_per_sink_and_oldest_first(spool: Spool) -> None:
    """pending() filters by sink and lists the oldest batch first."""
    first = spool.append("webhook", records(1, start=0))
    other = spool.append("redis", records(1, start=1))
    second = spool.append("webhook", records(1, start=2))
    os.utime(first.path, ns=(1_000, 1_000))
    os.utime(other.path, ns=(2_000, 2_000))
    os.utime(second.path, ns=(3_000, 3_000))
    assert spool.pending("webhook") == [first, second]
    assert spool.pending() == [first, other, second]


def test_poison_is_kept_apart(spool: Spool) -> None:
    """Poison batches are listed by poisoned(), never by pending()."""
    poison = spool.append("webhook", records(2), poison=True)
    assert spool.pending() == []
    assert spool.poisoned() == [poison]
    assert spool.load(poison) == records(2)


def test_set_aside_moves_an_entry_to_poison(spool: Spool) -> None:
    """set_aside() takes a batch out of replay and keeps it under poison/."""
    entry = spool.append("webhook", records(2))
    moved = spool.set_aside(entry)
    assert spool.pending() == []
    assert spool.poisoned() == [moved]
    assert moved.path.parent == spool.poison_directory


def test_invalid_file_is_a_spool_error(spool: Spool) -> None:
    """A damaged spool file raises SpoolError instead of yielding bad records."""
    entry = spool.append("webhook", records(1))
    entry.path.write_bytes(b'{"request_id": "half a rec')
    with pytest.raises(SpoolError, match="invalid"):
        spool.load(entry)


def test_unrelated_files_are_ignored(spool: Spool) -> None:
    """Files that are not spool entries (notes, temporaries) are never replayed."""
    (spool.directory / "README").write_text("x")
    (spool.directory / ".tmp-abc").write_text("x")
    (spool.directory / "Bad Name.0123.jsonl").write_text("x")
    assert spool.pending() == []


def test_stale_temporary_files_are_cleaned(spool_dir: Path) -> None:
    """A temporary file left by a writer that died long ago is removed on open."""
    Spool(spool_dir)
    stale = spool_dir / ".tmp-dead"
    fresh = spool_dir / ".tmp-live"
    stale.write_text("x")
    fresh.write_text("x")
    os.utime(stale, (0, 0))
    Spool(spool_dir)
    assert not stale.exists()
    assert fresh.exists()


def test_sink_names_must_be_file_safe(spool: Spool) -> None:
    """A sink name that could escape the directory is refused."""
    with pytest.raises(ValueError, match="sink name"):
        spool.append("../evil", records(1))
