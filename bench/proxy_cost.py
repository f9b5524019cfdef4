"""``python -m bench.proxy_cost``: a proxy's instructions per request, counted by callgrind.

Wall-clock CPU per request on a shared machine moves by tens of percent between runs;
instructions do not, so this is how two targets (``budgets`` against ``policy``), or two
versions of the code, are compared. For each target and scenario it starts the mock upstream
and, for a target that keeps usage, a private ``redis-server`` (as ``python -m bench`` does),
then ``sentinel serve`` (``bench.passthrough`` for ``bare`` and ``bare-headers``) under
``valgrind --tool=callgrind`` on the proxy's core, and:

* warms the proxy up with the scenario's own requests;
* counts its instructions while idle for ``--idle`` seconds (the watchdog, the breakers'
  sync and the store's recovery probe tick however slow the proxy runs, and under valgrind a
  proxy serves only a few dozen requests a second, so this weighs on each request);
* counts its instructions while ``--requests`` requests run over the scenario's connections,
  and subtracts the idle rate over that time.

It prints instructions per request, and each target's against the first one's. Under
valgrind a Redis call can take longer than the default ``[redis] timeout_ms``; the targets'
configs get 3 s instead, so the store never degrades (its fallback would refuse a budgeted
key's requests, 402, having seen none of its money). Needs ``valgrind`` and
``callgrind_control``; the targets that keep usage need ``redis-server`` too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench.children import Child, ChildError, CpuPlan, free_port, python_argv
from bench.http1 import ResponseParser
from bench.scenarios import KINDS, build_request
from bench.targets import (
    accounting_config,
    budgets_config,
    policy_config,
    sentinel_config,
    start_mock,
    start_redis,
    usage_dir,
)

__all__ = ["TARGETS", "Measured", "config_of", "main", "proxy_argv", "render"]

_KEEPING: dict[str, Callable[[str, str, str, Path], str]] = {
    "accounting": accounting_config,
    "policy": policy_config,
    "budgets": budgets_config,
}
_BARE = ("bare", "bare-headers")
TARGETS = (*_BARE, "sentinel", *_KEEPING)
"""The targets this counts: the bare pass-through (``bench.passthrough`` on the same engine,
the floor that issue 18's "own CPU" is measured against), the same adding the headers Sentinel
adds to a policy key's answer (``--policy-headers``: what the engine alone charges for them),
the gateway, and the ones keeping usage in Redis."""

_ENGINES = ("hypercorn", "uvicorn")
_REDIS_TIMEOUT_MS = 3000
_READY_S = 300.0  # imports and encodings, under valgrind
_CONTROL_S = 60.0
_WARM_REQUESTS = 64


@dataclass(frozen=True)
class Measured:
    """One target's count in one scenario."""

    target: str
    scenario: str
    requests: int
    busy: int
    """Instructions while the requests ran."""
    seconds: float
    """How long they ran."""
    idle_per_s: float
    """Instructions per second of the idle proxy."""

    @property
    def per_request(self) -> float:
        """Instructions per request, the idle proxy's subtracted."""
        return (self.busy - self.idle_per_s * self.seconds) / self.requests


def config_of(
    target: str, engine: str, upstream: str, bind: str, redis_url: str, work: Path
) -> str:
    """``target``'s config as ``python -m bench`` writes it, on ``engine``, with a Redis timeout
    that a proxy under valgrind keeps."""
    if target == "sentinel":
        return sentinel_config(upstream, bind, engine)
    text = _KEEPING[target](upstream, bind, redis_url, usage_dir(work, target))
    text = text.replace('engine = "hypercorn"', f'engine = "{engine}"', 1)
    return text.replace("[redis]\n", f"[redis]\ntimeout_ms = {_REDIS_TIMEOUT_MS}\n", 1)


def proxy_argv(
    target: str, engine: str, upstream: str, bind: str, work: Path, redis_url: str
) -> list[str]:
    """The command serving ``target``: ``bench.passthrough`` for the bare ones, otherwise
    ``sentinel serve`` with the target's config written into ``work``."""
    if target in _BARE:
        extra = ["--policy-headers"] if target == "bare-headers" else []
        return python_argv(
            "bench.passthrough", "--bind", bind, "--upstream", upstream, "--engine", engine, *extra
        )
    config = work / f"{target}.toml"
    config.write_text(config_of(target, engine, upstream, bind, redis_url, work))
    return python_argv("sentinel", "serve", "--config", str(config), "--bind", bind)


class _Counted:
    """A proxy under callgrind, counting only between ``zero`` and ``dump``."""

    def __init__(self, proxy: Sequence[str], work: Path, cpus: frozenset[int] | None) -> None:
        self._out = work / "callgrind.out"
        argv = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={self._out}",
            *proxy,
        ]
        self.child = Child("proxy under callgrind", argv, work / "proxy.log", cpus)

    def control(self, *args: str) -> None:
        subprocess.run(
            ["callgrind_control", *args, str(self.child.pid)],
            capture_output=True,
            timeout=_CONTROL_S,
            check=True,
        )

    def count(self, work: Callable[[], None]) -> tuple[int, float]:
        """Instructions the proxy ran while ``work`` ran, and for how many seconds."""
        self.control("-z")
        started = time.monotonic()
        work()
        seconds = time.monotonic() - started
        before = set(self._out.parent.glob(f"{self._out.name}.*"))
        self.control("-d")
        (dump,) = set(self._out.parent.glob(f"{self._out.name}.*")) - before
        found = re.search(rb"^summary: (\d+)", dump.read_bytes(), re.MULTILINE)
        if found is None:
            raise RuntimeError(f"no summary in {dump}")
        return int(found.group(1)), seconds


