"""``python -m bench.proxy_cost``: a proxy's instructions per request, by callgrind."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest

from bench import proxy_cost
from bench.proxy_cost import Measured, config_of, render


def test_a_measurement_subtracts_what_the_idle_proxy_ran() -> None:
    measured = Measured("policy", "json/16", 100, busy=3_000_000_000, seconds=10.0, idle_per_s=2e6)
    assert measured.per_request == 29_800_000


def test_the_report_compares_each_target_with_the_first_in_its_scenario() -> None:
    table = render(
        "hypercorn",
        [
            Measured("policy", "json/16", 10, 20_000_000, 1.0, 0.0),
            Measured("budgets", "json/16", 10, 21_000_000, 1.0, 0.0),
            Measured("policy", "stream/16", 10, 30_000_000, 1.0, 0.0),
            Measured("budgets", "stream/16", 10, 31_500_000, 1.0, 0.0),
        ],
    )
    assert (
        "| target (hypercorn) | scenario | requests | instructions per request | against policy |"
        in table
    )
    assert "| budgets | json/16 | 10 | 2,100,000 | +5.0% |" in table
    assert "| budgets | stream/16 | 10 | 3,150,000 | +5.0% |" in table
    assert "| policy | stream/16 | 10 | 3,000,000 | +0.0% |" in table


@pytest.mark.parametrize("target", ["policy", "budgets", "accounting"])
@pytest.mark.parametrize("engine", ["hypercorn", "uvicorn"])
def test_a_target_keeps_its_config_with_a_redis_timeout_valgrind_keeps(
    tmp_path: Path, target: str, engine: str
) -> None:
    text = config_of(
        target, engine, "http://127.0.0.1:1/v1", "127.0.0.1:2", "redis://127.0.0.1:3/0", tmp_path
    )
    config = tomllib.loads(text)
    assert config["server"]["engine"] == engine
    assert config["redis"]["timeout_ms"] == 3000
    assert config["redis"]["url"] == "redis://127.0.0.1:3/0"
    if target == "budgets":
        assert config["keys"][0]["usd_total"] == "1000000"


@pytest.mark.parametrize(
    "argv",
    [
        ["--targets", "policy,nope"],
        ["--scenarios", "json"],
        ["--scenarios", "xml/16"],
        ["--scenarios", "json/0"],
        ["--requests", "0"],
        ["--idle", "0"],
        ["--engine", "gunicorn"],
    ],
)
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        proxy_cost.main(argv)
    assert exited.value.code == 2


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind (.ci/run installs it)")
def test_counts_a_real_proxy_under_callgrind(capsys: pytest.CaptureFixture[str]) -> None:
    """``sentinel serve`` under callgrind, driven by real requests: each one costs the proxy
    hundreds of thousands of instructions once its idle work is subtracted."""
    argv = ["--targets", "sentinel", "--scenarios", "json/2", "--requests", "8", "--idle", "1"]
    assert proxy_cost.main(argv) == 0
    rows = re.findall(
        r"^\| sentinel \| json/2 \| 8 \| ([\d,]+) \| ([+-][\d.]+%) \|$",
        capsys.readouterr().out,
        re.M,
    )
    assert len(rows) == 1
    per_request, against = rows[0]
    assert 200_000 < int(per_request.replace(",", "")) < 50_000_000
    assert against == "+0.0%"


@pytest.mark.parametrize("engine", ["hypercorn", "uvicorn"])
def test_bare_is_the_pass_through_on_the_same_engine(tmp_path: Path, engine: str) -> None:
    argv = proxy_cost.proxy_argv(
        "bare", engine, "http://127.0.0.1:1/v1", "127.0.0.1:2", tmp_path, ""
    )
    assert argv[1:3] == ["-m", "bench.passthrough"]
    assert argv[argv.index("--engine") + 1] == engine
    assert argv[argv.index("--upstream") + 1] == "http://127.0.0.1:1/v1"
    assert not list(tmp_path.iterdir())  # no config: the pass-through takes none


def test_bare_headers_adds_what_a_policy_answer_carries(tmp_path: Path) -> None:
    argv = proxy_cost.proxy_argv(
        "bare-headers", "hypercorn", "http://127.0.0.1:1/v1", "127.0.0.1:2", tmp_path, ""
    )
    assert "--policy-headers" in argv
    assert "--policy-headers" not in proxy_cost.proxy_argv(
        "bare", "hypercorn", "http://127.0.0.1:1/v1", "127.0.0.1:2", tmp_path, ""
    )
