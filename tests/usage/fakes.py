"""Test doubles for the usage pipeline: records, in-memory sinks, and a real webhook receiver."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from aiohttp import web

from sentinel.usage.counts import Usage
from sentinel.usage.records import UsageRecord
from sentinel.usage.sinks import DeliveryError


def make_record(
    n: int, *, key: str = "team-a", started_at: float = 1_738_326_645.123
) -> UsageRecord:
    """A distinct, realistic record whose ids and token counts depend on ``n``."""
    return UsageRecord.of(
        record_id=f"rec-{n:05d}",
        request_id=f"req-{n:05d}",
        key=key,
        key_id="cfg:" + key,
        team=None,
        model="gpt-4o-mini",
        upstream="openai",
        endpoint="/v1/chat/completions",
        status=200,
        usage=Usage(10 + n, 2 * n + 1, 11 + 3 * n, cached_tokens=n % 3, reasoning_tokens=n % 5),
        source="provider",
        started_at=started_at,
        ttfb_ms=40 + n,
        duration_ms=300 + n,
        request_bytes=500 + n,
        response_bytes=900 + n,
    )


def records(count: int, *, start: int = 0) -> list[UsageRecord]:
    """``count`` distinct records numbered from ``start``."""
    return [make_record(n) for n in range(start, start + count)]


async def eventually(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MemorySink:
    """Keeps every batch it is given; fails the first ``failures`` deliveries."""

    def __init__(self, name: str = "memory", *, failures: int = 0) -> None:
        self.name = name
        self.failures = failures
        self.batches: list[list[UsageRecord]] = []
        self.calls = 0

    async def deliver(self, batch: Sequence[UsageRecord]) -> None:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise DeliveryError(f"{self.name}: refused on purpose")
        self.batches.append(list(batch))

    @property
    def request_ids(self) -> list[str]:
        return [r.request_id for batch in self.batches for r in batch]

    @property
    def record_ids(self) -> list[str]:
        return [r.record_id for batch in self.batches for r in batch]


class GatedSink(MemorySink):
    """Holds every delivery until ``gate`` is set."""

    def __init__(self, name: str = "gated") -> None:
        super().__init__(name)
        self.gate = asyncio.Event()
        self.waiting = 0

    async def deliver(self, batch: Sequence[UsageRecord]) -> None:
        self.waiting += 1
        await self.gate.wait()
        await super().deliver(batch)


class Receiver:
    """A real aiohttp webhook receiver that stores batches, de-duplicated by ``record_id``.

    ``script`` lists how to answer successive requests (``"429"``, ``"500"``, ``"400"``,
    ``"stall"`` — store the batch, then answer only after ``release`` — or ``"ok"``); once it
    runs out every request is answered 200.
    """

    def __init__(self, script: Iterable[str] = (), retry_after: str = "1") -> None:
        self.script = deque(script)
        self.retry_after = retry_after
        self.idempotency_keys: list[str] = []
        self.answers: list[str] = []
        self.records: dict[str, dict[str, Any]] = {}
        self.copies: Counter[str] = Counter()  # record_id → times received in a stored batch
        self.release = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def start(self, port: int) -> None:
        app = web.Application()
        app.router.add_post("/usage", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        key = request.headers["Idempotency-Key"]
        assert key == body["batch_id"], "the header and the body must carry the same batch id"
        self.idempotency_keys.append(key)
        answer = self.script.popleft() if self.script else "ok"
        self.answers.append(answer)
        if answer == "429":
            return web.Response(status=429, headers={"Retry-After": self.retry_after})
        if answer in ("500", "400"):
            return web.Response(status=int(answer), text=f"answer {answer}")
        for record in body["records"]:
            self.records.setdefault(record["record_id"], record)
            self.copies[record["record_id"]] += 1
        if answer == "stall":
            await self.release.wait()
        return web.json_response({"accepted": len(body["records"])})

    def totals(self) -> dict[str, int]:
        """Token sums over the de-duplicated records."""
        return {f: sum(r[f] for r in self.records.values()) for f in TOKEN_FIELDS}


TOKEN_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
)


def expected_totals(recorded: Iterable[UsageRecord]) -> dict[str, int]:
    """Token sums over ``recorded``, as a receiver should end up with them."""
    listed = list(recorded)
    return {f: sum(getattr(r, f) for r in listed) for f in TOKEN_FIELDS}
