"""``[limits]`` settings as a frozen dataclass, for ``config.py`` to fill and validate.

Every ``[[keys]]`` entry may set its own ``rpm``, ``tpm``, ``max_parallel`` and
``tokens_per_{day,week,month}``; what it leaves out comes from here. The timing fields shape
the windows and leases of the whole store.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentinel.limits.spec import LimitSpec
from sentinel.limits.window import Timing

__all__ = ["LimitDefaults"]


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

    def spec(
        self,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        max_parallel: int | None = None,
        tokens_per_day: int | None = None,
        tokens_per_week: int | None = None,
        tokens_per_month: int | None = None,
    ) -> LimitSpec:
        """One key's limits: each value it sets, else this section's default."""
        return LimitSpec(
            rpm=_either(rpm, self.rpm),
            tpm=_either(tpm, self.tpm),
            max_parallel=_either(max_parallel, self.max_parallel),
            tokens_per_day=_either(tokens_per_day, self.tokens_per_day),
            tokens_per_week=_either(tokens_per_week, self.tokens_per_week),
            tokens_per_month=_either(tokens_per_month, self.tokens_per_month),
            timezone=self.timezone,
        )

    @property
    def timing(self) -> Timing:
        """The window and lease geometry for the stores."""
        return Timing(
            bucket_ms=self.bucket_ms,
            lease_ttl_ms=self.lease_ttl_ms,
            parallel_retry_ms=self.parallel_retry_ms,
        )

    def problems(self) -> list[str]:
        """Every invalid field as ``"field: message"``; empty when all is well."""
        found = self.spec().problems()
        if self.default_completion_reserve < 0:
            found.append(
                f"default_completion_reserve: must be >= 0, got {self.default_completion_reserve}"
            )
        return found + self.timing.problems()


def _either(value: int | None, default: int | None) -> int | None:
    return default if value is None else value
