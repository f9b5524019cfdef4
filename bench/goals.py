"""The performance targets Sentinel is held to, checked against one run's measurements.

A throughput target must hold in every scenario both targets ran, so the worst share is the
one shown. A latency target bounds the p50 a target adds over the bare pass-through at one
connection, the worst request kind shown. A target whose figures are missing is left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bench.measurement import Measurement

__all__ = ["LATENCY_GOALS_MS", "THROUGHPUT_GOALS", "Key", "Verdict", "verdicts"]

Key = tuple[str, str, int]
"""A measurement's mode, request kind and connection count."""

THROUGHPUT_GOALS: tuple[tuple[str, str, float], ...] = (
    ("sentinel", "bare", 0.80),
    ("policy", "bare", 0.80),
    ("policy-keys", "policy", 0.90),  # 1,000 keys in Redis instead of one (issue 18)
    ("accounting", "sentinel", 0.90),  # what keeping usage may cost on top of Sentinel
    ("routed", "sentinel", 0.95),  # routing and breakers: within noise of one upstream
    ("guardrails", "sentinel", 0.90),  # 50 rules and every PII detector on each prompt
    ("keys", "sentinel", 0.97),  # a runtime key instead of a config key (issue 13)
)
"""(mode, base, least share): ``mode``'s req/s at least this share of ``base``'s."""

LATENCY_GOALS_MS: tuple[tuple[str, float], ...] = (("sentinel", 0.6), ("policy", 0.7))
"""(mode, most ms): p50 added over ``bare`` at one connection."""


@dataclass(frozen=True)
class Verdict:
    """One target checked: what it asks, what was measured, and whether it holds."""

    check: str
    target: str
    measured: str
    is_met: bool


def _worst_share(
    found: Mapping[Key, Measurement], mode: str, base: str
) -> tuple[float, str] | None:
    shares = [
        (measured.rps / other.rps, f"{kind}/{connections}")
        for (name, kind, connections), measured in found.items()
        if name == mode and (other := found.get((base, kind, connections))) and other.rps > 0
    ]
    return min(shares) if shares else None


def _worst_added_ms(found: Mapping[Key, Measurement], mode: str) -> tuple[float, str] | None:
    added = [
        ((measured.p50_us - bare.p50_us) / 1000, kind)
        for (name, kind, connections), measured in found.items()
        if name == mode and connections == 1 and (bare := found.get(("bare", kind, 1)))
    ]
    return max(added) if added else None


def verdicts(found: Mapping[Key, Measurement]) -> list[Verdict]:
    """Every target that ``found`` has the figures for, throughput first."""
    results = []
    for mode, base, least in THROUGHPUT_GOALS:
        if (share := _worst_share(found, mode, base)) is not None:
            value, where = share
            results.append(
                Verdict(
                    f"{mode} req/s, share of {base}",
                    f"≥ {100 * least:.0f}%",
                    f"{100 * value:.0f}% (worst: {where})",
                    value >= least,
                )
            )
    for mode, most in LATENCY_GOALS_MS:
        if (added := _worst_added_ms(found, mode)) is not None:
            value, where = added
            results.append(
                Verdict(
                    f"{mode} p50 over bare, 1 connection",
                    f"≤ {most:.2f} ms",
                    f"{value:+.2f} ms (worst: {where})",
                    value <= most,
                )
            )
    return results
