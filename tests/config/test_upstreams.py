"""``[[upstreams]]`` routing fields, ``[routing]`` and ``[models]`` in the config loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.config import Config, ConfigError, ModelAlias, RoutingConfig, load_config

UPSTREAM = '[[upstreams]]\nname = "u"\nbase_url = "http://127.0.0.1:9000/v1"\n'


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "sentinel.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, env=env or {})


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value.problems


def test_full_routing_config(tmp_path: Path) -> None:
    """Every new field is read: kinds, priorities, weights, rotated keys, azure, aliases."""
    text = """
[routing]
max_attempts = 4
breaker_failure_ratio = 0.25
breaker_cooldown_ms = 500

[models]
"gpt-4o" = ["primary:gpt-4o", "az:gpt-4o-2024-11-20"]

[[upstreams]]
name = "primary"
base_url = "https://api.openai.com/v1"
api_keys = ["sk-one-0000", "env:SECOND_KEY"]
priority = 0
weight = 3
health_check_interval_s = 10

[[upstreams]]
name = "az"
kind = "azure"
base_url = "https://x.openai.azure.com"
api_key = "az-key-0000"
api_version = "2024-10-21"
deployments = { "gpt-4o-2024-11-20" = "prod-4o" }
priority = 1
"""
    config = load(tmp_path, text, {"SECOND_KEY": "sk-two-1111"})
    primary, azure = config.upstreams
    assert primary.keys == ("sk-one-0000", "sk-two-1111") and primary.weight == 3
    assert primary.health_check_interval_s == 10
    assert azure.kind == "azure" and azure.deployments == (("gpt-4o-2024-11-20", "prod-4o"),)
    assert config.routing == RoutingConfig(
        max_attempts=4, breaker_failure_ratio=0.25, breaker_cooldown_ms=500
    )
    assert config.aliases == (
        ModelAlias("gpt-4o", (("primary", "gpt-4o"), ("az", "gpt-4o-2024-11-20"))),
    )
    assert "sk-two-1111" in config.secrets()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('kind = "bedrock"', "upstreams[0].kind: expected one of 'openai', 'azure',"),
        ("weight = 0", "upstreams[0].weight: must be at least 1, got 0"),
        ("priority = -1", "upstreams[0].priority: must be at least 0, got -1"),
        ('api_version = "2024"', "upstreams[0].api_version: only azure upstreams"),
        ('deployments = { a = "b" }', "upstreams[0].deployments: only azure upstreams"),
        ('api_keys = ["ok-key", ""]', "upstreams[0].api_keys[1]: must not be empty"),
        ('api_keys = "k"', "upstreams[0].api_keys: expected a non-empty array"),
        ('api_key = "a"\napi_keys = ["b"]', "upstreams[0].api_keys: set either"),
        ('kind = "azure"', "upstreams[0].api_version: is required"),
    ],
)
def test_bad_upstream_fields(tmp_path: Path, extra: str, expected: str) -> None:
    """Each bad routing field of an upstream is one problem with its path."""
    found = problems(tmp_path, UPSTREAM + extra + "\n")
    assert len(found) == 1 and found[0].startswith(expected), found


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("[routing]\nmax_attempts = 0", "routing.max_attempts: must be at least 1, got 0"),
        ("[routing]\nbreaker_failure_ratio = 1.5", "routing.breaker_failure_ratio: must be"),
        ("[routing]\nbreaker_failure_ratio = true", "routing.breaker_failure_ratio: expected"),
        ("[routing]\nretries = 2", "routing.retries: unknown key"),
        ("[routing]\nbackoff_ms = 100\nbackoff_max_ms = 10", "routing.backoff_max_ms: must be"),
        ('[models]\nx = ["nope:m"]', "models.x[0]: no upstream is named 'nope'"),
        ('[models]\nx = ["u"]', "models.x[0]: expected \"upstream:model\", got 'u'"),
        ("[models]\nx = []", "models.x: expected a non-empty array"),
    ],
)
def test_bad_routing_and_models(tmp_path: Path, section: str, expected: str) -> None:
    """Bad [routing] and [models] values are reported with their paths."""
    found = problems(tmp_path, UPSTREAM + section + "\n")
    assert len(found) == 1 and found[0].startswith(expected), found
