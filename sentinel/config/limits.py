"""``[limits]``: the default limits of every key and the geometry of the limit store.

Every ``[[keys]]`` entry may set its own ``rpm``, ``tpm``, ``max_parallel`` and
``tokens_per_{day,week,month}``; what it leaves out comes from here. The timing fields shape
the windows and leases of the whole store. Plain data: ``sentinel.limits`` turns it into the
specs and timing its stores run on.
"""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "LIMIT_FIELDS",
    "MAX_AMOUNT",
    "WINDOW_MS",
    "LimitDefaults",
    "limit_problems",
    "timing_problems",
]

MAX_AMOUNT = 2**53 - 1
"""The largest count or limit: Lua's doubles hold every whole number up to it exactly."""
WINDOW_MS = 60_000
"""The sliding windows of ``rpm`` and ``tpm``: one minute."""
LIMIT_FIELDS = (
    "rpm",
    "tpm",
    "max_parallel",
    "tokens_per_day",
    "tokens_per_week",
    "tokens_per_month",
)


def limit_problems(limits: dict[str, object], timezone: str) -> list[str]:
    """Every invalid limit or time zone as ``"field: message"`` (None limits are absent)."""
    found = [
        f"{name}: must be a whole number from 0 to {MAX_AMOUNT}, got {value!r}"
        for name, value in limits.items()
        if value is not None
        and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_AMOUNT)
    ]
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        found.append(f"timezone: unknown time zone {timezone[:64]!r}")
    return found


def timing_problems(
    bucket_ms: int, lease_ttl_ms: int, parallel_retry_ms: int, window_ms: int = WINDOW_MS
) -> list[str]:
    """Every invalid field of the store's geometry as ``"field: message"``."""
    found = []
    if not 1 <= bucket_ms <= window_ms or window_ms % bucket_ms:
        found.append(f"bucket_ms: must divide {window_ms} evenly, got {bucket_ms}")
    if lease_ttl_ms < 1:
        found.append(f"lease_ttl_ms: must be >= 1, got {lease_ttl_ms}")
    if parallel_retry_ms < 1:
        found.append(f"parallel_retry_ms: must be >= 1, got {parallel_retry_ms}")
    return found


@dataclass(frozen=True, slots=True)
class LimitDefaults:
    """The ``[limits]`` section: default limits, the quota time zone, and store timing."""

    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    tokens_per_day: int | None = None
    tokens_per_week: int | None = None
    tokens_per_month: int | None = None
    timezone: str = "UTC"
    default_completion_reserve: int = 4096
    bucket_ms: int = 1_000
    lease_ttl_ms: int = 600_000
    parallel_retry_ms: int = 1_000

    def problems(self) -> list[str]:
        """Every invalid field as ``"field: message"``; empty when all is well."""
        found = limit_problems({n: getattr(self, n) for n in LIMIT_FIELDS}, self.timezone)
        if self.default_completion_reserve < 0:
            found.append(
                f"default_completion_reserve: must be >= 0, got {self.default_completion_reserve}"
            )
        return found + timing_problems(self.bucket_ms, self.lease_ttl_ms, self.parallel_retry_ms)
