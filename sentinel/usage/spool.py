"""A durable on-disk spool for usage batches that a sink could not take (yet).

One file per (sink, batch), named ``<sink>.<batch_id>.jsonl`` and holding the batch's records
as JSON lines. Files are written atomically (temporary file, fsync, rename, fsync of the
directory), so a crash leaves either the whole batch or nothing. Because the name depends only
on the sink and the batch's record ids, spooling the same batch twice overwrites one file
instead of creating a duplicate. Records spooled before ``record_id`` existed are read back
with their ``request_id`` as their ``record_id``, which is what their file names were derived
from, so their replays stay idempotent. Batches a sink rejected for good (a webhook's 4xx, an
unreadable file) are set aside under ``poison/``, kept for a person to inspect; moving a file
back up into the spool directory makes it eligible for replay again.

Every method blocks on the file system: async callers run them in a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sentinel.usage.records import UsageRecord, batch_id

__all__ = ["Spool", "SpoolEntry", "SpoolError"]

_SINK_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_ENTRY_NAME = re.compile(r"(?P<sink>[a-z0-9][a-z0-9_-]{0,63})\.(?P<batch>[0-9a-f]{32})\.jsonl")
_TMP_PREFIX = ".tmp-"
_STALE_TMP_S = 3600  # a temporary file this old belongs to a writer that died mid-write


class SpoolError(Exception):
    """The spool is unusable (directory not writable) or a spooled file is unreadable."""


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One spooled batch waiting for (or set aside from) one sink."""

    sink: str
    batch_id: str
    path: Path


class Spool:
    """Durable batches per sink in one directory (created with mode 0o700 if missing)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.poison_directory = directory / "poison"
        try:
            for path in (directory, self.poison_directory):
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
            _probe_writable(directory)
        except OSError as exc:
            raise SpoolError(
                f"usage spool directory {str(directory)!r} is not a writable directory: "
                f"{exc.strerror or exc}"
            ) from exc
        self._remove_stale_tmp()

    def append(
        self, sink: str, batch: Sequence[UsageRecord], *, poison: bool = False
    ) -> SpoolEntry:
        """Store ``batch`` for ``sink`` durably; the same batch again replaces its file."""
        if _SINK_NAME.fullmatch(sink) is None:
            raise ValueError(f"sink name {sink!r} cannot name a spool file")
        bid = batch_id(batch)
        folder = self.poison_directory if poison else self.directory
        target = folder / f"{sink}.{bid}.jsonl"
        data = b"".join(record.to_json() + b"\n" for record in batch)
        _write_atomically(target, data)
        return SpoolEntry(sink=sink, batch_id=bid, path=target)

    def pending(self, sink: str | None = None) -> list[SpoolEntry]:
        """Batches waiting for replay (for one sink, or all), oldest first."""
        return self._entries(self.directory, sink)

    def poisoned(self, sink: str | None = None) -> list[SpoolEntry]:
        """Batches set aside for good, oldest first."""
        return self._entries(self.poison_directory, sink)

    def load(self, entry: SpoolEntry) -> list[UsageRecord]:
        """The records of ``entry``; ``SpoolError`` if the file is unreadable or invalid.

        A record without ``record_id`` (an older version's) takes its ``request_id`` as one.

        ``FileNotFoundError`` passes through: another worker may have replayed it meanwhile.
        """
        data = entry.path.read_bytes()
        try:
            return [UsageRecord.from_json(line) for line in data.splitlines() if line.strip()]
        except ValueError as exc:
            raise SpoolError(f"spool file {entry.path.name} is invalid: {exc}") from exc

    def remove(self, entry: SpoolEntry) -> None:
        """Forget ``entry`` (its sink accepted it); already gone is fine."""
        entry.path.unlink(missing_ok=True)
        _fsync_directory(entry.path.parent)

    def set_aside(self, entry: SpoolEntry) -> SpoolEntry:
        """Move ``entry`` under ``poison/``, where replay no longer picks it up."""
        target = self.poison_directory / entry.path.name
        os.replace(entry.path, target)
        _fsync_directory(self.directory)
        _fsync_directory(self.poison_directory)
        return SpoolEntry(sink=entry.sink, batch_id=entry.batch_id, path=target)

    def _entries(self, folder: Path, sink: str | None) -> list[SpoolEntry]:
        found: list[tuple[int, str, SpoolEntry]] = []
        with os.scandir(folder) as scan:
            for item in scan:
                match = _ENTRY_NAME.fullmatch(item.name)
                if match is None or (sink is not None and match["sink"] != sink):
                    continue
                try:
                    modified = item.stat().st_mtime_ns
                except FileNotFoundError:
                    continue  # replayed and removed by another worker just now
                entry = SpoolEntry(match["sink"], match["batch"], Path(item.path))
                found.append((modified, item.name, entry))
        found.sort(key=lambda row: (row[0], row[1]))
        return [entry for _, _, entry in found]

    def _remove_stale_tmp(self) -> None:
        cutoff = time.time() - _STALE_TMP_S
        for folder in (self.directory, self.poison_directory):
            for path in folder.glob(f"{_TMP_PREFIX}*"):
                with contextlib.suppress(OSError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()


def _write_atomically(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(target.parent)


def _fsync_directory(folder: Path) -> None:
    # The rename is durable only once the directory entry itself reaches the disk.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _probe_writable(folder: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=folder)
    os.close(fd)
    os.unlink(tmp)
