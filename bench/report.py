"""The results as markdown for people (the matrix, a summary, the targets, the counting cost)
and as JSON for later comparison."""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.children import CpuPlan
from bench.goals import Key, verdicts
from bench.measurement import CountCost, Measurement
from bench.runner import Options, Outcome, Results, UsageKept
from bench.scenarios import MODES
from bench.targets import USAGE_MODES

__all__ = ["render", "save_json"]

_COLUMNS = (
    "target",
    "request",
    "conns",
    "req/s",
    "p50 ms",
    "p99 ms",
    "CPU µs/req",
    "RSS MB",
    "% of bare req/s",
    "+p50 vs direct",
    "errors",
)
_FLOORS = ("direct", "bare", "bare-uvicorn")
_GATEWAYS = tuple(mode for mode in MODES if mode not in _FLOORS)
"""Every Sentinel target: measured against the bare pass-through of its engine."""
_NOISY_BACKGROUND = 0.05  # of one CPU


def _index(outcomes: Sequence[Outcome]) -> dict[Key, Measurement]:
    return {
        (o.scenario.mode, o.scenario.kind, o.scenario.connections): o.measurement
        for o in outcomes
        if o.measurement is not None
    }


def _ms(microseconds: float) -> str:
    return f"{microseconds / 1000:.2f}"


def _row(outcome: Outcome, found: Mapping[Key, Measurement]) -> list[str]:
    s = outcome.scenario
    head = [s.mode, s.kind, str(s.connections)]
    m = outcome.measurement
    if m is None:
        return [*head, f"**{outcome.failure}**", *[""] * (len(_COLUMNS) - 4)]
    per_request = m.cpu_us_per_request
    bare = found.get((baseline(s.mode), s.kind, s.connections))
    direct = found.get(("direct", s.kind, s.connections))
    share = f"{100 * m.rps / bare.rps:.0f}%" if s.mode in _GATEWAYS and bare and bare.rps else "-"
    added = f"{(m.p50_us - direct.p50_us) / 1000:+.2f}" if s.mode != "direct" and direct else "-"
    return [
        *head,
        f"{m.rps:.0f}",
        _ms(m.p50_us),
        _ms(m.p99_us),
        "-" if per_request is None else f"{per_request:.0f}",
        "-" if m.rss_bytes is None else f"{m.rss_bytes / 2**20:.0f}",
        share,
        added,
        f"**{m.errors}**" if m.errors else "0",
    ]


def _table(outcomes: Sequence[Outcome]) -> list[str]:
    found = _index(outcomes)
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(_row(o, found)) + " |" for o in outcomes]
    return lines


def _summary(outcomes: Sequence[Outcome], usage: Mapping[str, UsageKept]) -> list[str]:
    found = _index(outcomes)
    lines = [line for kind in _kinds(outcomes) if (line := _latency_line(found, kind))]
    lines += [line for kind in _kinds(outcomes) if (line := _own_cpu_line(found, kind))]
    rss = {
        mode: max(values)
        for mode in _GATEWAYS
        if (
            values := [
                m.rss_bytes for (name, _, _), m in found.items() if name == mode and m.rss_bytes
            ]
        )
    }
    if rss:
        listed = ", ".join(f"{mode} {size / 2**20:.0f} MB" for mode, size in rss.items())
        lines.append(f"- RSS at most: {listed}")
    lines += _store_costs(outcomes, usage)
    lines += _side_costs(outcomes)
    lines += _background(outcomes)
    failed = sum(1 for o in outcomes if o.measurement is None or o.measurement.errors)
    if failed:
        lines.append(f"- **{failed} scenario(s) failed or had errors**")
    return lines


def baseline(mode: str) -> str:
    """The bare pass-through a target is measured against: the one on its own engine."""
    return "bare-uvicorn" if mode == "uvicorn" else "bare"


def _kinds(outcomes: Sequence[Outcome]) -> list[str]:
    return list(dict.fromkeys(o.scenario.kind for o in outcomes))


def _latency_line(found: Mapping[Key, Measurement], kind: str) -> str | None:
    """What each proxy adds to direct's p50 at one connection, and the gateways over bare."""
    direct = found.get(("direct", kind, 1))
    if direct is None:
        return None
    parts = []
    for mode in ("bare", "bare-uvicorn", *_GATEWAYS):
        if (measured := found.get((mode, kind, 1))) is None:
            continue
        part = f"{mode} +{_ms(measured.p50_us - direct.p50_us)} ms"
        bare = found.get((baseline(mode), kind, 1))
        if bare is not None and not mode.startswith("bare"):
            part += f" ({_ms(measured.p50_us - bare.p50_us)} over {baseline(mode)})"
        parts.append(part)
    return f"- {kind}, p50 added to direct at 1 connection: " + ", ".join(parts) if parts else None


def _own_cpu_line(found: Mapping[Key, Measurement], kind: str) -> str | None:
    """Each gateway's own CPU per request at the most connections measured: its CPU less its
    engine's bare pass-through's, as a share of the latter (issue 18 asks for at most 0.25)."""
    connections = max((c for (_, k, c) in found if k == kind), default=None)
    if connections is None:
        return None
    parts = []
    for mode in _GATEWAYS:
        measured = found.get((mode, kind, connections))
        bare = found.get((baseline(mode), kind, connections))
        if measured is None or bare is None:
            continue
        own, floor = measured.cpu_us_per_request, bare.cpu_us_per_request
        if own is None or not floor:
            continue
        parts.append(
            f"{mode} {own - floor:.0f} µs ({(own - floor) / floor:.2f} of {baseline(mode)})"
        )
    if not parts:
        return None
    return f"- {kind}, own CPU per request at {connections} connections: " + ", ".join(parts)


