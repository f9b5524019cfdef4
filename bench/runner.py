"""Running the matrix: the mock and every target started once, then the scenarios in rounds.

The cost of counting a prompt is measured first, in a process of its own (``bench.counting``)
on the proxy's CPU: no proxy runs yet, and the mock starts meanwhile on its own CPUs. Then
every target starts (each proxy on the proxy's CPUs, idle until its turn) and each round
measures every scenario on every target in turn, one load generator per measurement: the
targets of one scenario are measured back to back, under the same conditions.

Each scenario keeps its best round (the most requests per second): on a shared machine other
tenants only ever slow a measurement down. A round that failed or saw errors is kept instead,
so that no error is hidden by a better round.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench.children import ChildError, CpuPlan, Finishing, python_argv
from bench.measurement import CountCost, Measurement
from bench.scenarios import Scenario, keys_of, matrix
from bench.targets import (
    USAGE_FILE,
    USAGE_MODES,
    Target,
    start_mock,
    start_target,
    usage_dir,
)
from bench.window import Watched

__all__ = ["Options", "Outcome", "Results", "UsageKept", "best_rounds", "run_benchmark"]

_LOAD_GRACE_S = 30.0
_COUNTING_GRACE_S = 60.0
_COUNTING_RUN_S = 0.5  # a generous bound on one count of the largest prompt


@dataclass(frozen=True)
class Options:
    """What to run and for how long."""

    modes: tuple[str, ...]
    kinds: tuple[str, ...]
    connections: tuple[int, ...]
    warmup_s: float
    duration_s: float
    counting_runs: int = 0
    """Counts timed per prompt size; 0 skips the counting cost."""
    rounds: int = 1
    """Times the whole matrix runs; each scenario keeps its best round."""


@dataclass(frozen=True)
class Outcome:
    """One scenario's result: a measurement, or why there is none."""

    scenario: Scenario
    measurement: Measurement | None
    failure: str | None = None


@dataclass(frozen=True)
class UsageKept:
    """What a target keeping usage wrote against what it answered, over every round."""

    records: int
    responses: int
    keys: int = 1
    """The distinct client keys the records name."""


@dataclass(frozen=True)
class Results:
    """Everything one benchmark run measured."""

    outcomes: list[Outcome]
    counting: list[CountCost] = field(default_factory=list)
    counting_failure: str | None = None
    usage: dict[str, UsageKept] = field(default_factory=dict)
    """What each target keeping usage wrote, by mode (those that ran)."""

    @property
    def has_failed(self) -> bool:
        """Whether any scenario or the counting cost failed or saw errors."""
        return self.counting_failure is not None or any(
            o.measurement is None or o.measurement.errors for o in self.outcomes
        )


@dataclass(frozen=True)
class _Run:
    """What every scenario of one benchmark run shares."""

    options: Options
    plan: CpuPlan
    workdir: Path
    mock: Target
    progress: Callable[[str], None]


def run_benchmark(options: Options, plan: CpuPlan, progress: Callable[[str], None]) -> Results:
    """Run every scenario of ``options``; every process started here is stopped on return."""
    rounds: list[list[Outcome]] = []
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as work:
        workdir = Path(work)
        with ExitStack() as stack:  # every child stopped (usage drained) before it is counted
            counting = None
            if options.counting_runs:
                argv = python_argv("bench.counting", "--runs", str(options.counting_runs))
                counting = stack.enter_context(Finishing(argv, plan.proxy))
            mock = start_mock(workdir, plan.mock)
            stack.callback(mock.child.stop)
            costs, failure = _counted(counting, options.counting_runs, progress)
            run = _Run(options, plan, workdir, mock, progress)
            started = {mode: _start(run, mode, stack) for mode in options.modes}
            for number in range(1, options.rounds + 1):
                if options.rounds > 1:
                    progress(f"round {number} of {options.rounds}")
                rounds.append(_round(run, started))
        usage = {
            mode: _usage_kept(usage_dir(workdir, mode), _responses(rounds, mode))
            for mode in USAGE_MODES
            if mode in options.modes
        }
    return Results(best_rounds(rounds), costs, failure, usage)


def _round(run: _Run, started: dict[str, _Started]) -> list[Outcome]:
    """Every scenario once, the targets of each back to back; in the matrix's order."""
    options = run.options
    measured: dict[Scenario, Outcome] = {}
    for kind in options.kinds:
        for connections in options.connections:
            for mode in options.modes:
                scenario = Scenario(mode, kind, connections)
                measured[scenario] = _measure(run, scenario, started[mode])
    return [measured[s] for s in matrix(options.modes, options.kinds, options.connections)]


def best_rounds(rounds: Sequence[Sequence[Outcome]]) -> list[Outcome]:
    """Each scenario's outcome over the rounds (each round lists the same scenarios, in the
    same order): the first that failed or saw errors, else the one with the most req/s."""
    best: list[Outcome] = []
    for outcomes in zip(*rounds, strict=True):
        troubled = [o for o in outcomes if o.measurement is None or o.measurement.errors]
        if troubled:
            best.append(troubled[0])
        else:
            best.append(max(outcomes, key=lambda o: o.measurement.rps if o.measurement else 0))
    return best


