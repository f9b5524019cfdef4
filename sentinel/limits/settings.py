"""A key's limits from the ``[limits]`` defaults, and the store's timing, as the limits use them."""

from __future__ import annotations

from sentinel.config.limits import LimitDefaults
from sentinel.limits.spec import LimitSpec
from sentinel.limits.window import Timing

__all__ = ["key_spec", "timing_of"]


def key_spec(
    defaults: LimitDefaults,
    *,
    rpm: int | None = None,
    tpm: int | None = None,
    max_parallel: int | None = None,
    tokens_per_day: int | None = None,
    tokens_per_week: int | None = None,
    tokens_per_month: int | None = None,
) -> LimitSpec:
    """One key's limits: each value it sets, else the ``[limits]`` default."""
    return LimitSpec(
        rpm=_either(rpm, defaults.rpm),
        tpm=_either(tpm, defaults.tpm),
        max_parallel=_either(max_parallel, defaults.max_parallel),
        tokens_per_day=_either(tokens_per_day, defaults.tokens_per_day),
        tokens_per_week=_either(tokens_per_week, defaults.tokens_per_week),
        tokens_per_month=_either(tokens_per_month, defaults.tokens_per_month),
        timezone=defaults.timezone,
    )


def timing_of(defaults: LimitDefaults) -> Timing:
    """The window and lease geometry ``[limits]`` sets for the stores."""
    return Timing(
        bucket_ms=defaults.bucket_ms,
        lease_ttl_ms=defaults.lease_ttl_ms,
        parallel_retry_ms=defaults.parallel_retry_ms,
    )


def _either(value: int | None, default: int | None) -> int | None:
    return default if value is None else value
