"""The official openai SDK, pointed at Sentinel, works exactly as against OpenAI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import Gateway, RequestLines, StartGateway, Upstream

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Say hello to the gateway"}
]


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[openai.AsyncOpenAI]:
    """An SDK client using Sentinel as its base URL and a Sentinel key."""
    sdk = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=gateway.key, max_retries=0)
    yield sdk
    await sdk.close()


def _finished(logs: list[dict[str, object]]) -> dict[str, object]:
    lines = [entry for entry in logs if entry["event"] == "request_finished"]
    assert len(lines) == 1
    return lines[0]


async def test_chat_completion_json(
    client: openai.AsyncOpenAI, request_lines: RequestLines
) -> None:
    """A non-streamed chat completion comes back parsed, with the provider's usage."""
    reply = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    line = _finished(await request_lines.wait())
    assert line["status"] == 200 and line["key"] == "team-a" and line["upstream"] == "mock"
    assert line["completion_tokens"] == reply.usage.completion_tokens


async def test_stream_without_include_usage_hides_injected_usage(
    client: openai.AsyncOpenAI, upstream: Upstream, request_lines: RequestLines
) -> None:
    """A stream that did not ask for usage sees no usage chunk, yet Sentinel logs the usage."""
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text
    sent = (await upstream.requests(1))[0]
    assert sent["path"] == "/v1/chat/completions"
    line = _finished(await request_lines.wait())
    assert line["usage_source"] == "provider" and line["completion_tokens"]


async def test_stream_with_include_usage_is_untouched(client: openai.AsyncOpenAI) -> None:
    """A stream that asked for usage gets the usage-only chunk, as OpenAI sends it."""
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


async def test_completions_stream(client: openai.AsyncOpenAI) -> None:
    """The legacy completions API streams through with its text."""
    stream = await client.completions.create(model="gpt-4o-mini", prompt="Once", stream=True)
    texts = [chunk.choices[0].text async for chunk in stream if chunk.choices]
    assert "".join(texts)


async def test_embeddings(client: openai.AsyncOpenAI) -> None:
    """Embeddings come back with one vector per input."""
    result = await client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(result.data) == 2 and result.data[0].embedding


async def test_models_list(client: openai.AsyncOpenAI) -> None:
    """The model list is the upstream's, as the SDK's page object."""
    page = await client.models.list()
    ids = {model.id async for model in page}
    assert "gpt-4o-mini" in ids


async def test_responses_json_and_stream(
    client: openai.AsyncOpenAI, request_lines: RequestLines
) -> None:
    """The Responses API works both ways; its stream carries usage in response.completed."""
    reply = await client.responses.create(model="gpt-4o-mini", input="hello")
    assert reply.output_text
    stream = await client.responses.create(model="gpt-4o-mini", input="hello", stream=True)
    kinds = [event.type async for event in stream]
    assert kinds[-1] == "response.completed"
    lines = await request_lines.wait(2)
    assert [line["usage_source"] for line in lines] == ["provider", "provider"]


@pytest.mark.parametrize("key", ["", "sk-wrong-key-000000000", "not a bearer at all"])
async def test_bad_keys_raise_authentication_error(gateway: Gateway, key: str) -> None:
    """A missing, wrong or malformed key is an AuthenticationError with one same body."""
    sdk = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=key or "x", max_retries=0)
    headers = {"Authorization": key} if key != "sk-wrong-key-000000000" else None
    with pytest.raises(openai.AuthenticationError) as raised:
        await sdk.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers=headers
        )
    await sdk.close()
    assert raised.value.code == "invalid_api_key"
    assert raised.value.body == {
        "message": "Incorrect API key provided. Send a Sentinel key as "
        "'Authorization: Bearer <key>'.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }


async def test_bad_request_error_names_param(client: openai.AsyncOpenAI) -> None:
    """A wrongly typed field is a BadRequestError naming the parameter."""
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(model="gpt-4o-mini", messages="not a list")  # type: ignore[arg-type]
    assert raised.value.param == "messages"


async def test_unknown_model_is_not_found(gateway: Gateway, start_gateway: StartGateway) -> None:
    """A model that no upstream's globs match is a NotFoundError model_not_found."""
    config = gateway.config
    only_gpt = replace(config, upstreams=(replace(config.upstreams[0], models=("gpt-*",)),))
    narrow = await start_gateway(only_gpt)
    sdk = openai.AsyncOpenAI(base_url=narrow.base_url, api_key=narrow.key, max_retries=0)
    with pytest.raises(openai.NotFoundError) as raised:
        await sdk.chat.completions.create(model="claude-9", messages=MESSAGES)
    await sdk.close()
    assert raised.value.code == "model_not_found"


async def test_mid_stream_failure_raises_api_error(client: openai.AsyncOpenAI) -> None:
    """An upstream that dies mid-stream surfaces as APIError in the SDK, not a clean end."""
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-mock-fault": "die-after:2"},
    )
    received = []
    with pytest.raises(openai.APIError) as raised:
        async for chunk in stream:
            received.append(chunk)
    assert received
    assert "upstream" in raised.value.message.lower()


async def test_stream_ended_without_done_raises_api_error(client: openai.AsyncOpenAI) -> None:
    """A stream that ends cleanly but without [DONE] is reported as incomplete."""
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-mock-fault": "no-done"},
    )
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
