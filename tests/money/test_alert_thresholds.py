"""Which settlements reach an alert threshold: exactly at it alerts, one nano-USD below does not.

``BudgetAlerts.observe`` first compares each counter with the least value that reaches the
lowest threshold of its limit (worked out once per set of limits), and only then looks at the
thresholds one by one; these pin that shortcut to the exact arithmetic of ``value / limit``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.limits.decision import Reservation
from sentinel.limits.spec import Dimension
from sentinel.limits.spending import Spending
from sentinel.money.alerts import BudgetAlerts, SqliteClaims

DAY, TOTAL, CREDITS = Dimension.USD_DAY, Dimension.USD_TOTAL, Dimension.CREDITS
LIMITS = (1_000_000_001, 3_000, 0)  # an odd limit, so the threshold is not a whole nano-USD
DIMENSIONS = (DAY, TOTAL, CREDITS)
NAMES = ("usd_day:2026-12-07", "usd_total", "credits")


def _reservation() -> Reservation:
    return Reservation(
        key_name="cfg:alice",
        request_id="req_1",
        reservation_id="r1",
        tokens=10,
        bucket_start_ms=0,
        counts_requests=True,
        counts_tokens=True,
        has_lease=False,
        quotas=(),
        timezone="UTC",
        nano_usd=100,
        money=(DAY, TOTAL),
        credits=True,
        spend_dimensions=DIMENSIONS,
        spend_limits=LIMITS,
    )


def _alerts(tmp_path: Path) -> BudgetAlerts:
    return BudgetAlerts((5_000, 8_000, 10_000), SqliteClaims(tmp_path))  # 50%, 80%, 100%


def _queued(alerts: BudgetAlerts, values: tuple[int, int, int]) -> list[tuple[str, int]]:
    alerts.observe(_reservation(), Spending(DIMENSIONS, NAMES, values, LIMITS))
    found = []
    while not alerts._queue.empty():
        alert = alerts._queue.get_nowait()
        found.append((alert.period, alert.threshold))
    return found


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ((500_000_000, 1_499, 10**12), []),  # just below half of both; credits never alert
        ((500_000_001, 0, 0), [("usd_day:2026-12-07", 5_000)]),  # ceil(1_000_000_001 / 2)
        ((0, 1_500, 0), [("usd_total", 5_000)]),
        ((0, 2_400, 0), [("usd_total", 5_000), ("usd_total", 8_000)]),
        ((0, 3_000, 0), [("usd_total", 5_000), ("usd_total", 8_000), ("usd_total", 10_000)]),
    ],
)
def test_a_threshold_is_reached_exactly_at_its_share_of_the_limit(
    tmp_path: Path, values: tuple[int, int, int], expected: list[tuple[str, int]]
) -> None:
    assert _queued(_alerts(tmp_path), values) == expected


def test_each_alert_is_queued_once_per_process(tmp_path: Path) -> None:
    alerts = _alerts(tmp_path)
    assert _queued(alerts, (0, 1_500, 0)) == [("usd_total", 5_000)]
    assert _queued(alerts, (0, 1_600, 0)) == []  # the same window and threshold again
    assert _queued(alerts, (0, 2_400, 0)) == [("usd_total", 8_000)]


def test_spending_pairs_each_counter_with_its_value_and_limit() -> None:
    spent = Spending(DIMENSIONS, NAMES, [1, 2, 3], LIMITS)
    assert len(spent) == 3
    assert list(spent) == [
        (DAY, "usd_day:2026-12-07", 1, 1_000_000_001),
        (TOTAL, "usd_total", 2, 3_000),
        (CREDITS, "credits", 3, 0),
    ]
    assert spent == Spending(DIMENSIONS, NAMES, (1, 2, 3), LIMITS)
    assert spent != Spending(DIMENSIONS, NAMES, (1, 2, 4), LIMITS)
    with pytest.raises(ValueError, match="pair up"):
        Spending(DIMENSIONS, NAMES, [1, 2], LIMITS)
