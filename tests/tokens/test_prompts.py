"""Completions, Embeddings and Responses counts, completion caps, and off-loop counting."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given

import sentinel.tokens
from sentinel.tokens import (
    Encodings,
    ModelCounter,
    PromptCounter,
    TokenizerError,
    completion_cap,
)
from sentinel.tokens.prompts import INLINE_LIMIT, Api
from tests.tokens.strategies import JSON

APIS: tuple[Api, ...] = ("chat", "completions", "embeddings", "responses")


def test_public_api() -> None:
    """The package exports exactly its documented names."""
    assert set(sentinel.tokens.__all__) == {
        "DEFAULT_ENCODINGS",
        "Api",
        "DataSource",
        "Encodings",
        "ModelCounter",
        "ModelResolver",
        "PromptCounter",
        "TokenizerError",
        "completion_cap",
    }


@pytest.mark.parametrize(
    ("prompt", "tokens"),
    [
        ("hello world", 2),
        (["hello world", "hello"], 3),
        ([15339, 1917, 0], 3),
        ([[15339, 1917], [1, 2, 3]], 5),
        (["hello", [1, 2]], 3),
        ([], 0),
        (None, 0),
    ],
)
def test_completions_prompt_shapes(gpt4: ModelCounter, prompt: object, tokens: int) -> None:
    """A prompt may be a string, strings, a token array or token arrays."""
    assert gpt4.count_completions({"model": "gpt-3.5-turbo-instruct", "prompt": prompt}) == tokens


def test_completions_suffix_is_counted(gpt4: ModelCounter) -> None:
    """The insertion suffix is part of the prompt."""
    assert gpt4.count_completions({"prompt": "hello", "suffix": " world"}) == 2


@pytest.mark.parametrize(
    ("value", "tokens"),
    [("hello world", 2), (["hello world", "hello"], 3), ([15339, 1917], 2), ([[1], [2, 3]], 3)],
)
def test_embeddings_input_shapes(gpt4: ModelCounter, value: object, tokens: int) -> None:
    """Embedding input may be a string, strings, a token array or token arrays."""
    assert gpt4.count_embeddings({"model": "text-embedding-3-small", "input": value}) == tokens


def test_special_tokens_in_completions_and_embeddings(gpt4: ModelCounter) -> None:
    """Special-token text is ordinary text in every API."""
    assert gpt4.count_completions({"prompt": "<|endoftext|>"}) > 1
    assert gpt4.count_embeddings({"input": ["<|endoftext|>"]}) > 1


def test_responses_string_input_counts_like_a_user_message(gpt4o: ModelCounter) -> None:
    """``input: str`` costs what the same text costs as a Chat user message."""
    text = "Tell me a three sentence bedtime story about a unicorn."
    chat = gpt4o.count_chat({"messages": [{"role": "user", "content": text}]})
    assert gpt4o.count_responses({"model": "gpt-4o", "input": text}) == chat


def test_responses_instructions_count_like_a_system_message(gpt4o: ModelCounter) -> None:
    """``instructions`` cost what a system message costs."""
    messages = [
        {"role": "system", "content": "Talk like a pirate."},
        {"role": "user", "content": "Are semicolons optional in JavaScript?"},
    ]
    body = {
        "instructions": "Talk like a pirate.",
        "input": "Are semicolons optional in JavaScript?",
    }
    assert gpt4o.count_responses(body) == gpt4o.count_chat({"messages": messages})


def test_responses_items_match_chat_messages(gpt4o: ModelCounter) -> None:
    """Message items with input_text parts count like Chat messages, ids and types aside."""
    items = [
        {"role": "developer", "content": "Be brief."},
        {
            "type": "message",
            "id": "msg_123",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_text", "text": "What is in this image?"}],
        },
    ]
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "What is in this image?"},
    ]
    assert gpt4o.count_responses({"input": items}) == gpt4o.count_chat({"messages": messages})


def test_responses_images_and_tool_items(gpt4o: ModelCounter) -> None:
    """input_image parts, function calls and their outputs are counted."""
    items = [
        {
            "role": "user",
            "content": [{"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}],
        },
        {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": '{"q": "x"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "found it"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Hmm."}]},
        {"type": "item_reference", "id": "msg_1"},
        {"type": "web_search_call", "id": "ws_1", "action": {"query": "weather"}},
    ]
    expected = (
        3  # reply priming
        + (3 + 1 + 85)
        + (3 + gpt4o.count_text("lookup") + gpt4o.count_text('{"q": "x"}'))
        + (3 + gpt4o.count_text("found it"))
        + (3 + gpt4o.count_text("Hmm.") + gpt4o.count_text("summary_text"))
        + 0
        + (3 + gpt4o.count_text("weather"))
    )
    assert gpt4o.count_responses({"input": items}) == expected


def test_responses_function_tools_use_the_cookbook_formula(gpt4o: ModelCounter) -> None:
    """Flat Responses function tools count like nested Chat ones."""
    function = {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    }
    responses = gpt4o.count_responses({"tools": [{"type": "function", **function}]})
    chat = gpt4o.count_chat({"messages": [], "tools": [{"type": "function", "function": function}]})
    assert responses == chat


def test_responses_json_schema_is_counted(gpt4o: ModelCounter) -> None:
    """A ``text.format`` JSON schema is part of the prompt."""
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    fmt = {"type": "json_schema", "name": "a", "schema": schema}
    assert gpt4o.count_responses({"input": "hi", "text": {"format": fmt}}) > gpt4o.count_responses(
        {"input": "hi"}
    )


@pytest.mark.parametrize(
    ("api", "body", "cap"),
    [
        ("chat", {"max_tokens": 100}, 100),
        ("chat", {"max_completion_tokens": 200, "max_tokens": 100}, 200),
        ("chat", {"max_completion_tokens": 50, "n": 3}, 150),
        ("chat", {"n": 3}, None),
        ("chat", {"max_tokens": 0}, None),
        ("chat", {"max_tokens": -5}, None),
        ("chat", {"max_tokens": True}, None),
        ("chat", {"max_tokens": "100"}, None),
        ("chat", {"max_tokens": 10, "n": "2"}, 10),
        ("completions", {"max_tokens": 10, "n": 2}, 20),
        ("completions", {"max_tokens": 10, "n": 2, "best_of": 5}, 50),
        ("completions", {}, 16),
        ("responses", {"max_output_tokens": 300}, 300),
        ("responses", {}, None),
        ("embeddings", {"input": "x"}, 0),
        ("chat", None, None),
        ("chat", [], None),
    ],
)
def test_completion_cap(api: Api, body: object, cap: int | None) -> None:
    """The cap is the token limit times the choices, or None when the body sets no limit."""
    assert completion_cap(api, body) == cap


@given(JSON)
def test_any_json_counts_in_every_api_without_raising(gpt4o: ModelCounter, body: object) -> None:
    """Every API counts any JSON as a non-negative integer, and caps never raise."""
    for api in APIS:
        assert gpt4o.count(api, body) >= 0
        cap = completion_cap(api, body)
        assert cap is None or cap >= 0
    assert gpt4o.count_responses({"input": body, "instructions": body, "tools": body}) >= 0
    assert gpt4o.count_completions({"prompt": body, "suffix": body}) >= 0
    assert gpt4o.count_embeddings({"input": body}) >= 0


def test_counter_requires_a_loaded_default(encodings: Encodings) -> None:
    """A default encoding that is not loaded is a startup error."""
    with pytest.raises(TokenizerError, match="p50k_base: default encoding is not loaded"):
        PromptCounter(encodings, "p50k_base")


def test_counter_resolves_each_model(counter: PromptCounter) -> None:
    """``for_model`` picks the model's encoding and falls back to the default."""
    assert counter.default_encoding == "o200k_base"
    assert counter.for_model("gpt-4").encoding_name == "cl100k_base"
    assert counter.for_model("azure/my-gpt4o").encoding_name == "o200k_base"
    assert counter.for_model(None).encoding_name == "o200k_base"


