"""What a settlement charged: each money counter with its value after the charge and its
limit, for the budget alerts (``sentinel.money.alerts``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from sentinel.limits.spec import Dimension

if TYPE_CHECKING:
    from sentinel.limits.decision import Reservation
    from sentinel.limits.window import SettlePlan

__all__ = ["Spending", "spending_of"]


class Spending:
    """After a settlement that charged money: each money counter charged, iterated as
    (dimension, counter name, nano-USD charged on it so far, its limit; 0 for credits), the
    key's then the team's. The four columns are kept as they came (the reservation's shared
    tuples and the store's reply) and paired only when iterated: most settlements reach no
    alert threshold, which ``values`` and ``limits`` alone tell."""

    __slots__ = ("dimensions", "limits", "names", "values")

    def __init__(
        self,
        dimensions: tuple[Dimension, ...],
        names: tuple[str, ...],
        values: Sequence[int],
        limits: tuple[int, ...],
    ) -> None:
        if not len(dimensions) == len(names) == len(values) == len(limits):
            raise ValueError("a settlement's counters, values and limits must pair up")
        self.dimensions = dimensions
        self.names = names
        self.values = values
        self.limits = limits

    def __iter__(self) -> Iterator[tuple[Dimension, str, int, int]]:
        return zip(self.dimensions, self.names, self.values, self.limits, strict=True)

    def __len__(self) -> int:
        return len(self.values)

    def __eq__(self, other: object) -> bool:
        """Equal to another ``Spending`` pairing the same counters with the same values."""
        if not isinstance(other, Spending):
            return NotImplemented
        return tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]  # its values may be a list

    def __repr__(self) -> str:
        return f"Spending({tuple(self)!r})"


def spending_of(plan: SettlePlan, reservation: Reservation, values: Sequence[int]) -> Spending:
    """Pair the counters a settlement charged with their values after it and their limits."""
    names = plan.money_fields + plan.team_fields if plan.team_fields else plan.money_fields
    return Spending(reservation.spend_dimensions, names, values, reservation.spend_limits)
