"""``python -m bench.profile``: where a proxy's CPU goes under the benchmark's load, sampled.

python -m bench.profile [--target policy] [--scenario json/16] [--seconds 5] [--warmup 1]
                        [--rate 500] [--top 15] [--output PATH]

Starts what ``python -m bench`` starts for one target (the mock upstream, the target's own
``redis-server`` when it keeps usage, the proxy alone on the first CPU), drives one scenario
with the benchmark's load generator in this process, and once the warm-up is over attaches
py-spy to the proxy for the measured seconds. py-spy reads the proxy's stacks from outside,
on the load generator's CPU, without pausing it (``--nonblocking``) and without any change
to the code under test; it needs ptrace rights over the proxy (root, or
``kernel.yama.ptrace_scope`` 0).

Prints markdown: the load while sampled and the proxy's CPU per request (from ``/proc``),
then that CPU split by the parts of the process (``bench.stacks``), self and inclusive, as
microseconds per request and shares, and the top functions both ways. The raw collapsed
stacks (for flamegraph.pl or speedscope) go to ``--output``, by default
``bench/results/profile-TARGET-KIND-CONNS-TIMESTAMP.txt``.

Exits 0 when the run was profiled with no errors, 1 when it saw errors or something failed,
2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from bench.children import ChildError, CpuPlan
from bench.load import run_load
from bench.loops import loop_runner
from bench.measurement import Measurement
from bench.scenarios import ALL_KINDS, MODES, keys_of
from bench.stacks import ENTRY, Profile, Share
from bench.targets import start_mock, start_target
from bench.window import Watched

__all__ = ["Plan", "ProfilerError", "Sampled", "main", "profile_target", "render"]

_RESULTS = Path(__file__).resolve().parent / "results"
_TARGETS = tuple(mode for mode in MODES if mode != "direct")
_SPY_GRACE_S = 30.0
_UNSHARED = (ENTRY, "event loop: asyncio + uvloop")
"""Buckets whose frames start only some stacks (uvloop runs callbacks from C, each on a fresh
stack): their inclusive share says nothing."""


class ProfilerError(RuntimeError):
    """py-spy is missing, could not attach, or failed."""


@dataclass(frozen=True)
class Plan:
    """What to profile: a target under one scenario, for how long, how often, and where the
    raw stacks go."""

    mode: str
    kind: str
    connections: int
    seconds: int
    warmup_s: float
    rate: int
    output: Path


@dataclass(frozen=True)
class Sampled:
    """One profiled run: what the load generator measured and what py-spy saw meanwhile."""

    mode: str
    kind: str
    connections: int
    seconds: int
    rate: int
    measurement: Measurement
    profile: Profile
    profiler: str
    """The profiler and its version, as it names itself."""


def _py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"  # the virtualenv's, when not on PATH
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise ProfilerError("py-spy not found: `make install-test` installs it")
    return found


async def _sampled_load(spy: str, port: int, plan: Plan, watched: Watched) -> Measurement:
    """Run the scenario; py-spy records the proxy from the warm-up's end for the window."""
    assert watched.proxy is not None
    load = asyncio.ensure_future(
        run_load(
            "127.0.0.1", port, plan.kind, plan.connections, plan.warmup_s, plan.seconds,
            watched=watched, keys=keys_of(plan.mode),
        )
    )  # fmt: skip
    try:
        await asyncio.sleep(plan.warmup_s)
        spying = await asyncio.create_subprocess_exec(
            spy, "record", "--pid", str(watched.proxy),
            "--duration", str(plan.seconds), "--rate", str(plan.rate),
            "--format", "raw", "--function", "--nonblocking", "--output", str(plan.output),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            async with asyncio.timeout(plan.seconds + _SPY_GRACE_S):
                _, stderr = await spying.communicate()
        finally:
            if spying.returncode is None:
                spying.kill()
                await spying.wait()
        if spying.returncode != 0:
            tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise ProfilerError(f"py-spy exited with {spying.returncode}: {' | '.join(tail)}")
        return await load
    finally:
        if not load.done():
            load.cancel()
            await asyncio.gather(load, return_exceptions=True)


def profile_target(plan: Plan, cpus: CpuPlan) -> Sampled:
    """Start the target, run the scenario under py-spy, stop everything; the raw stacks are
    left in ``plan.output``."""
    spy = _py_spy()
    version = subprocess.run(
        [spy, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="sentinel-profile-") as work, ExitStack() as stack:
        workdir = Path(work)
        mock = start_mock(workdir, cpus.mock)
        stack.callback(mock.child.stop)
        proxy, redis = start_target(plan.mode, workdir, mock.base_url, cpus, stack)
        store = None if redis is None else redis.child.pid
        watched = Watched(proxy.child.pid, mock.child.pid, store)
        plan.output.parent.mkdir(parents=True, exist_ok=True)
        with loop_runner() as runner:
            measurement = runner.run(_sampled_load(spy, proxy.port, plan, watched))
    collapsed = plan.output.read_text(errors="replace")
    return Sampled(
        plan.mode,
        plan.kind,
        plan.connections,
        plan.seconds,
        plan.rate,
        measurement,
        Profile.from_collapsed(collapsed),
        version or "py-spy",
    )


def _per_request(samples: int, profile: Profile, cpu_us: float | None) -> str:
    if cpu_us is None or not profile.samples:
        return "-"
    return f"{cpu_us * samples / profile.samples:.1f}"


def _percent(samples: int, profile: Profile) -> str:
    return f"{100 * samples / profile.samples:.1f}%" if profile.samples else "-"


def _bucket_row(share: Share, profile: Profile, cpu_us: float | None) -> str:
    unshared = share.name in _UNSHARED
    cells = [
        share.name,
        _per_request(share.self_samples, profile, cpu_us),
        _percent(share.self_samples, profile),
        "-" if unshared else _per_request(share.inclusive_samples, profile, cpu_us),
        "-" if unshared else _percent(share.inclusive_samples, profile),
    ]
    return "| " + " | ".join(cells) + " |"


def _function_rows(
    ranked: Sequence[tuple[object, Share]], profile: Profile, cpu_us: float | None, inclusive: bool
) -> list[str]:
    rows = []
    for _, share in ranked:
        samples = share.inclusive_samples if inclusive else share.self_samples
        name = share.name.replace("|", "\\|")
        cells = [
            f"`{name}`",
            _per_request(samples, profile, cpu_us),
            _percent(samples, profile),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _headline(sampled: Sampled) -> list[str]:
    m = sampled.measurement
    cpu_us = m.cpu_us_per_request
    cpu = "unknown" if cpu_us is None else f"{cpu_us:.0f} µs"
    busy = "" if m.cpu_seconds is None else f" ({100 * m.cpu_seconds / m.seconds:.0f}% of a CPU)"
    sampled_s = sampled.profile.samples / sampled.rate
    used = "" if m.cpu_seconds is None else f"; /proc counted {m.cpu_seconds:.2f} s"
    lines = [
        f"Profile of `{sampled.mode}` {sampled.kind}/{sampled.connections}: {sampled.profiler}, "
        f"{sampled.rate} Hz for {sampled.seconds} s, {sampled.profile.samples} samples of the "
        f"proxy running ({sampled_s:.2f} s{used})",
        "",
        f"- Load while sampled: {m.rps:.0f} req/s, p50 {m.p50_us / 1000:.2f} ms, "
        f"{m.errors} errors; the proxy's CPU per request (/proc): {cpu}{busy}",
    ]
    side = [
        f"{name} {value:.0f} µs"
        for name, seconds in (("redis-server", m.store_cpu_seconds), ("mock", m.mock_cpu_seconds))
        if (value := m.per_request_us(seconds)) is not None
    ]
    if side:
        lines.append("- CPU per request outside the proxy (not profiled): " + ", ".join(side))
    if m.errors:
        lines.append(f"- **{m.errors} errors: this profile is of a failing proxy**")
    return lines


def render(sampled: Sampled, top: int) -> str:
    """The markdown report: the run, the parts of the process, the top functions."""
    profile = sampled.profile
    cpu_us = sampled.measurement.cpu_us_per_request
    lines = [
        *_headline(sampled),
        "",
        "Self: where the CPU was; inclusive: with what it called. The rest of the standard "
        "library and generated code (a dataclass's `__init__`) count toward the part that "
        "called them; time in C (uvloop's socket calls, orjson, hiredis, the kernel) toward "
        "the Python function that called it; the loop's own C code shows as asyncio's "
        "`Runner.run`. µs/req are these shares of the proxy's CPU per request.",
        "",
        "| part | self µs/req | self % | inclusive µs/req | inclusive % |",
        "|---|---|---|---|---|",
        *(
            _bucket_row(share, profile, cpu_us)
            for share in profile.buckets()
            if share.self_samples or share.name not in _UNSHARED
        ),
        "",
        f"Top {top} functions by self time:",
        "",
        "| function | self µs/req | self % |",
        "|---|---|---|",
        *_function_rows(profile.top_self(top), profile, cpu_us, inclusive=False),
        "",
        f"Top {top} functions by inclusive time (the entry frames left out):",
        "",
        "| function | inclusive µs/req | inclusive % |",
        "|---|---|---|",
        *_function_rows(profile.top_inclusive(top), profile, cpu_us, inclusive=True),
    ]
    return "\n".join(lines) + "\n"


def _scenario(text: str) -> tuple[str, int]:
    kind, _, count = text.partition("/")
    if kind not in ALL_KINDS or not count.isdigit() or not 1 <= int(count) <= 1024:
        raise argparse.ArgumentTypeError(f"expected KIND/CONNECTIONS, KIND one of {ALL_KINDS}")
    return kind, int(count)


def _whole(least: int, most: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or not least <= int(text) <= most:
            raise argparse.ArgumentTypeError(f"expected {what} from {least} to {most}")
        return int(text)

    return parse


def _warmup(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected seconds") from None
    if not 0 <= value <= 60:
        raise argparse.ArgumentTypeError("expected 0-60 seconds")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--target", choices=_TARGETS, default="policy", help="(policy)")
    parser.add_argument(
        "--scenario", type=_scenario, default=("json", 16), help="KIND/CONNECTIONS (json/16)"
    )
    parser.add_argument("--seconds", type=_whole(1, 600, "seconds"), default=5, help="sampled (5)")
    parser.add_argument("--warmup", type=_warmup, default=1.0, help="seconds before (1)")
    parser.add_argument(
        "--rate", type=_whole(1, 5000, "samples a second"), default=500, help="Hz (500)"
    )
    parser.add_argument(
        "--top", type=_whole(1, 200, "functions"), default=15, help="functions listed (15)"
    )
    parser.add_argument("--output", type=Path, help="raw collapsed stacks (bench/results/...)")
    return parser


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every ``finally`` that stops a child


def main(argv: Sequence[str] | None = None) -> int:
    """Profile one target under one scenario; returns the exit status."""
    args = _parser().parse_args(argv)
    kind, connections = args.scenario
    output = args.output
    if output is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        output = _RESULTS / f"profile-{args.target}-{kind}-{connections}-{stamp}.txt"
    plan = Plan(args.target, kind, connections, args.seconds, args.warmup, args.rate, output)
    signal.signal(signal.SIGTERM, _terminate)
    cpus = CpuPlan.for_cpus(os.sched_getaffinity(0))
    if cpus.load is not None:
        os.sched_setaffinity(0, cpus.load)  # this process, and py-spy, off the proxy's CPU
    try:
        sampled = profile_target(plan, cpus)
    except (ChildError, ProfilerError, OSError) as error:
        print(f"bench.profile: {error}", file=sys.stderr, flush=True)
        return 1
    print(render(sampled, args.top), end="", flush=True)
    print(f"bench.profile: raw stacks in {output}", file=sys.stderr, flush=True)
    return 1 if sampled.measurement.errors or not sampled.profile.samples else 0


if __name__ == "__main__":
    sys.exit(main())