def record_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make ``ModelCounter.count`` record the thread it runs on."""
    threads: list[int] = []
    original = ModelCounter.count

    def spy(self: ModelCounter, api: Api, body: object) -> int:
        threads.append(threading.get_ident())
        return original(self, api, body)

    monkeypatch.setattr(ModelCounter, "count", spy)
    return threads


async def test_small_prompts_are_counted_inline(
    gpt4o: ModelCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small body is counted on the event loop's thread."""
    threads = record_threads(monkeypatch)
    body = {"messages": [{"role": "user", "content": "hello"}]}
    assert await gpt4o.count_prompt("chat", body) == 3 + 1 + 1 + 3
    assert await gpt4o.count_prompt("chat", body, size_hint=60) == 8
    assert threads == [threading.get_ident()] * 2


async def test_big_prompts_are_counted_in_a_worker_thread(
    gpt4o: ModelCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body with more than 64 KiB of text is counted off the event loop."""
    threads = record_threads(monkeypatch)
    text = "lorem ipsum dolor sit amet " * (INLINE_LIMIT // 20)
    body = {"messages": [{"role": "user", "content": text}]}
    assert await gpt4o.count_prompt("chat", body) == gpt4o.content.text(text) + 7
    many_small = {"input": ["x"] * 10_000}
    assert await gpt4o.count_prompt("embeddings", many_small) == 10_000
    assert await gpt4o.count_prompt("chat", {"messages": []}, size_hint=INLINE_LIMIT + 1) == 3
    assert len(threads) == 3
    assert threading.get_ident() not in threads


async def test_prompt_counter_counts_for_the_body_model(counter: PromptCounter) -> None:
    """``PromptCounter.count_prompt`` resolves the model named in the body."""
    messages = [{"role": "user", "content": "hello world"}]
    assert await counter.count_prompt("chat", {"model": "gpt-4", "messages": messages}) == 9
    assert await counter.count_prompt("chat", ["not", "a", "dict"]) >= 0
