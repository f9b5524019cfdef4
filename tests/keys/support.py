"""What the keys tests share: configs with admin tokens, and an admin client."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import aiohttp

from sentinel.config import AdminConfig, Config, RedisConfig
from sentinel.config.admin import AdminToken
from tests.conftest import SECRETS, make_config

ADMIN_TOKEN = "admin-token-0123456789abcdef"
OPS_TOKEN = "ops-token-0123456789abcdefgh"
SECRETS.update({ADMIN_TOKEN, OPS_TOKEN})


def keys_config(
    upstream_url: str,
    state_dir: Path,
    redis_port: int | None = None,
    **redis_options: Any,
) -> Config:
    """The mock upstream, one config key (``team-a``), two admin tokens (``admin``, ``ops``),
    keys in SQLite under ``state_dir`` or in the Redis on ``redis_port``."""
    config = make_config(upstream_url, state_dir=state_dir)
    admin = AdminConfig(token=ADMIN_TOKEN, tokens=(AdminToken("ops", OPS_TOKEN),))
    redis = None
    if redis_port is not None:
        options = {"timeout_ms": 500, **redis_options}
        redis = RedisConfig(url=f"redis://127.0.0.1:{redis_port}/0", **options)
    return dataclasses.replace(config, admin=admin, redis=redis)


class Admin:
    """The admin API of one gateway, as an admin token sees it."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str = ADMIN_TOKEN) -> None:
        self.http = http
        self.url = url
        self.token = token

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """The status and JSON reply of one admin call."""
        sent = {"authorization": f"Bearer {self.token}", **(headers or {})}
        async with self.http.request(
            method, self.url + path, json=body if raw is None else None, data=raw, headers=sent
        ) as response:
            reply: dict[str, Any] = await response.json(content_type=None)
            return response.status, reply

    async def create(self, **body: Any) -> dict[str, Any]:
        """Create a key (201 expected); its secret joins the leak scan."""
        status, reply = await self.call("POST", "/admin/v1/keys", body)
        assert status == 201, reply
        if reply.get("key"):
            SECRETS.add(reply["key"])
        return reply

    async def rotate(self, key_id: str, grace_s: int = 0) -> dict[str, Any]:
        """Rotate a key (200 expected); the new secret joins the leak scan."""
        status, reply = await self.call(
            "POST", f"/admin/v1/keys/{key_id}/rotate", {"grace_s": grace_s}
        )
        assert status == 200, reply
        SECRETS.add(reply["key"])
        return reply


async def chat_status(http: aiohttp.ClientSession, base_url: str, key: str) -> int:
    """The status of one small chat completion with ``key``."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(
        f"{base_url}/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    ) as response:
        await response.read()
        return response.status