def _drive(port: int, kind: str, connections: int, requests: int) -> None:
    """Send ``requests`` requests of ``kind`` over ``connections`` keep-alive connections;
    any answer but 200 is an error (a proxy refusing would be counted as serving)."""
    request = build_request(kind, "127.0.0.1", port)

    async def one(count: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(count):
                parser = ResponseParser()
                writer.write(request)
                while not parser.feed(await reader.read(65536)):
                    pass
                if parser.status != 200:
                    raise RuntimeError(f"the proxy answered {parser.status}: see its log")
        finally:
            writer.close()

    async def all_of() -> None:
        share, extra = divmod(requests, connections)
        await asyncio.gather(*(one(share + (i < extra)) for i in range(connections)))

    asyncio.run(all_of())


def measure(target: str, engine: str, scenario: str, requests: int, idle_s: float) -> Measured:
    """Count ``target`` in ``scenario`` (``kind/connections``) from a fresh start."""
    kind, connections = _scenario(scenario)
    cpus = CpuPlan.for_cpus(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="sentinel-proxy-cost-") as name, ExitStack() as stack:
        work = Path(name)
        mock = start_mock(work, cpus.mock)
        stack.callback(mock.child.stop)
        redis_url = ""
        if target in _KEEPING:
            redis = start_redis(work, cpus.mock)
            stack.callback(redis.child.stop)
            redis_url = redis.redis_url
        port = free_port()
        bind = f"127.0.0.1:{port}"
        argv = proxy_argv(target, engine, mock.base_url, bind, work, redis_url)
        proxy = _Counted(argv, work, cpus.proxy)
        stack.callback(proxy.child.stop)
        try:
            proxy.child.wait_ready(port, "/healthz", _READY_S)
        except ChildError as error:
            raise ChildError(f"{error}\n{proxy.child.log_tail()}") from None
        proxy.control("-i", "on")
        _drive(port, kind, connections, max(_WARM_REQUESTS, connections))
        idle, idle_seconds = proxy.count(lambda: time.sleep(idle_s))
        busy, seconds = proxy.count(lambda: _drive(port, kind, connections, requests))
        return Measured(target, scenario, requests, busy, seconds, idle / idle_seconds)


def _scenario(text: str) -> tuple[str, int]:
    kind, _, connections = text.partition("/")
    if kind not in KINDS or not connections.isdigit() or not 1 <= int(connections) <= 64:
        raise ValueError(f"a scenario is KIND/CONNECTIONS (KIND: {', '.join(KINDS)}), not {text!r}")
    return kind, int(connections)


def render(engine: str, results: Sequence[Measured]) -> str:
    """A markdown table: instructions per request, and against the first target's."""
    baseline = results[0].target if results else "the first"
    lines = [
        f"| target ({engine}) | scenario | requests | instructions per request | "
        f"against {baseline} |",
        "|---|---|---|---|---|",
    ]
    first: dict[str, float] = {}
    for result in results:
        base = first.setdefault(result.scenario, result.per_request)
        lines.append(
            f"| {result.target} | {result.scenario} | {result.requests} | "
            f"{result.per_request:,.0f} | {result.per_request / base - 1:+.1%} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.proxy_cost", description=__doc__)
    parser.add_argument("--targets", default="policy,budgets", help="first is the baseline")
    parser.add_argument("--scenarios", default="json/16,stream/16", help="KIND/CONNECTIONS,...")
    parser.add_argument("--engine", default="hypercorn", choices=_ENGINES)
    parser.add_argument("--requests", type=int, default=640, help="requests counted per run")
    parser.add_argument("--idle", type=float, default=8.0, help="seconds of idle counted")
    args = parser.parse_args(argv)
    targets = args.targets.split(",")
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}: choose from {', '.join(TARGETS)}")
    scenarios = args.scenarios.split(",")
    try:
        for scenario in scenarios:
            _scenario(scenario)
    except ValueError as error:
        parser.error(str(error))
    if not 1 <= args.requests <= 100_000 or not 0.5 <= args.idle <= 120:
        parser.error("--requests from 1 to 100000, --idle from 0.5 to 120 seconds")
    needed = ["valgrind", "callgrind_control"]
    if any(t in _KEEPING for t in targets):
        needed.append("redis-server")
    missing = [tool for tool in needed if not shutil.which(tool)]
    if missing:
        print(f"bench.proxy_cost: not found on PATH: {', '.join(missing)}", file=sys.stderr)
        return 1
    results = [
        measure(target, args.engine, scenario, args.requests, args.idle)
        for scenario in scenarios
        for target in targets
    ]
    print(render(args.engine, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
