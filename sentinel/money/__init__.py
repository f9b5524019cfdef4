"""Money: the price book, exact costs, and (beside them) dollar budgets and credits."""

from sentinel.money.prices import Price, PriceBook, charge_nano, cost_of, hold_nano

__all__ = ["Price", "PriceBook", "charge_nano", "cost_of", "hold_nano"]
