"""Dollar budgets of a principal, in integer nano-USD (10⁻⁹ USD).

Budgets are written as decimal strings (``usd_per_day = "5.00"``) in the TOML file, the keys
API, identity-service principals and JWT claims; they are held as whole nano-dollars so that
every sum and comparison is exact integer math, in Python and in Lua (below 2^53, about
$9M per counter). Plain data: ``sentinel.money`` enforces them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

__all__ = ["BUDGET_FIELDS", "MAX_NANO_USD", "NANO", "Budgets", "format_usd", "parse_usd"]

NANO = 1_000_000_000
"""Nano-dollars per dollar."""
MAX_NANO_USD = 2**53 - 1
"""The largest amount a counter holds exactly (about $9.007M)."""
BUDGET_FIELDS = ("usd_per_day", "usd_per_week", "usd_per_month", "usd_total")


def parse_usd(value: object) -> int:
    """``value`` (a decimal string, or an int) as whole nano-USD; ``ValueError`` with a
    readable reason for anything else: floats (inexact), negatives, more than nine decimals,
    or amounts above ``MAX_NANO_USD``."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f'must be a decimal string such as "5.00", got {value!r}')
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, ValueError):
        shown = str(value)[:40]
        raise ValueError(f'must be a decimal string such as "5.00", got {shown!r}') from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"must be a finite amount of at least 0, got {str(value)[:40]!r}")
    nano = amount * NANO
    if nano != nano.to_integral_value():
        raise ValueError(f"has more than 9 decimals, got {str(value)[:40]!r}")
    if nano > MAX_NANO_USD:
        raise ValueError(f"must be at most {format_usd(MAX_NANO_USD)}, got {str(value)[:40]!r}")
    return int(nano)


def format_usd(nano: int) -> str:
    """Whole nano-USD as the shortest exact decimal string (``1500000000`` → ``"1.5"``)."""
    sign = "-" if nano < 0 else ""
    whole, frac = divmod(abs(nano), NANO)
    if not frac:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:09d}".rstrip("0")


@dataclass(frozen=True, slots=True)
class Budgets:
    """A principal's dollar budgets in nano-USD; ``None`` means no budget on that window.

    ``usd_per_day``/``week``/``month`` are calendar windows in ``[limits] timezone``;
    ``usd_total`` never resets.
    """

    usd_per_day: int | None = None
    usd_per_week: int | None = None
    usd_per_month: int | None = None
    usd_total: int | None = None

    @property
    def any(self) -> bool:
        """Whether any budget applies."""
        return any(getattr(self, name) is not None for name in BUDGET_FIELDS)

    def as_strings(self) -> dict[str, str | None]:
        """Each budget as an exact decimal string (None where absent), for JSON views."""
        return {
            name: None if (v := getattr(self, name)) is None else format_usd(v)
            for name in BUDGET_FIELDS
        }
