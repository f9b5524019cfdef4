"""``sentinel keys create|list|show|revoke|rotate`` against a real gateway; the openai SDK with
a runtime key; SQLite keys across a restart."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp
import openai

from tests.conftest import SECRETS, Upstream, running_gateway
from tests.keys.support import ADMIN_TOKEN, Admin, chat_status, keys_config
from tests.support.processes import ROOT


async def sentinel_keys(url: str, *args: str, token: str = ADMIN_TOKEN) -> tuple[int, str, str]:
    """Run ``python -m sentinel keys ...`` against ``url``; exit status, stdout, stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SENTINEL_ADMIN_URL": url}
    env["SENTINEL_ADMIN_TOKEN"] = token
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sentinel",
        "keys",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


def secret_of(output: str) -> str:
    """The secret line that ``create`` and ``rotate`` print once."""
    lines = output.strip().splitlines()
    assert lines[-2] == "secret (shown once, store it now):"
    SECRETS.add(lines[-1])
    return lines[-1]


async def test_the_cli_manages_keys(
    upstream: Upstream, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """create prints the secret once, list and show never; rotate and revoke take effect."""
    async with running_gateway(keys_config(upstream.url, tmp_path)) as gateway:
        code, out, err = await sentinel_keys(
            gateway.url, "create", "--name", "cli-team", "--rpm", "50", "--models", "gpt-*"
        )
        assert code == 0, err
        secret = secret_of(out)
        assert out.count(secret) == 1 and '"rpm": 50' in out
        assert await chat_status(http, gateway.base_url, secret) == 200
        code, listing, _ = await sentinel_keys(gateway.url, "list")
        assert code == 0 and "cfg:team-a" in listing and "cli-team" in listing
        assert secret not in listing
        key_id = next(line.split()[0] for line in listing.splitlines() if "cli-team" in line)
        code, shown, _ = await sentinel_keys(gateway.url, "show", key_id)
        assert code == 0 and key_id in shown and secret not in shown
        code, rotated, _ = await sentinel_keys(gateway.url, "rotate", key_id, "--grace-s", "60")
        new_secret = secret_of(rotated)
        assert await chat_status(http, gateway.base_url, secret) == 200  # in its grace
        code, revoked, _ = await sentinel_keys(gateway.url, "revoke", key_id)
        assert code == 0 and '"status": "revoked"' in revoked
        for key in (secret, new_secret):
            assert await chat_status(http, gateway.base_url, key) == 401
        code, _, err = await sentinel_keys(gateway.url, "revoke", "cfg:team-a")
        assert code == 1 and "key_read_only" in err
        code, _, err = await sentinel_keys(gateway.url, "list", token="wrong-token-000000000000")
        assert code == 1 and "401" in err and "wrong-token" not in err


async def test_the_openai_sdk_works_with_a_runtime_key(
    upstream: Upstream, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The official SDK, pointed at Sentinel, authenticates with a key made by the API."""
    async with running_gateway(keys_config(upstream.url, tmp_path)) as gateway:
        created = await Admin(http, gateway.url).create(name="sdk-team")
        async with openai.AsyncOpenAI(
            base_url=gateway.base_url, api_key=created["key"], max_retries=0
        ) as client:
            reply = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
            assert reply.choices[0].message.content
            stream = await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
            )
            assert [chunk async for chunk in stream]


async def test_sqlite_keys_survive_a_restart(
    upstream: Upstream, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Keys in the state file work after a restart; revoked ones stay revoked; the audit stays."""
    config = keys_config(upstream.url, tmp_path)
    async with running_gateway(config) as gateway:
        admin = Admin(http, gateway.url)
        kept = await admin.create(name="kept", rpm=9)
        gone = await admin.create(name="gone")
        await admin.call("POST", f"/admin/v1/keys/{gone['id']}/revoke")
    async with running_gateway(config) as gateway:
        admin = Admin(http, gateway.url)
        assert await chat_status(http, gateway.base_url, kept["key"]) == 200
        assert await chat_status(http, gateway.base_url, gone["key"]) == 401
        status, shown = await admin.call("GET", f"/admin/v1/keys/{kept['id']}")
        assert status == 200 and shown["rpm"] == 9
        _, audit = await admin.call("GET", "/admin/v1/audit")
        assert [e["action"] for e in audit["data"]] == ["key.revoked", "key.created", "key.created"]
