"""``python -m bench.redis_cost``: redis-server's instructions per request, counted by callgrind.

Wall-clock CPU per request on a shared machine moves by tens of percent between runs;
instructions do not. This starts a private ``redis-server`` under ``valgrind --tool=callgrind``
with instrumentation off, drives Sentinel's own limit store (``RedisStore``) and usage counter
sink (``RedisCounterSink``) against it, and counts only while the measured work runs:

* limits: rounds of ``--batch`` admissions of the ``policy`` key (``bench.targets``'
  ``POLICY_LIMITS``, plus its four dollar budgets with ``--budgets``) made together, each
  request a millisecond after the one before (as a busy replica's requests come), each
  round also settling the previous round's reservations, so each call carries ``--batch``
  admissions and as many settlements, as a busy replica's calls do; at one per call, the
  settlement goes alone before the next admission, as one connection's requests do;
* usage counters: batches of ``--batch`` records delivered at once.

It prints instructions per request (one admission and one settlement) and per usage record.
Needs ``valgrind`` (``callgrind_control`` comes with it) and ``redis-server`` on the PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from redis.asyncio import Redis

from bench.children import free_port
from bench.targets import BUDGETS, POLICY_LIMITS
from sentinel.config.budgets import Budgets, parse_usd
from sentinel.limits import Admission, LimitSpec, RedisStore, Reservation
from sentinel.usage.records import UsageRecord
from sentinel.usage.sinks.redis import RedisCounterSink

__all__ = ["Counted", "main", "policy_spec"]

_WARM_ROUNDS = 3
_CONTROL_WAIT_S = 10.0


@dataclass(frozen=True)
class Counted:
    """What one measurement counted."""

    what: str
    instructions: int
    units: int

    @property
    def per_unit(self) -> float:
        """Instructions per request (or per record)."""
        return self.instructions / self.units


def policy_spec(*, budgets: bool) -> LimitSpec:
    """The ``policy`` target's limits (and the ``budgets`` target's dollar budgets)."""
    limits = POLICY_LIMITS
    spec = LimitSpec(
        rpm=limits["rpm"],
        tpm=limits["tpm"],
        max_parallel=limits["max_parallel"],
        tokens_per_day=limits["tokens_per_day"],
    )
    if budgets:
        spec = replace(spec, budgets=Budgets(**{k: parse_usd(v) for k, v in BUDGETS.items()}))
    return spec


class _Callgrind:
    """A redis-server under callgrind, counting only between ``zero`` and ``dump``."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self._out = workdir / "callgrind.out"
        self._process = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={self._out}",
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = Redis(port=self.port)

    async def ready(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                await self.client.ping()
                break
            except OSError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    raise RuntimeError("redis-server under valgrind did not start") from None
                await asyncio.sleep(0.2)
        await self._control("-i", "on")

    async def count(self, work: Callable[[], Awaitable[None]]) -> int:
        """Instructions redis-server ran while ``work`` ran."""
        await self._control("-z")
        await work()
        before = set(self._out.parent.glob(f"{self._out.name}.*"))
        await self._control("-d")
        (dump,) = set(self._out.parent.glob(f"{self._out.name}.*")) - before
        found = re.search(rb"^summary: (\d+)", dump.read_bytes(), re.MULTILINE)
        if found is None:
            raise RuntimeError(f"no summary in {dump}")
        return int(found.group(1))

    async def _control(self, *args: str) -> None:
        """Ask callgrind; it answers only when redis-server runs, so keep pinging it."""
        control = await asyncio.create_subprocess_exec(
            "callgrind_control", *args, str(self._process.pid),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + _CONTROL_WAIT_S
        while control.returncode is None:
            if time.monotonic() > deadline:
                control.kill()
                raise RuntimeError(f"callgrind_control {' '.join(args)} did not answer")
            await self.client.ping()
            try:
                await asyncio.wait_for(control.wait(), 0.05)
            except TimeoutError:
                pass

    async def aclose(self) -> None:
        await self.client.aclose()
        self._process.terminate()
        self._process.wait()


async def measure_limits(
    server: _Callgrind, batch: int, rounds: int, *, budgets: bool, keys: int = 1
) -> Counted:
    """Instructions per request (admission + settlement), ``batch`` requests per call, the
    requests taking ``keys`` API keys in turn."""
    store = RedisStore(server.client, 60_000)
    spec = policy_spec(budgets=budgets)
    nano = 12_345 if budgets else 0
    start = time.time_ns() // 1_000_000
    pending: list[Reservation] = []
    made = 0

    async def one_round() -> None:
        nonlocal pending, made
        now = start + made  # a millisecond a request: time moves, as in a busy replica
        admissions = [
            Admission(f"cfg:bench-{(made + i) % keys}", f"r{made + i}", 100, nano_usd=nano)
            for i in range(batch)
        ]
        made += batch
        settles = [store.settle(r, 60, now + i, nano_usd=nano // 2) for i, r in enumerate(pending)]
        if batch == 1:  # one connection: the settlement after the reply, in a call of its own
            await asyncio.gather(*settles)
            settles = []
        decisions = await asyncio.gather(
            *(store.admit(spec, a, now + i) for i, a in enumerate(admissions)), *settles
        )
        pending = [d.reservation for d in decisions[:batch] if d.reservation is not None]  # type: ignore[union-attr]
        if len(pending) != batch:
            raise RuntimeError("an admission was refused: the limits are meant to be unreachable")

    async def work() -> None:
        for _ in range(rounds):
            await one_round()

    for _ in range(_WARM_ROUNDS):
        await one_round()
    what = "admission + settlement" + (", 4 dollar budgets" if budgets else "")
    if keys > 1:
        what += f", {keys} keys"
    return Counted(what, await server.count(work), rounds * batch)


async def measure_counters(server: _Callgrind, batch: int, rounds: int) -> Counted:
    """Instructions per usage record, delivered ``batch`` at a time."""
    sink = RedisCounterSink(server.client)
    made = 0

    async def deliver() -> None:
        nonlocal made
        await sink.deliver([_record(made + i) for i in range(batch)])
        made += batch

    async def work() -> None:
        for _ in range(rounds):
            await deliver()

    for _ in range(_WARM_ROUNDS):
        await deliver()
    return Counted("usage counters (per record)", await server.count(work), rounds * batch)


def _record(n: int) -> UsageRecord:
    return UsageRecord(
        record_id=f"rec-{n}",
        request_id=f"req-{n}",
        key="bench",
        key_id="cfg:bench",
        team=None,
        model="gpt-4o-mini",
        upstream="mock",
        endpoint="/v1/chat/completions",
        status=200,
        prompt_tokens=5,
        completion_tokens=20,
        total_tokens=25,
        cached_tokens=0,
        reasoning_tokens=0,
        source="provider",
        started_at="2026-12-07T12:00:00.000Z",
        ttfb_ms=5,
        duration_ms=10,
        request_bytes=89,
        response_bytes=934,
    )


async def run(batches: Sequence[int], rounds: int, keys: int = 1) -> list[tuple[int, Counted]]:
    """Every measurement, each batch size on a fresh server."""
    results = []
    for batch in batches:
        with tempfile.TemporaryDirectory(prefix="sentinel-redis-cost-") as workdir:
            server = _Callgrind(Path(workdir))
            try:
                await server.ready()
                count = max(1, rounds // batch)
                for budgets in (False, True):
                    counted = await measure_limits(server, batch, count, budgets=budgets)
                    results.append((batch, counted))
                if keys > 1:
                    counted = await measure_limits(server, batch, count, budgets=False, keys=keys)
                    results.append((batch, counted))
                results.append((batch, await measure_counters(server, batch, count)))
            finally:
                await server.aclose()
    return results


def render(results: Sequence[tuple[int, Counted]]) -> str:
    lines = [
        "| requests (records) per call | measured | instructions per request (record) |",
        "|---|---|---|",
    ]
    lines += [f"| {batch} | {c.what} | {c.per_unit:,.0f} |" for batch, c in results]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_cost", description=__doc__)
    parser.add_argument("--batch", default="1,8,32", help="requests per call (1,8,32)")
    parser.add_argument("--rounds", type=int, default=256, help="requests per measurement")
    parser.add_argument(
        "--keys", type=int, default=1, help="also measure requests spread over this many keys"
    )
    args = parser.parse_args(argv)
    try:
        batches = [int(b) for b in args.batch.split(",")]
    except ValueError:
        parser.error("--batch takes whole numbers, e.g. 1,8,32")
    if any(b < 1 or b > 256 for b in batches) or not 1 <= args.rounds <= 100_000:
        parser.error("--batch from 1 to 256, --rounds from 1 to 100000")
    if not 1 <= args.keys <= 100_000:
        parser.error("--keys from 1 to 100000")
    missing = [
        tool for tool in ("valgrind", "callgrind_control", "redis-server") if not shutil.which(tool)
    ]
    if missing:
        print(f"bench.redis_cost: not found on PATH: {', '.join(missing)}", file=sys.stderr)
        return 1
    print(render(asyncio.run(run(batches, args.rounds, args.keys))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
