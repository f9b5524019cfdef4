"""The numbers the measuring children report and the report reads: a scenario's, a count's."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["CountCost", "Measurement", "percentile"]


def percentile(sorted_values: Sequence[int], fraction: float) -> int:
    """The nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class Measurement:
    """The measured window of one scenario; latencies in microseconds, to the last byte."""

    requests: int
    """Responses completed inside the measured window (any status)."""
    errors: int
    """Non-200 responses, broken connections and timeouts, warm-up included."""
    seconds: float
    """Length of the measured window."""
    p50_us: int
    p90_us: int
    p99_us: int
    max_us: int
    mean_us: float
    body_bytes: int
    """Body size of the last response (a sanity check: equal across targets)."""
    statuses: dict[str, int]
    """Response counts by status, warm-up included."""
    cpu_seconds: float | None = None
    """CPU time of the watched proxy process tree in the window (None: nothing watched)."""
    rss_bytes: int | None = None
    """Resident memory of the watched proxy process tree at the end of the window."""
    mock_cpu_seconds: float | None = None
    """CPU time of the mock upstream in the window."""
    store_cpu_seconds: float | None = None
    """CPU time of the proxy's Redis server in the window (None: the proxy has none)."""
    load_cpu_seconds: float | None = None
    """CPU time of the load generator itself in the window."""
    background_cpu_seconds: float | None = None
    """CPU time used in the window by processes outside the benchmark (noise)."""

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def per_request_us(self, seconds: float | None) -> float | None:
        """``seconds`` of CPU spread over the completed requests, in µs (None: unknown)."""
        if seconds is None or self.requests == 0:
            return None
        return seconds * 1e6 / self.requests

    @property
    def cpu_us_per_request(self) -> float | None:
        """Proxy CPU microseconds per completed request (None when not measured)."""
        return self.per_request_us(self.cpu_seconds)

    @property
    def background_cpu_share(self) -> float | None:
        """Background CPU as a fraction of one CPU over the window (None when unknown)."""
        if self.background_cpu_seconds is None or self.seconds <= 0:
            return None
        return self.background_cpu_seconds / self.seconds

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, derived figures included."""
        data = asdict(self)
        data["rps"] = round(self.rps, 1)
        for name, seconds in (
            ("cpu_us_per_request", self.cpu_seconds),
            ("mock_cpu_us_per_request", self.mock_cpu_seconds),
            ("store_cpu_us_per_request", self.store_cpu_seconds),
            ("load_cpu_us_per_request", self.load_cpu_seconds),
        ):
            per_request = self.per_request_us(seconds)
            data[name] = None if per_request is None else round(per_request, 1)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        """The inverse of ``to_dict`` (derived figures are ignored)."""
        names = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclass(frozen=True)
class CountCost:
    """How long counting one prompt took: the median and the fastest of ``runs`` counts."""

    model: str
    encoding: str
    target_tokens: int
    tokens: int
    """What the counter answered for the body."""
    body_bytes: int
    runs: int
    median_us: float
    min_us: float

    @property
    def tokens_per_s(self) -> float:
        """Prompt tokens counted per second at the median."""
        return self.tokens * 1e6 / self.median_us if self.median_us > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, derived figures included."""
        return {**asdict(self), "tokens_per_s": round(self.tokens_per_s)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CountCost:
        """The inverse of ``to_dict`` (derived figures are ignored)."""
        names = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})
