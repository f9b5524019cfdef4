"""No spelling of a path walks around the read APIs, and nothing leaves the upstream's /v1."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Gateway
from tests.edge.conftest import LIMITED_KEY, TENANT_A, bearer, raw_request
from tests.support.lenient_upstream import LenientUpstream

GREEDY_CHAT = orjson.dumps(
    {
        "model": "gpt-4o-mini",
        "max_tokens": 100_000,
        "messages": [{"role": "user", "content": "hi"}],
    }
)
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    "target",
    [
        "/v1/chat/completions/",
        "/v1//chat/completions",
        "/v1/x/../chat/completions",
        "/v1/./chat/completions",
        "/v1/%2e%2e/v1/chat/completions",
        "/v1/chat%2Fcompletions",
        "/v1/chat/completions;x=1",
        "/v1/chat/completions%3Bx=1",
        "/v1/%63hat/completions",
        "//v1/chat/completions",
        "/v1/chat/completions/.",
    ],
)
async def test_other_spellings_of_a_read_api_are_404(
    edge: Gateway, lenient: LenientUpstream, target: str
) -> None:
    """A request the read API refuses (a cap over tpm) is not answered under another spelling."""
    status, _, body = await raw_request(
        edge.port, "POST", target, {**bearer(LIMITED_KEY), **JSON}, GREEDY_CHAT
    )
    assert status == 404, body
    assert orjson.loads(body)["error"]["code"] == "unknown_url"
    assert lenient.requests == []


async def test_the_canonical_spelling_is_judged(edge: Gateway, lenient: LenientUpstream) -> None:
    """The same request on the canonical path is refused by the key's token limit."""
    status, _, body = await raw_request(
        edge.port, "POST", "/v1/chat/completions", {**bearer(LIMITED_KEY), **JSON}, GREEDY_CHAT
    )
    assert status == 429
    assert orjson.loads(body)["error"]["code"] == "insufficient_quota"
    assert lenient.requests == []


async def test_a_text_body_cannot_reach_chat_through_files(
    edge: Gateway, lenient: LenientUpstream
) -> None:
    """``/v1/files/../chat/completions`` with a text/plain body skips nothing: it is a 404."""
    headers = {**bearer(LIMITED_KEY), "Content-Type": "text/plain"}
    status, _, _ = await raw_request(
        edge.port, "POST", "/v1/files/../chat/completions", headers, GREEDY_CHAT
    )
    assert status == 404
    assert lenient.requests == []


@pytest.mark.parametrize(
    "target",
    [
        "/v1/%2e%2e/%2e%2e/internal/admin",
        "/v1/../../internal/admin",
        "/v1/models/%20x",
        "/v1/models/a%2fb",
        "/v1/files?x=%zz",
        "/v1/organization/users",
        "/v1/realtime/sessions",
        "/v1/unknown-endpoint",
    ],
)
async def test_traversal_and_unknown_endpoints_never_leave(
    edge: Gateway, lenient: LenientUpstream, target: str
) -> None:
    """Traversal, encoded separators and endpoints no family names are 404 before any upstream
    call, so the operator's upstream key goes nowhere it was not meant to."""
    for method in ("GET", "POST", "DELETE"):
        status, _, _ = await raw_request(edge.port, method, target, bearer(TENANT_A), b"{}")
        assert status == 404, (method, target)
    assert lenient.requests == []


async def test_a_family_not_enabled_is_404(edge: Gateway, lenient: LenientUpstream) -> None:
    """Vector stores are not forwarded unless ``[passthrough.vector_stores]`` enables them."""
    status, _, body = await raw_request(edge.port, "GET", "/v1/vector_stores", bearer(TENANT_A))
    assert status == 404
    assert orjson.loads(body)["error"]["code"] == "endpoint_not_enabled"
    assert lenient.requests == []


_SEGMENT = st.one_of(
    st.sampled_from(
        ["v1", "chat", "completions", "files", "models", "responses", "", ".", "..", "%2e",
         "%2E%2e", "%2f", "%2F", "%5c", "%3b", ";x=1", "a;b", "%20", "%00", "~", "x.y", "gpt-4o"]
    ),
    st.text("abc.%;/2eE", min_size=1, max_size=6),
)  # fmt: skip


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(segments=st.lists(_SEGMENT, min_size=1, max_size=6), method=st.sampled_from(["GET", "POST"]))
async def test_generated_paths_reach_the_upstream_only_as_sent(
    edge: Gateway, lenient: LenientUpstream, segments: list[str], method: str
) -> None:
    """Whatever path a client sends, either Sentinel answers it itself or the upstream receives
    exactly that canonical path under ``/v1``: never a dot segment, an empty one, an encoded
    separator or a read API reached by the pass-through."""
    lenient.clear()
    target = "/" + "/".join(segments)
    headers = {**bearer(LIMITED_KEY), **JSON}
    await raw_request(edge.port, method, target, headers, GREEDY_CHAT)
    for seen in lenient.requests:
        assert seen.target.split("?")[0] == target.split("?")[0]
        path = seen.target.split("?")[0]
        parts = path.split("/")[1:]
        assert parts[0] == "v1" and all(p and p not in (".", "..") for p in parts)
        assert "%" not in path and ";" not in path
        assert (seen.method, path) not in {
            ("POST", "/v1/chat/completions"),
            ("POST", "/v1/completions"),
            ("POST", "/v1/responses"),
            ("POST", "/v1/embeddings"),
        } or seen.json().get("max_tokens") != 100_000
