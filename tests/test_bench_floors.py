"""``python -m bench.floors``: the least a request must do, counted by callgrind."""

from __future__ import annotations

import re
import shutil

import pytest

from bench import floors
from bench.floors import PIECES, Floor, render, run_piece


def test_a_floor_is_the_difference_per_run() -> None:
    assert Floor("clock", base=1_000_000, counted=1_300_000, runs=100).per_run == 3000


def test_the_report_names_each_piece_and_what_it_stands_for() -> None:
    table = render([Floor("future", 10, 20_010, 2), Floor("loop", 0, 400, 2)])
    assert "| future | 10,000 | a future made, resolved by the loop and awaited" in table
    assert "| loop | 200 |" in table


@pytest.mark.parametrize("piece", sorted(PIECES))
def test_every_piece_runs(piece: str) -> None:
    run_piece(piece, 3)


@pytest.mark.parametrize(
    "argv",
    [
        ["--pieces", "clock,nope"],
        ["--runs", "0"],
        ["--child", "nope", "3"],
        ["--child", "loop", "x"],
    ],
)
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        floors.main(argv)
    assert exited.value.code == 2


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind (.ci/run installs it)")
def test_counts_a_piece_under_callgrind(capsys: pytest.CaptureFixture[str]) -> None:
    """A future awaited costs thousands of instructions; an empty loop turn, a few hundred.
    Enough runs that the two processes' few differing startup instructions do not matter."""
    assert floors.main(["--pieces", "future,loop", "--runs", "5000"]) == 0
    table = capsys.readouterr().out
    counts = {
        name: float(value.replace(",", ""))
        for name, value in re.findall(r"^\| (\w+) \| (-?[\d,]+) \|", table, re.MULTILINE)
    }
    assert counts.keys() == {"future", "loop"}
    assert counts["future"] > 2_000
    assert counts["loop"] < counts["future"] / 4
