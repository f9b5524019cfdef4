"""A sink appending one JSON line per record to a file, rotated by size (file → file.1 → …).

File I/O runs in a worker thread so the event loop never waits on the disk. One batch is written
at a time: an ``asyncio.Lock`` queues deliveries without holding threads, and a thread lock keeps
a write whose awaiting task was cancelled from overlapping the next one.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from sentinel.usage.records import UsageRecord
from sentinel.usage.sinks import DeliveryError

__all__ = ["JsonlSink"]


class JsonlSink:
    """Appends records to ``path``; past ``rotate_bytes`` the file moves to ``path.1``.

    At most ``keep`` rotated files are kept (``keep=0`` keeps none). A batch is never split
    across files, so a file exceeds ``rotate_bytes`` only when a single batch does. Delivery is
    at-least-once: a batch replayed after a failure may appear twice, with the same
    ``record_id``s, for readers to de-duplicate by (``request_id`` may repeat: it is the
    client's ``x-request-id``).
    """

    def __init__(
        self,
        path: Path,
        *,
        rotate_bytes: int = 100 * 1024 * 1024,
        keep: int = 5,
        name: str = "jsonl",
    ) -> None:
        if rotate_bytes < 1 or keep < 0:
            raise ValueError("rotate_bytes must be >= 1 and keep >= 0")
        self.path = path
        self.rotate_bytes = rotate_bytes
        self.keep = keep
        self._name = name
        self._queue_lock = asyncio.Lock()
        self._file_lock = threading.Lock()

    @property
    def name(self) -> str:
        """The sink's name in logs, metrics and the spool."""
        return self._name

    async def deliver(self, batch: Sequence[UsageRecord]) -> None:
        """Append ``batch`` (rotating first if it would not fit) and fsync the file."""
        data = b"\n".join([record.to_json() for record in batch]) + b"\n" if batch else b""
        async with self._queue_lock:
            try:
                await asyncio.to_thread(self._write, data)
            except OSError as exc:
                raise DeliveryError(f"{self._name}: cannot write {self.path}: {exc}") from exc

    def _write(self, data: bytes) -> None:
        with self._file_lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size > 0 and size + len(data) > self.rotate_bytes:
                self._rotate()
            with self.path.open("ab") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())

    def _rotate(self) -> None:
        if self.keep == 0:
            self.path.unlink()
            return
        self._numbered(self.keep).unlink(missing_ok=True)
        for number in range(self.keep - 1, 0, -1):
            older = self._numbered(number)
            if older.exists():
                older.replace(self._numbered(number + 1))
        self.path.replace(self._numbered(1))

    def _numbered(self, number: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{number}")
