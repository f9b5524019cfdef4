"""The results as a markdown table and a summary for people, and as JSON for later comparison."""

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
from bench.measurement import Measurement
from bench.runner import Options, Outcome

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
_Key = tuple[str, str, int]
_NOISY_BACKGROUND = 0.05  # of one CPU


def _index(outcomes: Sequence[Outcome]) -> dict[_Key, Measurement]:
    return {
        (o.scenario.mode, o.scenario.kind, o.scenario.connections): o.measurement
        for o in outcomes
        if o.measurement is not None
    }


def _ms(microseconds: float) -> str:
    return f"{microseconds / 1000:.2f}"


def _row(outcome: Outcome, found: Mapping[_Key, Measurement]) -> list[str]:
    s = outcome.scenario
    head = [s.mode, s.kind, str(s.connections)]
    m = outcome.measurement
    if m is None:
        return [*head, f"**{outcome.failure}**", *[""] * (len(_COLUMNS) - 4)]
    per_request = m.cpu_us_per_request
    bare = found.get(("bare", s.kind, s.connections))
    direct = found.get(("direct", s.kind, s.connections))
    share = f"{100 * m.rps / bare.rps:.0f}%" if s.mode == "sentinel" and bare and bare.rps else "-"
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


def _summary(outcomes: Sequence[Outcome]) -> list[str]:
    found = _index(outcomes)
    lines: list[str] = []
    for kind in sorted({o.scenario.kind for o in outcomes}):
        direct = found.get(("direct", kind, 1))
        bare = found.get(("bare", kind, 1))
        sentinel = found.get(("sentinel", kind, 1))
        parts = []
        if direct and sentinel:
            parts.append(f"Sentinel adds {_ms(sentinel.p50_us - direct.p50_us)} ms")
        if direct and bare:
            parts.append(f"bare adds {_ms(bare.p50_us - direct.p50_us)} ms")
        if bare and sentinel:
            parts.append(f"Sentinel over bare {_ms(sentinel.p50_us - bare.p50_us)} ms")
        if parts:
            lines.append(f"- {kind}, p50 at 1 connection: " + "; ".join(parts))
    rss = [m.rss_bytes for (mode, _, _), m in found.items() if mode == "sentinel" and m.rss_bytes]
    if rss:
        lines.append(f"- Sentinel RSS: {max(rss) / 2**20:.0f} MB at most")
    lines += _side_costs(outcomes)
    lines += _background(outcomes)
    failed = sum(1 for o in outcomes if o.measurement is None or o.measurement.errors)
    if failed:
        lines.append(f"- **{failed} scenario(s) failed or had errors**")
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


def render(outcomes: Sequence[Outcome], options: Options, plan: CpuPlan) -> str:
    """The markdown table with a short summary under it."""
    pinning = plan.describe()
    header = (
        f"Sentinel benchmark: {options.warmup_s:g} s warm-up + {options.duration_s:g} s per "
        f"scenario; CPUs proxy={pinning['proxy']} load={pinning['load']} mock={pinning['mock']}"
    )
    return "\n".join([header, "", *_table(outcomes), "", *_summary(outcomes)]) + "\n"


def save_json(
    outcomes: Sequence[Outcome], options: Options, plan: CpuPlan, directory: Path
) -> Path:
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
            for o in outcomes
        ],
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
