"""What tests ask the mock afterwards: request counts, the last requests seen, open connections.

Recording a request costs a counter bump and an append to a bounded deque; header dicts are
only built when ``/mock/requests`` asks for them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDictProxy

__all__ = ["MAX_RECORDS", "Observer", "RequestRecord"]

MAX_RECORDS = 200


@dataclass(slots=True)
class RequestRecord:
    """One request as it reached the mock; ``body_bytes`` is set once the body is read."""

    method: str
    path: str
    query: str
    headers: CIMultiDictProxy[str]
    body_bytes: int = 0

    def as_json(self) -> dict[str, Any]:
        """The record as ``/mock/requests`` shows it, header names lower-cased."""
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": {name.lower(): value for name, value in self.headers.items()},
            "body_bytes": self.body_bytes,
        }


class Observer:
    """Counters and a ring buffer of request records, plus the server's live connections."""

    def __init__(self) -> None:
        self.sequence = 0
        """Requests ever seen; unlike ``requests`` never reset, so reply ids stay unique."""
        self.requests = 0
        self.by_path: dict[str, int] = {}
        self.active_streams = 0
        self.records: deque[RequestRecord] = deque(maxlen=MAX_RECORDS)
        self.server: web.Server | None = None
        """Set by whoever runs the app, so that connections can be counted."""

    def observe(self, request: web.Request) -> RequestRecord:
        """Count and record ``request``; returns its record (its number is ``self.sequence``)."""
        self.sequence += 1
        self.requests += 1
        path = request.path
        self.by_path[path] = self.by_path.get(path, 0) + 1
        record = RequestRecord(request.method, path, request.query_string, request.headers)
        self.records.append(record)
        return record

    def last(self, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` records, oldest first."""
        records = list(self.records)[-limit:] if limit else []
        return [record.as_json() for record in records]

    def stats(self, asking: object) -> dict[str, Any]:
        """Totals, and connections open other than ``asking`` (the stats request's own)."""
        connections = self.server.connections if self.server is not None else []
        return {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "open_connections": sum(1 for c in connections if c is not asking),
            "active_streams": self.active_streams,
        }

    def reset(self) -> None:
        """Forget every count and record (open connections are live state, not history)."""
        self.requests = 0
        self.by_path.clear()
        self.records.clear()