def _store_costs(outcomes: Sequence[Outcome], usage: Mapping[str, UsageKept]) -> list[str]:
    """The Redis CPU of the targets keeping usage (outside their CPU column), and the usage
    records each wrote."""
    lines = []
    for mode in USAGE_MODES:
        ran = [o.measurement for o in outcomes if o.scenario.mode == mode and o.measurement]
        store = [v for m in ran if (v := m.per_request_us(m.store_cpu_seconds)) is not None]
        if store:
            lines.append(
                f"- {mode}'s redis-server CPU per request: {min(store):.0f}-{max(store):.0f} µs "
                "(not in its CPU µs/req column)"
            )
        if mode in usage:
            kept = usage[mode]
            lines.append(
                f"- {mode} wrote {kept.records} usage records for {kept.responses} responses "
                f"(warm-up and every round included), naming {kept.keys} "
                f"key{'s' if kept.keys != 1 else ''}"
            )
    return lines


def _side_costs(outcomes: Sequence[Outcome]) -> list[str]:
    """The load generator's and the mock's own CPU per request: the load generator must be cheap."""
    load = [m.per_request_us(m.load_cpu_seconds) for m in _index(outcomes).values()]
    mock = [m.per_request_us(m.mock_cpu_seconds) for m in _index(outcomes).values()]
    known_load = [value for value in load if value is not None]
    known_mock = [value for value in mock if value is not None]
    if not known_load or not known_mock:
        return []
    return [
        f"- CPU per request outside the proxy: load generator {min(known_load):.0f}-"
        f"{max(known_load):.0f} µs, mock upstream {min(known_mock):.0f}-{max(known_mock):.0f} µs"
    ]


def _background(outcomes: Sequence[Outcome]) -> list[str]:
    shares = [
        (share, o.scenario.label)
        for o in outcomes
        if o.measurement is not None and (share := o.measurement.background_cpu_share) is not None
    ]
    if not shares:
        return []
    worst, label = max(shares)
    line = f"- Background load (processes outside the benchmark): up to {100 * worst:.0f}% of a CPU"
    if worst < _NOISY_BACKGROUND:
        return [line]
    return [f"{line} (in {label}): **the machine was busy; these numbers are noisy**"]


def _targets(outcomes: Sequence[Outcome]) -> list[str]:
    checked = verdicts(_index(outcomes))
    if not checked:
        return []
    lines = ["Targets:", "", "| check | target | measured | met |", "|---|---|---|---|"]
    lines += [
        f"| {v.check} | {v.target} | {v.measured} | {'yes' if v.is_met else '**no**'} |"
        for v in checked
    ]
    return ["", *lines]


def _counting(results: Results) -> list[str]:
    if results.counting_failure is not None:
        return ["", f"Counting cost: **{results.counting_failure}**"]
    if not results.counting:
        return []
    first = results.counting[0]
    lines = [
        f"Counting cost: a chat request's prompt counted by Sentinel's counter "
        f"({first.model}, {first.encoding}), in one process, no network; median of "
        f"{first.runs} counts:",
        "",
        "| prompt | tokens | body KB | µs per count | fastest µs | tokens/s |",
        "|---|---|---|---|---|---|",
    ]
    lines += [_counting_row(cost) for cost in results.counting]
    return ["", *lines]


def _counting_row(cost: CountCost) -> str:
    cells = [
        f"~{cost.target_tokens // 1000}k",
        str(cost.tokens),
        f"{cost.body_bytes / 1000:.1f}",
        f"{cost.median_us:.0f}",
        f"{cost.min_us:.0f}",
        f"{cost.tokens_per_s:,.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def render(results: Results, options: Options, plan: CpuPlan) -> str:
    """The markdown table, a short summary, the targets and the counting cost."""
    pinning = plan.describe()
    rounds = f", best of {options.rounds} rounds" if options.rounds > 1 else ""
    header = (
        f"Sentinel benchmark: {options.warmup_s:g} s warm-up + {options.duration_s:g} s per "
        f"scenario{rounds}; CPUs proxy={pinning['proxy']} load={pinning['load']} "
        f"mock={pinning['mock']}"
    )
    outcomes = results.outcomes
    body = [
        header,
        "",
        *_table(outcomes),
        "",
        *_summary(outcomes, results.usage),
        *_targets(outcomes),
        *_counting(results),
    ]
    return "\n".join(body) + "\n"


def save_json(results: Results, options: Options, plan: CpuPlan, directory: Path) -> Path:
    """Write every raw figure to ``directory/<UTC timestamp>.json``; returns the path."""
    now = datetime.now(UTC)
    document: dict[str, Any] = {
        "started": now.isoformat(timespec="seconds"),
        "options": asdict(options),
        "machine": {
            "cpus": plan.describe(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "scenarios": [
            {
                **asdict(o.scenario),
                "failure": o.failure,
                **(o.measurement.to_dict() if o.measurement else {}),
            }
            for o in results.outcomes
        ],
        "usage": {mode: asdict(kept) for mode, kept in results.usage.items()},
        "targets": [asdict(verdict) for verdict in verdicts(_index(results.outcomes))],
        "counting": [cost.to_dict() for cost in results.counting],
        "counting_failure": results.counting_failure,
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
