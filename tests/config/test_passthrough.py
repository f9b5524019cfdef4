"""``[passthrough]`` and the keys' ``admin`` and ``passthrough`` fields."""

from __future__ import annotations

from pathlib import Path

from sentinel.config import PassthroughConfig, load_config
from sentinel.config.families import DEFAULT_FAMILIES, FAMILIES, match_route
from tests.config.test_load import DIGEST, UPSTREAM, problems, write

KEY = f'[[keys]]\nname = "k"\nkey_sha256 = "{DIGEST}"\n'


def test_defaults_enable_the_documented_families() -> None:
    """Without ``[passthrough]`` the default families are on with all their methods."""
    config = PassthroughConfig()
    for name in FAMILIES:
        expected = FAMILIES[name].methods if name in DEFAULT_FAMILIES else frozenset()
        assert config.methods(name) == expected, name


def test_a_family_can_be_narrowed_enabled_and_turned_off(tmp_path: Path) -> None:
    """Named families take the given methods; ``[]`` turns one off; the rest keep defaults."""
    text = (
        UPSTREAM
        + '[passthrough.files]\nmethods = ["get"]\n'
        + '[passthrough.vector_stores]\nmethods = ["GET", "POST"]\n'
        + "[passthrough.audio]\nmethods = []\n"
        + "[passthrough.assistants]\n"
    )
    config = load_config(write(tmp_path, text), env={}).passthrough
    assert config.methods("files") == {"GET"}
    assert config.methods("vector_stores") == {"GET", "POST"}
    assert config.methods("audio") == frozenset()
    assert config.methods("assistants") == FAMILIES["assistants"].methods
    assert config.methods("images") == {"POST"}


def test_unknown_families_and_methods_are_reported(tmp_path: Path) -> None:
    """Every bad family or method is a problem with its path and a suggestion."""
    text = (
        UPSTREAM
        + '[passthrough.vector_store]\nmethods = ["GET"]\n'
        + '[passthrough.images]\nmethods = ["PUT"]\nextra = 1\n'
        + '[passthrough.files]\nmethods = "GET"\n'
    )
    found = problems(tmp_path, text)
    assert any(
        p.startswith("passthrough.vector_store: unknown") and "'vector_stores'" in p for p in found
    )
    assert any(p.startswith("passthrough.images.methods: unknown 'PUT'") for p in found)
    assert any(p.startswith("passthrough.images.extra: unknown key") for p in found)
    assert any(p.startswith("passthrough.files.methods: expected an array") for p in found)


def test_key_flags_are_read_and_checked(tmp_path: Path) -> None:
    """``admin`` is a boolean; ``passthrough`` names spending families only."""
    text = UPSTREAM + KEY + 'admin = true\npassthrough = ["images", "background"]\n'
    key = load_config(write(tmp_path, text), env={}).keys[0]
    assert key.admin and key.passthrough == ("images", "background")
    found = problems(
        tmp_path, UPSTREAM + KEY + 'admin = "yes"\npassthrough = ["imagez", "files"]\n'
    )
    assert any(p.startswith("keys[0].admin: expected true or false") for p in found)
    assert any(p.startswith("keys[0].passthrough[0]: unknown 'imagez'") for p in found)
    assert any(p.startswith("keys[0].passthrough[1]: unknown 'files'") for p in found)


def test_routes_match_only_their_shapes() -> None:
    """Family routes match whole segment shapes; the account's administration never does."""
    assert match_route(("files", "file-1", "content")).family.name == "files"  # type: ignore[union-attr]
    assert match_route(("vector_stores", "vs_1", "files", "f")).family.name == "vector_stores"  # type: ignore[union-attr]
    for segments in [
        ("files", "file-1", "content", "x"),
        ("chat", "completions", "a", "b", "c"),
        ("organization", "users"),
        ("realtime", "sessions"),
        ("embeddings",),
        ("completions",),
    ]:
        assert match_route(segments) is None, segments
