"""The lenient upstream itself, driven over raw sockets so that no client normalises a path."""

from __future__ import annotations

import orjson
import pytest

from tests.edge.conftest import raw_request
from tests.support.lenient_upstream import (
    LEAKED_HEADERS,
    USAGE_CHAT,
    USAGE_RESPONSES,
    LenientUpstream,
    lenient_path,
)

JSON = {"Content-Type": "application/json"}


def _events(body: bytes) -> list[bytes]:
    return [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/v1//chat/completions/", "/v1/chat/completions"),
        ("/v1/chat/completions;x=1?stream=true", "/v1/chat/completions"),
        ("/v1/a;b/files//", "/v1/a/files"),
        ("/v1/%2e%2e/x", "/v1/%2e%2e/x"),
        ("/v1/../x", "/v1/../x"),
        ("http://evil.invalid//v1/responses", "/v1/responses"),
        ("/", "/"),
    ],
)
def test_lenient_path(target: str, path: str) -> None:
    """Slashes are merged and ``;params``, query and authority dropped, nothing else."""
    assert lenient_path(target) == path


async def test_answers_merged_and_trailing_slashes(lenient: LenientUpstream) -> None:
    """``/v1//chat/completions/`` is answered as a chat completion, target recorded as sent."""
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": []})
    status, _, answer = await raw_request(
        lenient.port, "POST", "/v1//chat/completions/", JSON, body
    )
    assert status == 200
    completion = orjson.loads(answer)
    assert completion["id"] == "chatcmpl-lenient-1"
    assert completion["model"] == "gpt-4o-mini"
    assert completion["usage"] == USAGE_CHAT
    assert lenient.targets == ["/v1//chat/completions/"]
    assert lenient.last.body == body


@pytest.mark.parametrize(
    "target", ["/v1/%2e%2e/x", "/v1/../x", "/v1/a;b", "/v1/%2F%2f?q=%00#frag", "*"]
)
async def test_echoes_and_records_any_target_exactly(lenient: LenientUpstream, target: str) -> None:
    """Any other target gets a 200 echo, and the raw target is recorded undecoded."""
    status, _, answer = await raw_request(lenient.port, "OPTIONS", target, {})
    assert status == 200
    assert orjson.loads(answer) == {"ok": True, "method": "OPTIONS", "target": target}
    assert lenient.targets == [target]


async def test_params_suffix_still_routes(lenient: LenientUpstream) -> None:
    """``;params`` on the last segment still reaches the responses endpoint."""
    status, _, answer = await raw_request(lenient.port, "POST", "/v1/responses;jsessionid=1", JSON)
    assert status == 200
    assert orjson.loads(answer)["id"] == "resp_lenient_1"


@pytest.mark.parametrize("include_usage", [True, False])
async def test_streams_sse_when_asked(lenient: LenientUpstream, include_usage: bool) -> None:
    """``stream: true`` gets two content chunks, a usage chunk only if asked, then ``[DONE]``."""
    request = {"model": "m", "stream": True, "stream_options": {"include_usage": include_usage}}
    status, headers, answer = await raw_request(
        lenient.port, "POST", "/v1/chat/completions", JSON, orjson.dumps(request)
    )
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["transfer-encoding"] == "chunked"
    *chunks, done = _events(answer)
    assert done == b"[DONE]"
    parsed = [orjson.loads(chunk) for chunk in chunks]
    assert [c["choices"][0]["delta"]["content"] for c in parsed[:2]] == ["Hello", " world"]
    usage = [c["usage"] for c in parsed if c.get("usage")]
    assert usage == ([USAGE_CHAT] if include_usage else [])


async def test_leaks_provider_headers_on_every_answer(lenient: LenientUpstream) -> None:
    """Every answer, even a 404, carries the account headers a real provider would leak."""
    status, headers, _ = await raw_request(lenient.port, "GET", "/v1/files/file-nope", {})
    assert status == 404
    assert {name: headers[name] for name in LEAKED_HEADERS} == LEAKED_HEADERS
    assert headers["x-request-id"] == "req_upstream_1"


async def test_records_headers_in_order_with_case_and_repeats(lenient: LenientUpstream) -> None:
    """Headers are recorded as sent: original case, order and the HTTP version kept."""
    await raw_request(lenient.port, "PUT", "/x", {"X-Mixed-Case": "1", "x-mixed-case": "2"}, b"hi")
    seen = lenient.last
    assert (seen.method, seen.version, seen.body) == ("PUT", "HTTP/1.1", b"hi")
    assert ("X-Mixed-Case", "1") in seen.headers
    assert seen.header_values("X-MIXED-CASE") == ["1", "2"]
    lenient.clear()
    assert lenient.requests == []


async def test_files_lifecycle(lenient: LenientUpstream) -> None:
    """A created file is listed, fetched, has content, and is gone after DELETE."""
    port = lenient.port
    _, _, created = await raw_request(port, "POST", "/v1/files", {}, b"12345")
    file = orjson.loads(created)
    assert (file["id"], file["bytes"]) == ("file-lenient-1", 5)
    _, _, listed = await raw_request(port, "GET", "/v1//files/", {})
    assert orjson.loads(listed) == {"object": "list", "data": [file], "has_more": False}
    _, _, content = await raw_request(port, "GET", "/v1/files/file-lenient-1/content", {})
    assert content == b"content of file-lenient-1"
    _, _, deleted = await raw_request(port, "DELETE", "/v1/files/file-lenient-1", {})
    assert orjson.loads(deleted) == {"id": "file-lenient-1", "object": "file", "deleted": True}
    status, _, missing = await raw_request(port, "GET", "/v1/files/file-lenient-1", {})
    assert status == 404
    assert orjson.loads(missing)["error"]["type"] == "invalid_request_error"


async def test_batches_are_created_listed_and_fetched(lenient: LenientUpstream) -> None:
    """A created batch echoes its input file and can be listed and fetched by id."""
    port = lenient.port
    body = orjson.dumps({"input_file_id": "file-in", "endpoint": "/v1/chat/completions"})
    _, _, created = await raw_request(port, "POST", "/v1/batches", JSON, body)
    batch = orjson.loads(created)
    assert batch["id"] == "batch_lenient_1"
    assert (batch["input_file_id"], batch["output_file_id"]) == ("file-in", "file-lenient-out-1")
    _, _, listed = await raw_request(port, "GET", "/v1/batches", {})
    assert orjson.loads(listed)["data"] == [batch]
    _, _, fetched = await raw_request(port, "GET", "/v1/batches/batch_lenient_1", {})
    assert orjson.loads(fetched) == batch


async def test_streams_responses_events_when_asked(lenient: LenientUpstream) -> None:
    """A streamed Responses call ends with ``response.completed`` carrying the usage."""
    body = orjson.dumps({"model": "m", "stream": True})
    _, headers, answer = await raw_request(lenient.port, "POST", "/v1/responses/", JSON, body)
    assert headers["content-type"].startswith("text/event-stream")
    final = orjson.loads(_events(answer)[-1])
    assert final["type"] == "response.completed"
    assert final["response"]["id"] == "resp_lenient_1"
    assert final["response"]["usage"] == USAGE_RESPONSES
