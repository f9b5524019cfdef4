"""A real usage-webhook receiver whose behaviour a test switches while Sentinel delivers to it.

It answers every POST according to its current ``mode``: ``"429"`` (with ``Retry-After``),
``"500"``, ``"stall"`` (take the batch, then answer only after ``stall_s``, longer than the
sender's timeout, so the sender retries a batch the receiver already has) or ``"ok"``. Records
are kept de-duplicated by ``record_id``, as a real receiver would; ``copies`` counts how often
each one arrived in a batch that the receiver took.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Literal

import orjson
from aiohttp import web

from sentinel.usage.records import UsageRecord
from tests.support.loopback import LoopbackSite

__all__ = ["TOKEN_FIELDS", "Mode", "WebhookReceiver"]

Mode = Literal["429", "500", "stall", "ok"]

TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


class WebhookReceiver:
    """An aiohttp server on ``127.0.0.1:port``; not listening until ``start()``."""

    def __init__(self, port: int, *, mode: Mode = "ok", stall_s: float = 1.0) -> None:
        self.port = port
        self.mode: Mode = mode
        self.stall_s = stall_s
        self.answers: Counter[Mode] = Counter()
        self.answered_at: dict[Mode, list[float]] = {}  # mode → time.monotonic() of each request
        self.records: dict[str, UsageRecord] = {}  # by record_id
        self.copies: Counter[str] = Counter()
        self.idempotency_keys: Counter[str] = Counter()
        self._site = LoopbackSite(
            port, lambda app: app.router.add_post("/usage", self._handle), shutdown_timeout=1.0
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/usage"

    async def start(self) -> None:
        await self._site.start()

    async def stop(self) -> None:
        await self._site.stop()

    @property
    def request_ids(self) -> list[str]:
        """The de-duplicated records' request ids, sorted (a client's may repeat)."""
        return sorted(record.request_id for record in self.records.values())

    @property
    def duplicates(self) -> int:
        """Copies of records received beyond the first (allowed; never counted twice)."""
        return sum(self.copies.values()) - len(self.copies)

    def totals(self) -> dict[str, int]:
        """Token sums over the de-duplicated records."""
        return {f: sum(getattr(r, f) for r in self.records.values()) for f in TOKEN_FIELDS}

    async def _handle(self, request: web.Request) -> web.Response:
        mode = self.mode
        self.answers[mode] += 1
        self.answered_at.setdefault(mode, []).append(time.monotonic())
        if mode == "429":
            return web.Response(status=429, headers={"Retry-After": "1"})
        if mode == "500":
            return web.Response(status=500, text="receiver is broken (on purpose)")
        body = orjson.loads(await request.read())
        key = request.headers["Idempotency-Key"]
        assert key == body["batch_id"], "header and body must carry the same batch id"
        self.idempotency_keys[key] += 1
        for raw in body["records"]:
            record = UsageRecord.from_dict(raw)
            self.records.setdefault(record.record_id, record)
            self.copies[record.record_id] += 1
        if mode == "stall":
            await asyncio.sleep(self.stall_s)  # the sender gave up long ago: its ack is lost
        return web.json_response({"accepted": len(body["records"])})
