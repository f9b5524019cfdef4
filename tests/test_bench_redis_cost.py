"""``python -m bench.redis_cost``: redis-server's instructions per request, by callgrind."""

from __future__ import annotations

import re
import shutil

import pytest

from bench import redis_cost
from bench.redis_cost import Counted, policy_spec, render
from bench.targets import POLICY_LIMITS


def test_the_policy_spec_is_the_policy_targets_and_budgets_add_every_window() -> None:
    spec = policy_spec(budgets=False)
    assert (spec.rpm, spec.tpm, spec.max_parallel, spec.tokens_per_day) == (
        POLICY_LIMITS["rpm"],
        POLICY_LIMITS["tpm"],
        POLICY_LIMITS["max_parallel"],
        POLICY_LIMITS["tokens_per_day"],
    )
    assert not spec.has_money
    budgeted = policy_spec(budgets=True)
    assert budgeted.has_money and budgeted.budgets.usd_total == 1_000_000 * 10**9


def test_the_report_gives_instructions_per_unit() -> None:
    table = render([(8, Counted("admission + settlement", 2_400_000, 10))])
    assert "| 8 | admission + settlement | 240,000 |" in table


@pytest.mark.parametrize("argv", [["--batch", "0"], ["--batch", "x"], ["--rounds", "0"]])
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        redis_cost.main(argv)
    assert exited.value.code == 2


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind (.ci/run installs it)")
def test_counts_fewer_instructions_per_request_when_calls_carry_more(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A real redis-server under callgrind: every measurement counted, and a call carrying
    eight requests costs each of them far less than a call of its own."""
    assert redis_cost.main(["--batch", "1,8", "--rounds", "16"]) == 0
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \| ([\d,]+) \|$", capsys.readouterr().out, re.M)
    counted = {(int(batch), what.strip()): int(n.replace(",", "")) for batch, what, n in rows}
    assert len(counted) == 6 and all(n > 10_000 for n in counted.values())
    alone = counted[(1, "admission + settlement")]
    together = counted[(8, "admission + settlement")]
    assert together < alone * 0.6
