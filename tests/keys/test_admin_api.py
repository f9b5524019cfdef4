"""The keys API end to end: a real gateway (both engines, keys in SQLite or Redis), aiohttp."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import CLIENT_KEY, Gateway, RequestLines, StartGateway, Upstream
from tests.keys.support import OPS_TOKEN, Admin, chat_status, keys_config
from tests.support.redis_server import RedisServer


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.e2e)])
async def gateway(
    request: pytest.FixtureRequest,
    upstream: Upstream,
    start_gateway: StartGateway,
    tmp_path: Path,
) -> Gateway:
    """Sentinel with the keys API, its keys in SQLite or in a private Redis."""
    port = None
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("private_redis")
        port = server.port
    return await start_gateway(keys_config(upstream.url, tmp_path, port))


@pytest.fixture
def admin(http: aiohttp.ClientSession, gateway: Gateway) -> Admin:
    """The gateway's admin API under the ``admin`` token."""
    return Admin(http, gateway.url)


async def test_a_created_key_works_at_once_and_shows_no_secret_again(
    admin: Admin, gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    """Create returns the secret once; the key authenticates; views show only its prefix."""
    created = await admin.create(name="team-b", team="blue", rpm=100, usd_per_day="5.00")
    secret = created["key"]
    assert secret.startswith("sk-") and len(secret) >= 35
    assert created["id"].startswith("key_") and created["source"] == "api"
    assert created["key_prefix"] == secret[:8] + "…"
    assert created["status"] == "active" and created["usd_per_day"] == "5"
    assert await chat_status(http, gateway.base_url, secret) == 200
    status, shown = await admin.call("GET", f"/admin/v1/keys/{created['id']}")
    assert status == 200 and "key" not in shown and secret not in json.dumps(shown)
    assert shown["rpm"] == 100 and shown["team"] == "blue"


async def test_the_list_has_config_keys_first_and_pages(admin: Admin) -> None:
    """Config keys come first, read-only, then runtime keys; pages follow ``after``."""
    made = [await admin.create(name=f"page-{i}") for i in range(3)]
    status, first = await admin.call("GET", "/admin/v1/keys?limit=2")
    assert status == 200 and first["object"] == "list" and first["has_more"]
    assert first["data"][0]["id"] == "cfg:team-a" and first["data"][0]["source"] == "config"
    assert first["first_id"] == "cfg:team-a" and first["last_id"] == made[0]["id"]
    status, rest = await admin.call("GET", f"/admin/v1/keys?limit=10&after={first['last_id']}")
    assert [k["id"] for k in rest["data"]] == [made[1]["id"], made[2]["id"]]
    assert not rest["has_more"]
    status, after_config = await admin.call("GET", "/admin/v1/keys?limit=1&after=cfg:team-a")
    assert after_config["data"][0]["id"] == made[0]["id"]
    for bad in ("limit=0", "limit=101", "limit=x", "after=key_nope"):
        status, reply = await admin.call("GET", f"/admin/v1/keys?{bad}")
        assert status == 400 and reply["error"]["param"] in ("limit", "after"), bad


async def test_config_keys_are_read_only(admin: Admin) -> None:
    """Changing a config key is 409 key_read_only; a runtime key may not take its name."""
    status, shown = await admin.call("GET", "/admin/v1/keys/cfg.team-a")
    assert status == 200 and shown["source"] == "config" and shown["name"] == "team-a"
    for method, path, body in (
        ("PATCH", "/admin/v1/keys/cfg.team-a", {"rpm": 1}),
        ("POST", "/admin/v1/keys/cfg.team-a/revoke", None),
        ("POST", "/admin/v1/keys/cfg.team-a/rotate", None),
    ):
        status, reply = await admin.call(method, path, body)
        assert status == 409 and reply["error"]["code"] == "key_read_only", path
    status, reply = await admin.call("POST", "/admin/v1/keys", {"name": "team-a"})
    assert status == 409 and reply["error"]["code"] == "key_name_taken"
    assert reply["error"]["param"] == "name"


async def test_bad_bodies_name_the_field(admin: Admin) -> None:
    """Malformed bodies are 400 with ``param``; unknown ids 404; a taken name 409."""
    cases = [
        ({"team": "x"}, "name"),
        ({"name": "bad name!"}, "name"),
        ({"name": "ok", "rpm": -1}, "rpm"),
        ({"name": "ok", "rpm": True}, "rpm"),
        ({"name": "ok", "usd_total": 1.5}, "usd_total"),
        ({"name": "ok", "usd_total": "0.0000000001"}, "usd_total"),
        ({"name": "ok", "models": "gpt-4o"}, "models"),
        ({"name": "ok", "metadata": []}, "metadata"),
        ({"name": "ok", "metadata": {"x": "y" * 5000}}, "metadata"),
        ({"name": "ok", "expires_at": 1}, "expires_at"),
        ({"name": "ok", "expires_at": "soon"}, "expires_at"),
        ({"name": "ok", "key_sha256": "sha256:xyz"}, "key_sha256"),
        ({"name": "ok", "admin": True}, "admin"),
    ]
    for body, param in cases:
        status, reply = await admin.call("POST", "/admin/v1/keys", body)
        assert status == 400, (body, reply)
        assert reply["error"]["param"] == param, (body, reply)
    status, reply = await admin.call("POST", "/admin/v1/keys", raw=b"{not json")
    assert status == 400 and reply["error"]["code"] == "invalid_json"
    for method, path in (
        ("GET", "/admin/v1/keys/key_unknown"),
        ("PATCH", "/admin/v1/keys/key_unknown"),
        ("POST", "/admin/v1/keys/key_unknown/revoke"),
        ("POST", "/admin/v1/keys/nothing/rotate"),
    ):
        status, reply = await admin.call(method, path, {} if method == "PATCH" else None)
        assert status == 404 and reply["error"]["code"] == "key_not_found", path
    await admin.create(name="dup")
    status, reply = await admin.call("POST", "/admin/v1/keys", {"name": "dup"})
    assert status == 409 and reply["error"]["code"] == "key_name_taken"


async def test_a_patch_applies_to_the_next_request_and_is_checked(
    admin: Admin, gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    """PATCHed models apply at once; a patch that would make the key invalid is 400."""
    created = await admin.create(name="patchy", models=["gpt-4o-mini"])
    path = f"/admin/v1/keys/{created['id']}"
    assert await chat_status(http, gateway.base_url, created["key"]) == 200
    status, patched = await admin.call("PATCH", path, {"models": ["other-*"], "rpm": 5})
    assert status == 200 and patched["models"] == ["other-*"] and patched["rpm"] == 5
    assert patched["version"] == created["version"] + 1
    assert await chat_status(http, gateway.base_url, created["key"]) == 403
    for body, param in (
        ({"rpm": "many"}, "rpm"),
        ({"name": "renamed"}, "name"),
        ({"expires_at": int(time.time()) - 10}, "expires_at"),
        ({"bogus": 1}, "bogus"),
    ):
        status, reply = await admin.call("PATCH", path, body)
        assert status == 400 and reply["error"]["param"] == param, body
    status, cleared = await admin.call("PATCH", path, {"models": None, "rpm": None})
    assert cleared["models"] is None and cleared["rpm"] is None
    assert await chat_status(http, gateway.base_url, created["key"]) == 200


async def test_revoke_refuses_the_key_with_the_same_401(
    admin: Admin, gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    """A revoked key gets exactly the 401 of an unknown key; revoking again changes nothing."""
    created = await admin.create(name="leaky")
    status, revoked = await admin.call("POST", f"/admin/v1/keys/{created['id']}/revoke")
    assert status == 200 and revoked["status"] == "revoked"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    replies = []
    for key in (created["key"], "sk-never-issued-0123456789abcdef0123456789"):
        async with http.post(
            f"{gateway.base_url}/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {key}"},
        ) as response:
            replies.append((response.status, await response.json()))
    assert replies[0] == replies[1] and replies[0][0] == 401
    status, again = await admin.call("POST", f"/admin/v1/keys/{created['id']}/revoke")
    assert status == 200 and again["version"] == revoked["version"]
    status, reply = await admin.call("PATCH", f"/admin/v1/keys/{created['id']}", {"rpm": 1})
    assert status == 409 and reply["error"]["code"] == "key_revoked"
    await admin.create(name="leaky")  # a revoked key's name is free again


async def test_rotation_with_and_without_grace(
    admin: Admin, gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    """With a grace both secrets work; rotating again without one retires every old secret."""
    created = await admin.create(name="rotor")
    rotated = await admin.rotate(created["id"], grace_s=60)
    assert rotated["key"] != created["key"] and rotated["grace_s"] == 60
    assert rotated["key_prefix"] == rotated["key"][:8] + "…"
    for key in (created["key"], rotated["key"]):
        assert await chat_status(http, gateway.base_url, key) == 200
    final = await admin.rotate(created["id"])
    for key in (created["key"], rotated["key"]):
        assert await chat_status(http, gateway.base_url, key) == 401
    assert await chat_status(http, gateway.base_url, final["key"]) == 200
    status, reply = await admin.call(
        "POST", f"/admin/v1/keys/{created['id']}/rotate", {"grace_s": -1}
    )
    assert status == 400 and reply["error"]["param"] == "grace_s"


async def test_an_imported_digest_authenticates_its_secret(
    admin: Admin, gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    """``key_sha256`` imports an existing secret: no secret in the reply, the old one works."""
    import hashlib

    secret = "sk-imported-secret-0123456789abcdefghijkl"
    digest = "sha256:" + hashlib.sha256(secret.encode()).hexdigest()
    status, reply = await admin.call(
        "POST", "/admin/v1/keys", {"name": "imported", "key_sha256": digest}
    )
    assert status == 201 and reply["key"] is None and reply["key_prefix"] is None
    assert await chat_status(http, gateway.base_url, secret) == 200
    config_digest = "sha256:" + hashlib.sha256(CLIENT_KEY.encode()).hexdigest()
    status, reply = await admin.call(
        "POST", "/admin/v1/keys", {"name": "stolen", "key_sha256": config_digest}
    )
    assert status == 409 and reply["error"]["code"] == "key_exists"


async def test_idempotent_create(admin: Admin) -> None:
    """A replay returns the first reply without the secret; another body is 422."""
    headers = {"idempotency-key": "create-once-1"}
    body = {"name": "once", "rpm": 10}
    status, first = await admin.call("POST", "/admin/v1/keys", body, headers=headers)
    assert status == 201 and first["key"]
    from tests.conftest import SECRETS

    SECRETS.add(first["key"])
    status, replay = await admin.call("POST", "/admin/v1/keys", body, headers=headers)
    assert status == 200 and replay["id"] == first["id"] and replay["key"] is None
    status, reply = await admin.call(
        "POST", "/admin/v1/keys", {"name": "once", "rpm": 11}, headers=headers
    )
    assert status == 422 and reply["error"]["code"] == "idempotency_key_reused"
    status, listed = await admin.call("GET", "/admin/v1/keys")
    assert [k["name"] for k in listed["data"]].count("once") == 1


async def test_admin_tokens_are_required_and_named_in_the_audit(
    admin: Admin, http: aiohttp.ClientSession, gateway: Gateway, request_lines: RequestLines
) -> None:
    """No or a wrong token is 401; each change's audit names its token and holds no secret."""
    for token in ("", "wrong-token-0123456789abcdef", OPS_TOKEN + "x"):
        status, reply = await Admin(http, gateway.url, token).call("GET", "/admin/v1/keys")
        assert status == 401 and reply["error"]["code"] == "invalid_admin_token"
    ops = Admin(http, gateway.url, OPS_TOKEN)
    created = await ops.create(name="audited")
    await admin.call("PATCH", f"/admin/v1/keys/{created['id']}", {"rpm": 7})
    rotated = await admin.rotate(created["id"])
    status, audit = await admin.call("GET", "/admin/v1/audit?limit=2")
    assert status == 200 and audit["has_more"]
    assert [(e["action"], e["actor"]) for e in audit["data"]] == [
        ("key.rotated", "admin"),
        ("key.updated", "admin"),
    ]
    assert audit["data"][1]["before"]["rpm"] is None and audit["data"][1]["after"]["rpm"] == 7
    status, older = await admin.call("GET", f"/admin/v1/audit?after={audit['last_id']}")
    assert [(e["action"], e["actor"]) for e in older["data"]] == [("key.created", "ops")]
    whole = json.dumps(audit) + json.dumps(older)
    assert created["key"] not in whole and rotated["key"] not in whole
    assert "digest" not in whole


async def test_own_key_view(admin: Admin, gateway: Gateway, http: aiohttp.ClientSession) -> None:
    """``GET /v1/key`` shows the caller's limits and what remains, for any kind of key."""
    created = await admin.create(name="viewer", rpm=10, usd_total="2.50", models=["gpt-*"])
    assert await chat_status(http, gateway.base_url, created["key"]) == 200
    async with http.get(
        f"{gateway.base_url}/key", headers={"authorization": f"Bearer {created['key']}"}
    ) as response:
        assert response.status == 200
        view = await response.json()
    assert view["id"] == created["id"] and view["name"] == "viewer" and view["source"] == "api"
    assert view["limits"]["rpm"] == {"limit": 10, "used": 1, "remaining": 9}
    assert view["limits"]["tpm"] is None and view["models"] == ["gpt-*"]
    assert view["budgets"]["usd_total"] == "2.5"
    async with http.get(
        f"{gateway.base_url}/key", headers={"authorization": f"Bearer {CLIENT_KEY}"}
    ) as response:
        config_view = await response.json()
    assert config_view["id"] == "cfg:team-a" and config_view["source"] == "config"
    async with http.get(f"{gateway.base_url}/key") as response:
        assert response.status == 401
