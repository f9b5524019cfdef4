"""Tests for ``[identity]`` and ``[identity.jwt]``: either part alone, every problem named."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.config import Config, ConfigError, load_config
from sentinel.config.identity import ASYMMETRIC_ALGORITHMS, IdentityServiceConfig, JwtConfig

UPSTREAM = '[[upstreams]]\nname = "u"\nbase_url = "http://127.0.0.1:9000/v1"\n'
JWT = (
    '[identity.jwt]\njwks_url = "https://issuer.test/jwks.json"\n'
    'issuer = "https://issuer.test/"\naudience = "sentinel"\n'
)


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "sentinel.toml"
    path.write_text(UPSTREAM + text, encoding="utf-8")
    return load_config(path, env=env or {})


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value.problems


def test_no_identity_section_means_neither_part(tmp_path: Path) -> None:
    """Without [identity], no service and no JWTs."""
    config = load(tmp_path, "")
    assert config.identity.service is None and config.identity.jwt is None


def test_service_is_read_and_its_token_is_a_secret(tmp_path: Path) -> None:
    """Every field is read; the token may come from the environment and is redacted."""
    config = load(
        tmp_path,
        '[identity]\nurl = "https://identity.test/v1/resolve"\ntoken = "env:IDP_TOKEN"\n'
        "ttl_s = 30\nmax_stale_s = 300\nnegative_ttl_s = 2\ntimeout_ms = 500\n"
        "max_entries = 10\nmax_unknown_entries = 20\nmax_lookups = 4\n"
        "breaker_failures = 2\nbreaker_cooldown_ms = 100\n",
        env={"IDP_TOKEN": "idp-secret-token"},
    )
    assert config.identity.service == IdentityServiceConfig(
        url="https://identity.test/v1/resolve",
        token="idp-secret-token",
        ttl_s=30,
        max_stale_s=300,
        negative_ttl_s=2,
        timeout_ms=500,
        max_entries=10,
        max_unknown_entries=20,
        max_lookups=4,
        breaker_failures=2,
        breaker_cooldown_ms=100,
    )
    assert config.identity.jwt is None
    assert "idp-secret-token" in config.secrets()


def test_jwt_alone_with_defaults(tmp_path: Path) -> None:
    """[identity.jwt] works without a service; asymmetric algorithms by default."""
    config = load(
        tmp_path,
        JWT + '[identity.jwt.defaults]\nrpm = 60\nteam = "sso"\nmodels = ["gpt-4o*"]\n'
        'usd_per_month = "20"\n',
    )
    assert config.identity.service is None
    jwt = config.identity.jwt
    assert jwt is not None
    assert jwt.algorithms == ASYMMETRIC_ALGORITHMS
    assert dict(jwt.defaults) == {
        "rpm": 60,
        "team": "sso",
        "models": ("gpt-4o*",),
        "usd_per_month": "20",
    }
    assert (jwt.name_claim, jwt.leeway_s, jwt.jwks_refetch_s) == ("sub", 30, 30)


def test_service_settings_need_a_url(tmp_path: Path) -> None:
    """A service field without url is a problem naming url."""
    assert problems(tmp_path, "[identity]\nttl_s = 5\n") == ["identity.url: is required"]


def test_max_stale_below_ttl_is_a_problem(tmp_path: Path) -> None:
    """Known keys cannot stop working before they stop being fresh."""
    found = problems(
        tmp_path, '[identity]\nurl = "http://i.test/r"\nttl_s = 60\nmax_stale_s = 10\n'
    )
    assert found == ["identity.max_stale_s: must be at least ttl_s (60), got 10"]


@pytest.mark.parametrize("algorithm", ["HS256", "none", "hs512"])
def test_symmetric_and_unsigned_algorithms_are_refused(tmp_path: Path, algorithm: str) -> None:
    """A JWKS holds public keys: an HMAC or ``none`` algorithm would be token confusion."""
    found = problems(tmp_path, JWT + f'algorithms = ["RS256", "{algorithm}"]\n')
    assert len(found) == 1
    assert found[0].startswith("identity.jwt.algorithms[1]: a shared-secret or unsigned")


def test_jwt_needs_issuer_audience_and_jwks_url(tmp_path: Path) -> None:
    """Without issuer or audience a token for another service would pass."""
    found = problems(tmp_path, "[identity.jwt]\n")
    assert found == [
        "identity.jwt.jwks_url: is required",
        "identity.jwt.issuer: is required",
        "identity.jwt.audience: is required",
    ]


def test_bad_defaults_are_named(tmp_path: Path) -> None:
    """Unknown fields (admin among them), bad limits and budgets in defaults are problems."""
    found = problems(
        tmp_path,
        JWT + '[identity.jwt.defaults]\nadmin = true\nrpm = -1\nusd_total = 1.5\nname = "x"\n',
    )
    assert "identity.jwt.defaults.rpm: must be at least 0, got -1" in found
    assert any(p.startswith("identity.jwt.defaults.usd_total: must be a decimal") for p in found)
    assert any(p.startswith("identity.jwt.defaults.admin: unknown key") for p in found)
    assert any(p.startswith("identity.jwt.defaults.name: unknown key") for p in found)


def test_leeway_is_small_and_unknown_keys_are_problems(tmp_path: Path) -> None:
    """A leeway of an hour is no leeway; a typo gets a suggestion."""
    found = problems(tmp_path, JWT + "leeway_s = 3600\naudiance = 1\n")
    assert "identity.jwt.leeway_s: must be at most 300 (a small clock skew), got 3600" in found
    assert "identity.jwt.audiance: unknown key (did you mean 'audience'?)" in found


def test_name_claim_must_not_be_the_limits_claim(tmp_path: Path) -> None:
    """``sentinel`` holds limits; it cannot also be the name."""
    found = problems(tmp_path, JWT + 'name_claim = "sentinel"\n')
    assert found == ["identity.jwt.name_claim: 'sentinel' is the claim of limits, not a name"]


def test_jwt_config_defaults_are_sane() -> None:
    """The documented defaults."""
    jwt = JwtConfig(jwks_url="https://i/j", issuer="i", audience="a")
    assert (jwt.jwks_ttl_s, jwt.jwks_refetch_s, jwt.leeway_s) == (300, 30, 30)
