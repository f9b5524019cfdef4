"""Tests for ``[cors]`` and ``[compression]``: exact origins, credentials never with ``*``."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.config import Config, ConfigError, load_config
from sentinel.config.edge import CompressionConfig, CorsConfig, origin_problem

UPSTREAM = '[[upstreams]]\nname = "u"\nbase_url = "http://127.0.0.1:9000/v1"\n'


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "sentinel.toml"
    path.write_text(UPSTREAM + text, encoding="utf-8")
    return load_config(path, env={})


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value.problems


def test_absent_sections_mean_no_cors_and_default_compression(tmp_path: Path) -> None:
    """Without [cors] there is no CORS config at all; compression has its defaults."""
    config = load(tmp_path, "")
    assert config.cors is None
    assert config.compression == CompressionConfig()


def test_cors_section_is_read(tmp_path: Path) -> None:
    """Origins, credentials, max age and extra headers (lowercased) are read as written."""
    config = load(
        tmp_path,
        '[cors]\nallow_origins = ["https://app.example.com", "http://localhost:5173"]\n'
        'allow_credentials = true\nmax_age_s = 60\nallow_headers = ["X-Team"]\n',
    )
    assert config.cors == CorsConfig(
        allow_origins=("https://app.example.com", "http://localhost:5173"),
        allow_credentials=True,
        max_age_s=60,
        allow_headers=("x-team",),
    )


def test_star_is_allowed_alone_without_credentials(tmp_path: Path) -> None:
    """``["*"]`` allows any origin when it is the one entry."""
    config = load(tmp_path, '[cors]\nallow_origins = ["*"]\n')
    assert config.cors is not None and config.cors.allows_any_origin


def test_star_with_credentials_is_a_config_error(tmp_path: Path) -> None:
    """Credentials with any origin would let every site act as the signed-in user."""
    found = problems(tmp_path, '[cors]\nallow_origins = ["*"]\nallow_credentials = true\n')
    assert len(found) == 1
    assert found[0].startswith("cors.allow_credentials: cannot be true")


def test_star_among_other_origins_is_a_config_error(tmp_path: Path) -> None:
    """``*`` mixed with named origins is ambiguous."""
    found = problems(tmp_path, '[cors]\nallow_origins = ["*", "https://a.example"]\n')
    assert found == ['cors.allow_origins: "*" allows every origin; list no others with it']


def test_every_bad_origin_is_reported_with_its_index(tmp_path: Path) -> None:
    """Each malformed origin is its own problem, with its path."""
    found = problems(
        tmp_path,
        '[cors]\nallow_origins = ["https://ok.example", "https://app.example.com/", "ftp://x",'
        ' "https://*.example.com"]\nmax_age_s = -1\nallow_headers = ["bad header"]\n',
    )
    assert [p.split(":", 1)[0] for p in found] == [
        "cors.allow_origins[1]",
        "cors.allow_origins[2]",
        "cors.allow_origins[3]",
        "cors.max_age_s",
        "cors.allow_headers[0]",
    ]
    assert "'https://app.example.com'" in found[0]  # the spelling to use instead


def test_cors_needs_origins_and_rejects_unknown_keys(tmp_path: Path) -> None:
    """An empty [cors] says what is missing; a misspelt key gets a suggestion."""
    found = problems(tmp_path, "[cors]\nallow_origin = []\n")
    assert found == [
        'cors.allow_origins: is required (exact origins, or ["*"] for any)',
        "cors.allow_origin: unknown key (did you mean 'allow_origins'?)",
    ]


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("https://app.example.com", None),
        ("http://localhost:5173", None),
        ("http://127.0.0.1:8080", None),
        ("http://[::1]:3000", None),
        ("https://App.Example.com", "browsers send this origin as 'https://app.example.com'"),
        ("HTTPS://app.example.com", "browsers send this origin as 'https://app.example.com'"),
        ("https://app.example.com:443", "browsers send this origin as 'https://app.example.com'"),
        ("https://app.example.com/path", "browsers send this origin as 'https://app.example.com'"),
        ("https://user@app.example.com", "expected an origin"),
        ("https://app.example.com?x=1", "expected an origin"),
        ("app.example.com", "expected an origin"),
        ("https://app.example.com:99999", "expected an origin"),
        ("null", "the 'null' origin"),
        ("https://bücher.example", "punycode"),
        ("https://*.example.com", "exact origins only"),
    ],
)
def test_origin_problem(origin: str, expected: str | None) -> None:
    """Origins must be written exactly as browsers send them in ``Origin``."""
    problem = origin_problem(origin)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem


def test_compression_section_is_read_and_checked(tmp_path: Path) -> None:
    """Level 1-9, a non-negative threshold, and an off switch."""
    config = load(tmp_path, "[compression]\nresponses = false\nmin_bytes = 0\nlevel = 6\n")
    assert config.compression == CompressionConfig(responses=False, min_bytes=0, level=6)
    found = problems(tmp_path, "[compression]\nlevel = 10\nmin_bytes = -1\n")
    assert found == [
        "compression.min_bytes: must be at least 0, got -1",
        "compression.level: must be at most 9, got 10",
    ]
