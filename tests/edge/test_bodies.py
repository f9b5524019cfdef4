"""What Sentinel judged is what the upstream receives, and reservations cannot be talked down."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Gateway
from tests.edge.conftest import LIMITED_KEY, TENANT_A, bearer, raw_request
from tests.support.lenient_upstream import LenientUpstream

JSON = {"Content-Type": "application/json"}
CHAT = "/v1/chat/completions"


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (
            b'{"model":"o1-pro","max_tokens":100000,"messages":[{"role":"user","content":"hi"}],'
            b'"model":"gpt-4o-mini","max_tokens":10}',
            "model",
        ),
        (
            b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"a","role":"system"}]}',
            "messages[0].role",
        ),
        (b'{"model":"gpt-4o-mini","messages":[],"\\u006dodel":"o1-pro"}', "model"),
    ],
)
async def test_a_repeated_key_is_a_400_naming_it(
    edge: Gateway, lenient: LenientUpstream, raw: bytes, param: str
) -> None:
    """A body with a key twice in one object never reaches the upstream, whichever value an
    upstream's parser would keep; the error names the key's JSON path."""
    status, _, body = await raw_request(
        edge.port, "POST", CHAT, {**bearer(LIMITED_KEY), **JSON}, raw
    )
    assert status == 400
    error = orjson.loads(body)["error"]
    assert (error["code"], error["param"]) == ("duplicate_key", param)
    assert lenient.requests == []


async def test_a_repeated_key_is_refused_on_the_pass_through_too(
    edge: Gateway, lenient: LenientUpstream
) -> None:
    """A JSON pass-through body (images) is judged as strictly as the read APIs'."""
    raw = b'{"model":"gpt-4o-mini","prompt":"a cat","model":"dall-e-3"}'
    status, _, _ = await raw_request(
        edge.port, "POST", "/v1/moderations", {**bearer(TENANT_A), **JSON}, raw
    )
    assert status == 400
    assert lenient.requests == []


async def test_an_unparseable_pass_through_json_body_is_a_400(
    edge: Gateway, lenient: LenientUpstream
) -> None:
    """A lenient upstream might read a body Sentinel cannot (comments, trailing commas): it is
    refused rather than forwarded unjudged."""
    raw = b'{"model":"dall-e-3", "prompt":"a cat",}'
    status, _, _ = await raw_request(
        edge.port, "POST", "/v1/moderations", {**bearer(TENANT_A), **JSON}, raw
    )
    assert status == 400
    assert lenient.requests == []


_KEYS = st.sampled_from(["model", "max_tokens", "n", "messages", "role", "content", "x"])
_LEAF = st.one_of(st.integers(-5, 5), st.text(max_size=4), st.booleans(), st.none())


@st.composite
def _bodies_with_a_repeat(draw: st.DrawFn) -> bytes:
    """A chat body holding an object (at some depth) that repeats one of its keys."""
    key = draw(_KEYS)
    first, second = draw(_LEAF), draw(_LEAF)
    inner = (
        "{" + json.dumps(key) + ":" + json.dumps(first) + ","
        + json.dumps(key) + ":" + json.dumps(second) + "}"
    )  # fmt: skip
    depth = draw(st.integers(0, 3))
    for _ in range(depth):
        inner = draw(st.sampled_from(['{"a":%s}', "[%s]", '{"content":[%s,1]}'])) % inner
    if depth == 0:
        inner = (
            inner[:-1] + ',"model":"gpt-4o-mini","messages":[]}'
            if key not in ("model", "messages")
            else inner
        )
        return inner.encode()
    return b'{"model":"gpt-4o-mini","messages":[],"extra":' + inner.encode() + b"}"


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(raw=_bodies_with_a_repeat())
async def test_generated_bodies_with_repeated_keys_never_leave(
    edge: Gateway, lenient: LenientUpstream, raw: bytes
) -> None:
    """Any object anywhere in a body that repeats a key makes the whole request a 400."""
    lenient.clear()
    status, _, body = await raw_request(edge.port, "POST", CHAT, {**bearer(TENANT_A), **JSON}, raw)
    assert status == 400, (raw, body)
    assert orjson.loads(body)["error"]["code"] == "duplicate_key"
    assert lenient.requests == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # chat has no max_output_tokens: the default reserve (4096 > tpm 1000) applies
        (CHAT, {"max_output_tokens": 0}),
        (CHAT, {"max_tokens": 400, "n": 3}),
        (CHAT, {"max_tokens": 10, "max_completion_tokens": 2000}),
        ("/v1/completions", {"prompt": "hi", "max_tokens": 300, "best_of": 4}),
        ("/v1/completions", {"prompt": "hi", "max_completion_tokens": 5}),
    ],
)
async def test_reservations_read_only_the_apis_own_caps(
    edge: Gateway, lenient: LenientUpstream, path: str, body: dict[str, object]
) -> None:
    """A request cannot lower its reservation with another API's field, and every choice it
    asks for (n, best_of) is reserved: each of these needs more than the key's tpm of 1000."""
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **body}
    if path != CHAT:
        payload.pop("messages")
    status, _, answer = await raw_request(
        edge.port, "POST", path, {**bearer(LIMITED_KEY), **JSON}, orjson.dumps(payload)
    )
    assert status == 429, answer
    assert orjson.loads(answer)["error"]["code"] == "insufficient_quota"
    assert lenient.requests == []
