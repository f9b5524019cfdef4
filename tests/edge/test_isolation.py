"""One tenant never reaches another's objects: files, batches, responses, lists."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import Gateway
from tests.edge.conftest import ADMIN_KEY, TENANT_A, TENANT_B, bearer
from tests.support.lenient_upstream import LenientUpstream


async def _upload(http: aiohttp.ClientSession, gateway: Gateway, key: str) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", b'{"custom_id": "1"}\n', filename="in.jsonl")
    async with http.post(f"{gateway.base_url}/files", data=form, headers=bearer(key)) as r:
        assert r.status == 200, await r.text()
        created: dict[str, Any] = await r.json()
    return created


async def _status(
    http: aiohttp.ClientSession, method: str, url: str, key: str, body: object = None
) -> int:
    async with http.request(method, url, json=body, headers=bearer(key)) as r:
        await r.read()
        return r.status


async def test_another_tenants_file_does_not_exist(
    edge: Gateway, lenient: LenientUpstream, http: aiohttp.ClientSession
) -> None:
    """Tenant B gets 404 for every use of tenant A's file, and the upstream hears none of it;
    tenant A and an admin key reach it."""
    file = await _upload(http, edge, TENANT_A)
    url = f"{edge.base_url}/files/{file['id']}"
    lenient.clear()
    for method, path in [("GET", ""), ("GET", "/content"), ("DELETE", "")]:
        assert await _status(http, method, url + path, TENANT_B) == 404
    assert lenient.requests == []
    assert await _status(http, "GET", url, TENANT_A) == 200
    assert await _status(http, "GET", url + "/content", ADMIN_KEY) == 200


async def test_lists_show_only_the_callers_objects(
    edge: Gateway, lenient: LenientUpstream, http: aiohttp.ClientSession
) -> None:
    """Each key's file list holds its own files, newest first, answered from the owner index;
    an admin key's list is the provider's whole list."""
    a1 = await _upload(http, edge, TENANT_A)
    b1 = await _upload(http, edge, TENANT_B)
    a2 = await _upload(http, edge, TENANT_A)
    lenient.clear()
    async with http.get(f"{edge.base_url}/files", headers=bearer(TENANT_A)) as r:
        listed = await r.json()
    assert {e["id"] for e in listed["data"]} == {a1["id"], a2["id"]}
    assert listed["object"] == "list" and listed["has_more"] is False
    async with http.get(f"{edge.base_url}/files?limit=1", headers=bearer(TENANT_B)) as r:
        listed = await r.json()
    assert [e["id"] for e in listed["data"]] == [b1["id"]]
    assert lenient.requests == []
    async with http.get(f"{edge.base_url}/files", headers=bearer(ADMIN_KEY)) as r:
        listed = await r.json()
    assert {e["id"] for e in listed["data"]} == {a1["id"], a2["id"], b1["id"]}


async def test_a_batch_cannot_read_another_tenants_file(
    edge: Gateway, lenient: LenientUpstream, http: aiohttp.ClientSession
) -> None:
    """A batch naming another key's input file is a 404; the batch's own output file belongs to
    the key that created the batch."""
    file = await _upload(http, edge, TENANT_A)
    body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions"}
    lenient.clear()
    assert await _status(http, "POST", f"{edge.base_url}/batches", TENANT_B, body) == 404
    assert lenient.requests == []
    async with http.post(f"{edge.base_url}/batches", json=body, headers=bearer(TENANT_A)) as r:
        assert r.status == 200
        batch = await r.json()
    output = f"{edge.base_url}/files/{batch['output_file_id']}/content"
    assert await _status(http, "GET", output, TENANT_B) == 404
    assert await _status(http, "GET", f"{edge.base_url}/batches/{batch['id']}", TENANT_B) == 404
    assert await _status(http, "GET", f"{edge.base_url}/batches/{batch['id']}", TENANT_A) == 200


@pytest.mark.parametrize("stream", [False, True])
async def test_a_conversation_cannot_be_continued_by_another_tenant(
    edge: Gateway, lenient: LenientUpstream, http: aiohttp.ClientSession, stream: bool
) -> None:
    """``previous_response_id`` of another key's response is a 404; its owner continues it."""
    first = {"model": "gpt-4o-mini", "input": "remember 42", "stream": stream}
    async with http.post(f"{edge.base_url}/responses", json=first, headers=bearer(TENANT_A)) as r:
        assert r.status == 200
        if stream:
            created = (await r.text()).split("\ndata: ", 1)[1].split("\n", 1)[0]
            response = orjson.loads(created)["response"]
        else:
            response = await r.json()
    follow = {"model": "gpt-4o-mini", "input": "what?", "previous_response_id": response["id"]}
    lenient.clear()
    assert await _status(http, "POST", f"{edge.base_url}/responses", TENANT_B, follow) == 404
    assert (
        await _status(http, "GET", f"{edge.base_url}/responses/{response['id']}", TENANT_B) == 404
    )
    assert lenient.requests == []
    assert await _status(http, "POST", f"{edge.base_url}/responses", TENANT_A, follow) == 200


async def test_an_id_hidden_by_a_json_escape_is_still_checked(
    edge: Gateway, lenient: LenientUpstream, http: aiohttp.ClientSession
) -> None:
    """A key name spelled with ``\\u`` escapes is the same key: the id is checked."""
    file = await _upload(http, edge, TENANT_A)
    raw = b'{"input_file_id": "x", "endpoint": "/v1/chat/completions"}'.replace(
        b'"input_file_id": "x"', b'"input\\u005ffile\\u005fid": ' + orjson.dumps(file["id"])
    )
    lenient.clear()
    headers = {**bearer(TENANT_B), "Content-Type": "application/json"}
    async with http.post(f"{edge.base_url}/batches", data=raw, headers=headers) as r:
        assert r.status == 404
    assert lenient.requests == []


async def test_a_conversation_id_is_never_forwarded(
    edge: Gateway, lenient: LenientUpstream, http: aiohttp.ClientSession
) -> None:
    """Conversations cannot be created through Sentinel, so no key owns one: naming one is a
    404 for every non-admin key."""
    body = {"model": "gpt-4o-mini", "input": "hi", "conversation": "conv_someone_elses"}
    assert await _status(http, "POST", f"{edge.base_url}/responses", TENANT_A, body) == 404
    assert lenient.requests == []


async def test_replies_sentinel_reads_are_asked_for_uncompressed(
    edge: Gateway, lenient: LenientUpstream, http: aiohttp.ClientSession
) -> None:
    """A create whose reply Sentinel must read to claim the object is asked for without
    compression, whatever the client accepts; a plain download keeps the client's encoding."""
    file = await _upload(http, edge, TENANT_A)  # aiohttp accepts gzip and deflate
    create = next(seen for seen in lenient.requests if seen.method == "POST")
    assert create.header("accept-encoding") == "identity"
    lenient.clear()
    headers = {**bearer(TENANT_A), "Accept-Encoding": "gzip"}
    async with http.get(f"{edge.base_url}/files/{file['id']}/content", headers=headers) as r:
        assert r.status == 200
    assert lenient.last.header("accept-encoding") == "gzip"
