"""Running the matrix: the mock once, each proxy in turn, one load generator per scenario."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench.children import ChildError, CpuPlan, python_argv, run_to_end
from bench.measurement import Measurement
from bench.scenarios import Scenario, matrix
from bench.targets import Target, start_mock, start_proxy

__all__ = ["Options", "Outcome", "run_benchmark"]

_LOAD_GRACE_S = 30.0


@dataclass(frozen=True)
class Options:
    """What to run and for how long."""

    modes: tuple[str, ...]
    kinds: tuple[str, ...]
    connections: tuple[int, ...]
    warmup_s: float
    duration_s: float


@dataclass(frozen=True)
class Outcome:
    """One scenario's result: a measurement, or why there is none."""

    scenario: Scenario
    measurement: Measurement | None
    failure: str | None = None


@dataclass(frozen=True)
class _Run:
    """What every scenario of one benchmark run shares."""

    options: Options
    plan: CpuPlan
    workdir: Path
    mock: Target
    progress: Callable[[str], None]


def run_benchmark(
    options: Options, plan: CpuPlan, progress: Callable[[str], None]
) -> list[Outcome]:
    """Run every scenario of ``options``; every process started here is stopped on return."""
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as work, ExitStack() as stack:
        mock = start_mock(Path(work), plan.mock)
        stack.callback(mock.child.stop)
        run = _Run(options, plan, Path(work), mock, progress)
        for mode in options.modes:
            outcomes.extend(_run_mode(run, mode))
    return outcomes


def _run_mode(run: _Run, mode: str) -> list[Outcome]:
    scenarios = matrix((mode,), run.options.kinds, run.options.connections)
    if mode == "direct":
        return [_run_scenario(run, s, run.mock.port, None) for s in scenarios]
    try:
        proxy = start_proxy(mode, run.workdir, run.mock.base_url, run.plan.proxy)
    except ChildError as error:
        log = (run.workdir / f"{mode}.log").read_text(errors="replace")
        run.progress(
            f"{mode}: failed to start: {error}\n    " + "\n    ".join(log.splitlines()[-15:])
        )
        return [Outcome(s, None, f"failed to start: {error}") for s in scenarios]
    try:
        return [_run_scenario(run, s, proxy.port, proxy.child.pid) for s in scenarios]
    finally:
        proxy.child.stop()


def _load_argv(run: _Run, scenario: Scenario, port: int, proxy_pid: int | None) -> list[str]:
    options = run.options
    args = [
        "--port", str(port),
        "--kind", scenario.kind,
        "--connections", str(scenario.connections),
        "--warmup", str(options.warmup_s),
        "--duration", str(options.duration_s),
        "--mock-pid", str(run.mock.child.pid),
    ]  # fmt: skip
    if proxy_pid is not None:
        args += ["--proxy-pid", str(proxy_pid)]
    return python_argv("bench.load", *args)


def _run_scenario(run: _Run, scenario: Scenario, port: int, proxy_pid: int | None) -> Outcome:
    timeout = run.options.warmup_s + run.options.duration_s + _LOAD_GRACE_S
    try:
        output = run_to_end(_load_argv(run, scenario, port, proxy_pid), run.plan.load, timeout)
        measurement = Measurement.from_dict(json.loads(output.strip().splitlines()[-1]))
    except (ChildError, ValueError, IndexError, TypeError) as error:
        run.progress(f"{scenario.label}: load generator failed: {error}")
        return Outcome(scenario, None, f"load generator failed: {error}")
    errors = f", {measurement.errors} errors" if measurement.errors else ""
    run.progress(
        f"{scenario.label}: {measurement.rps:.0f} req/s, "
        f"p50 {measurement.p50_us / 1000:.2f} ms{errors}"
    )
    return Outcome(scenario, measurement)
