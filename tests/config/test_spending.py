"""``[budgets]``, ``[teams.<name>]`` and the ``usd_*`` fields of ``[[keys]]``."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.config import Config, ConfigError, load_config
from sentinel.config.budgets import Budgets
from sentinel.config.spending import BudgetSettings

UPSTREAM = '[[upstreams]]\nname = "u"\nbase_url = "http://127.0.0.1:9000/v1"\n'
KEY = '[[keys]]\nname = "s"\nkey = "sk-test-0123456789"\n'


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "sentinel.toml"
    path.write_text(UPSTREAM + text, encoding="utf-8")
    return load_config(path, env={})


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value.problems


def test_defaults_alert_at_half_four_fifths_and_all(tmp_path: Path) -> None:
    """Without the sections: thresholds 0.5, 0.8, 1.0 (basis points), no webhook, no teams."""
    assert load(tmp_path, "").budgets == BudgetSettings((5_000, 8_000, 10_000), None, ())


def test_key_team_and_alert_settings_are_read_exactly(tmp_path: Path) -> None:
    """Decimal strings become nano-USD; thresholds are sorted and de-duplicated."""
    config = load(
        tmp_path,
        KEY + 'team = "lab"\nusd_per_day = "1.5"\nusd_total = "0.000000001"\n'
        '[teams.lab]\nusd_per_month = "400"\n'
        '[budgets]\nalert_thresholds = [1.0, "0.25", 0.25]\n'
        '[budgets.webhook]\nurl = "https://alerts.example.com/x"\n',
    )
    assert config.keys[0].budgets == Budgets(usd_per_day=1_500_000_000, usd_total=1)
    assert config.budgets.team("lab") == Budgets(usd_per_month=400_000_000_000)
    assert config.budgets.alert_thresholds == (2_500, 10_000)
    assert config.budgets.webhook is not None
    assert config.budgets.webhook.url == "https://alerts.example.com/x"


def test_bad_amounts_and_thresholds_are_reported_with_their_paths(tmp_path: Path) -> None:
    """Negative, float and over-precise amounts, out-of-range thresholds, unknown keys."""
    found = problems(
        tmp_path,
        KEY + 'usd_per_week = -1\nusd_total = 2.5\nusd_per_day = "0.0000000001"\n'
        '[teams.lab]\nusd_per_mnth = "1"\n'
        "[budgets]\nalert_thresholds = [0, 1.5]\n",
    )
    assert any(p.startswith("keys[0].usd_per_week:") for p in found)
    assert any(p.startswith("keys[0].usd_total: must be a decimal string") for p in found)
    assert any(p.startswith("keys[0].usd_per_day: has more than 9 decimals") for p in found)
    assert any(
        "teams.lab.usd_per_mnth: unknown key (did you mean 'usd_per_month'?)" == p for p in found
    )
    assert any(p.startswith("budgets.alert_thresholds[0]:") for p in found)
    assert any(p.startswith("budgets.alert_thresholds[1]:") for p in found)


def test_team_budgets_are_refused_on_a_redis_cluster(tmp_path: Path) -> None:
    """A team's counters and its keys' live under different hash tags."""
    found = problems(
        tmp_path,
        '[redis]\nurl = "redis://127.0.0.1:7000/0"\ncluster = true\n[teams.lab]\nusd_total = "5"\n',
    )
    assert any(p.startswith("teams: team budgets need a single Redis server") for p in found)
