"""``python -m bench``: run the benchmark matrix, print the table, save the raw results.

python -m bench [--duration S] [--warmup S] [--rounds N]
                [--only direct,bare,sentinel,routed,accounting,policy,policy-keys,...]
                [--scenarios json,stream] [--connections 1,16] [--counting-runs N]
                [--quick] [--results-dir DIR]

Exits 0 when every scenario (and the counting cost) completed with no errors, 1 otherwise,
2 on bad arguments. Missed performance targets are reported, not an error: the numbers depend
on the machine.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from bench.children import ChildError, CpuPlan
from bench.report import render, save_json
from bench.runner import Options, run_benchmark
from bench.scenarios import ALL_KINDS, KINDS, MODES

__all__ = ["main"]

_RESULTS = Path(__file__).resolve().parent / "results"
_QUICK_WARMUP_S = 0.05
_QUICK_DURATION_S = 0.2
_QUICK_CONNECTIONS = (1, 2)
_QUICK_COUNTING_RUNS = 3
_COUNTING_RUNS = 100
_MAX_CONNECTIONS = 1024
_MAX_COUNTING_RUNS = 100_000
_ROUNDS = 3
_DURATION_S = 3.0
_MAX_ROUNDS = 100


def _names(allowed: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"expected some of {','.join(allowed)}")
        return tuple(name for name in allowed if name in names)  # the canonical order

    return parse


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError("expected integers like 1,16") from None
    if not counts or not all(1 <= count <= _MAX_CONNECTIONS for count in counts):
        raise argparse.ArgumentTypeError(f"expected counts within 1-{_MAX_CONNECTIONS}")
    return counts


def _whole(least: int, most: int) -> Callable[[str], int]:
    """A parser of whole numbers from ``least`` to ``most``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("expected a whole number") from None
        if not least <= value <= most:
            raise argparse.ArgumentTypeError(f"expected {least}-{most}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected seconds") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError("expected 0-3600 seconds")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=_seconds, help="seconds measured per scenario (3)")
    parser.add_argument("--warmup", type=_seconds, help="seconds of warm-up per scenario (1)")
    parser.add_argument(
        "--rounds",
        type=_whole(1, _MAX_ROUNDS),
        help="times the matrix runs; each scenario keeps its best (3)",
    )
    parser.add_argument("--only", type=_names(MODES), default=MODES, help="targets to run")
    parser.add_argument("--scenarios", type=_names(ALL_KINDS), default=KINDS, help="request kinds")
    parser.add_argument("--connections", type=_counts, help="concurrent connections (1,16)")
    parser.add_argument(
        "--counting-runs",
        type=_whole(0, _MAX_COUNTING_RUNS),
        help="prompt counts timed per size (100; 0: skip)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny durations, one round, 1,2 connections, 3 counts (tests)",
    )
    parser.add_argument("--results-dir", type=Path, default=_RESULTS, help="where JSON goes")
    return parser


def _options(args: argparse.Namespace) -> Options:
    quick = args.quick
    counting_runs = args.counting_runs
    if counting_runs is None:
        counting_runs = _QUICK_COUNTING_RUNS if quick else _COUNTING_RUNS
    return Options(
        modes=args.only,
        kinds=args.scenarios,
        connections=args.connections or (_QUICK_CONNECTIONS if quick else (1, 16)),
        warmup_s=args.warmup if args.warmup is not None else (_QUICK_WARMUP_S if quick else 1.0),
        duration_s=(
            args.duration
            if args.duration is not None
            else (_QUICK_DURATION_S if quick else _DURATION_S)
        ),
        counting_runs=counting_runs,
        rounds=args.rounds or (1 if quick else _ROUNDS),
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every ``finally`` that stops a child


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    args = _parser().parse_args(argv)
    options = _options(args)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    plan = CpuPlan.for_cpus(os.sched_getaffinity(0))
    if plan.load is not None:
        os.sched_setaffinity(0, plan.load)  # keep this process off the proxy's CPU too
    try:
        results = run_benchmark(options, plan, _progress)
    except ChildError as error:
        _progress(f"bench: {error}")
        return 1
    except KeyboardInterrupt:
        _progress("bench: interrupted; every process it started has been stopped")
        return 130
    print(render(results, options, plan), end="", flush=True)
    path = save_json(results, options, plan, args.results_dir)
    _progress(f"bench: raw results in {path}")
    return 1 if results.has_failed else 0


if __name__ == "__main__":
    sys.exit(main())
