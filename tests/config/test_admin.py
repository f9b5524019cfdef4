"""``[admin]``: the admin token, named ``[[admin.tokens]]`` and the audit's bounds."""

from __future__ import annotations

from pathlib import Path

from sentinel.config import load_config
from sentinel.config.admin import AdminToken
from tests.config.test_load import UPSTREAM, problems, write

ADMIN = "main-admin-token-0123456789"
OPS = "ops-admin-token-0123456789"


def test_named_tokens_are_read_with_the_admin_token_first(tmp_path: Path) -> None:
    """``[admin] token`` is named ``admin``; named tokens follow; all are secrets."""
    text = UPSTREAM + f'[admin]\ntoken = "{ADMIN}"\naudit_retention_days = 7\n'
    text += '[[admin.tokens]]\nname = "ops"\ntoken = "env:OPS_TOKEN"\n'
    config = load_config(write(tmp_path, text), env={"OPS_TOKEN": OPS})
    assert config.admin.named_tokens() == (AdminToken("admin", ADMIN), AdminToken("ops", OPS))
    assert config.admin.audit_retention_days == 7 and config.admin.is_enabled
    assert {ADMIN, OPS} <= set(config.secrets())


def test_named_tokens_must_be_distinct_and_long(tmp_path: Path) -> None:
    """Names and tokens are unique (``admin`` included); named tokens have 16+ characters."""
    text = UPSTREAM + f'[admin]\ntoken = "{ADMIN}"\naudit_max_entries = 5\n'
    text += f'[[admin.tokens]]\nname = "admin"\ntoken = "{OPS}"\n'
    text += f'[[admin.tokens]]\nname = "ci"\ntoken = "{ADMIN}"\n'
    text += '[[admin.tokens]]\nname = "short"\ntoken = "abc"\n'
    text += '[[admin.tokens]]\nname = "none"\n'
    found = problems(tmp_path, text)
    assert "admin.tokens[0].name: duplicate admin token name 'admin'" in found
    assert "admin.tokens[1].token: the same token is configured under another name" in found
    assert any(p.startswith("admin.tokens[2].token: must be at least 16") for p in found)
    assert "admin.tokens[3].token: is required" in found
    assert any(p.startswith("admin.audit_max_entries: must be at least 100") for p in found)
    assert not any(ADMIN in p or OPS in p for p in found)