def _responses(rounds: Sequence[Sequence[Outcome]], mode: str) -> int:
    """Every response ``mode`` gave in every round, warm-up included."""
    return sum(
        sum(o.measurement.statuses.values())
        for outcomes in rounds
        for o in outcomes
        if o.scenario.mode == mode and o.measurement is not None
    )


@dataclass(frozen=True)
class _Started:
    """A target ready for load (its port and the processes to watch), or why it is not."""

    port: int = 0
    watched: Watched = field(default_factory=Watched)
    failure: str | None = None


def _start(run: _Run, mode: str, stack: ExitStack) -> _Started:
    """Start ``mode``'s proxy (and its Redis), stopped by ``stack``: the proxy first."""
    if mode == "direct":
        return _Started(run.mock.port, Watched(mock=run.mock.child.pid))
    try:
        proxy, redis = start_target(mode, run.workdir, run.mock.base_url, run.plan, stack)
    except ChildError as error:
        log = _tail(run.workdir / f"{mode}.log") or _tail(run.workdir / f"{mode}-redis.log")
        run.progress(f"{mode}: failed to start: {error}\n    " + "\n    ".join(log))
        return _Started(failure=f"failed to start: {error}")
    store = None if redis is None else redis.child.pid
    return _Started(proxy.port, Watched(proxy.child.pid, run.mock.child.pid, store))


def _measure(run: _Run, scenario: Scenario, target: _Started) -> Outcome:
    if target.failure is not None:
        return Outcome(scenario, None, target.failure)
    [outcome] = _run_scenarios(run, [scenario], target.port, target.watched)
    return outcome


def _tail(log: Path, lines: int = 15) -> list[str]:
    try:
        return log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def _usage_kept(directory: Path, responses: int) -> UsageKept:
    """The records in a target's usage file and any rotated copies of it, and the distinct
    keys they name (a line that is not a JSON record counts, but names no key)."""
    total = 0
    keys: set[str] = set()
    for path in directory.glob(f"{USAGE_FILE}*"):
        with path.open("rb") as records:
            for line in records:
                total += 1
                try:
                    keys.add(str(json.loads(line)["key"]))
                except (ValueError, KeyError, TypeError):
                    continue
    return UsageKept(total, responses, len(keys))


def _load_argv(run: _Run, scenarios: Sequence[Scenario], port: int, watched: Watched) -> list[str]:
    options = run.options
    args = [
        "--port", str(port),
        "--warmup", str(options.warmup_s),
        "--duration", str(options.duration_s),
    ]  # fmt: skip
    for scenario in scenarios:
        args += ["--scenario", f"{scenario.kind}/{scenario.connections}"]
    keys = {len(keys_of(scenario.mode)) for scenario in scenarios}
    if keys != {1}:
        [count] = keys  # one load generator measures one target
        args += ["--keys", str(count)]
    for flag, pid in (
        ("--proxy-pid", watched.proxy),
        ("--mock-pid", watched.mock),
        ("--store-pid", watched.store),
    ):
        if pid is not None:
            args += [flag, str(pid)]
    return python_argv("bench.load", *args)


def _run_scenarios(
    run: _Run, scenarios: Sequence[Scenario], port: int, watched: Watched
) -> list[Outcome]:
    """One load generator runs the target's scenarios in turn, one measurement line each."""
    per_scenario = run.options.warmup_s + run.options.duration_s
    timeout = len(scenarios) * per_scenario + _LOAD_GRACE_S
    outcomes: list[Outcome] = []
    failure = "load generator printed no measurement"
    try:
        with Finishing(_load_argv(run, scenarios, port, watched), run.plan.load) as load:
            for line in load.lines(timeout):
                if len(outcomes) == len(scenarios):
                    raise ValueError("more measurements than scenarios")
                outcomes.append(_measured(run, scenarios[len(outcomes)], line))
    except (ChildError, ValueError, TypeError) as error:
        failure = f"load generator failed: {error}"
    for scenario in scenarios[len(outcomes) :]:
        run.progress(f"{scenario.label}: {failure}")
        outcomes.append(Outcome(scenario, None, failure))
    return outcomes


def _measured(run: _Run, scenario: Scenario, line: str) -> Outcome:
    measurement = Measurement.from_dict(json.loads(line))
    errors = f", {measurement.errors} errors" if measurement.errors else ""
    run.progress(
        f"{scenario.label}: {measurement.rps:.0f} req/s, "
        f"p50 {measurement.p50_us / 1000:.2f} ms{errors}"
    )
    return Outcome(scenario, measurement)


def _counted(
    counting: Finishing | None, runs: int, progress: Callable[[str], None]
) -> tuple[list[CountCost], str | None]:
    """The counting child's costs, or why there are none."""
    if counting is None:
        return [], None
    try:
        output = counting.result(_COUNTING_GRACE_S + runs * _COUNTING_RUN_S)
        costs = [CountCost.from_dict(json.loads(line)) for line in output.strip().splitlines()]
    except (ChildError, ValueError, TypeError) as error:
        progress(f"counting: failed: {error}")
        return [], f"failed: {error}"
    for cost in costs:
        progress(
            f"counting/{cost.target_tokens}: {cost.tokens} tokens, "
            f"{cost.median_us:.0f} µs median of {cost.runs}"
        )
    return costs, None
