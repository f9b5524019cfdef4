"""Chat Completions prompt tokens: OpenAI's cookbook figures, parts, tools, and odd shapes."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.tokens import ModelCounter, PromptCounter
from tests.tokens.strategies import JSON
from tests.tokens.test_images import png

# OpenAI cookbook, "How to count tokens with tiktoken", section 6.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]

# The same notebook, section 7.
COOKBOOK_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
COOKBOOK_TOOL_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.mark.parametrize(
    ("model", "tokens"),
    [
        ("gpt-3.5-turbo", 129),
        ("gpt-4", 129),
        ("gpt-4-0613", 129),
        ("gpt-4o", 124),
        ("gpt-4o-mini", 124),
        ("gpt-4o-2024-08-06", 124),
    ],
)
def test_cookbook_messages(counter: PromptCounter, model: str, tokens: int) -> None:
    """The cookbook's example counts what the OpenAI API reported for it."""
    assert counter.for_model(model).count_chat({"model": model, "messages": COOKBOOK_MESSAGES}) == (
        tokens
    )


@pytest.mark.parametrize(
    ("model", "tokens"),
    [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)],
)
def test_cookbook_tools(counter: PromptCounter, model: str, tokens: int) -> None:
    """The cookbook's tool example counts what the OpenAI API reported for it."""
    body = {"messages": COOKBOOK_TOOL_MESSAGES, "tools": COOKBOOK_TOOLS}
    assert counter.for_model(model).count_chat(body) == tokens


def test_legacy_functions_count_like_tools(gpt4o: ModelCounter) -> None:
    """``functions`` definitions count as the equivalent ``tools``."""
    body = {"messages": COOKBOOK_TOOL_MESSAGES, "functions": [COOKBOOK_TOOLS[0]["function"]]}
    assert gpt4o.count_chat(body) == 101


def test_nested_schemas_count_more_than_flat_ones(gpt4o: ModelCounter) -> None:
    """Schema parts the cookbook formula ignores still add tokens."""
    nested = copy.deepcopy(COOKBOOK_TOOLS)
    props = nested[0]["function"]["parameters"]["properties"]
    props["days"] = {"type": "array", "description": "Days", "items": {"type": "string"}}
    flat = copy.deepcopy(COOKBOOK_TOOLS)
    flat[0]["function"]["parameters"]["properties"]["days"] = {
        "type": "array",
        "description": "Days",
    }
    count = gpt4o.count_chat
    assert count({"messages": [], "tools": nested}) > count({"messages": [], "tools": flat})


def test_special_tokens_in_user_text_count_as_text(gpt4o: ModelCounter, gpt4: ModelCounter) -> None:
    """``<|endoftext|>`` typed by a user is counted as ordinary text, never refused."""
    text = "hello <|endoftext|> <|endofprompt|> <|fim_prefix|>"
    assert gpt4.count_text(text) == len(gpt4.content.encoding.encode(text, disallowed_special=()))
    assert gpt4o.count_text("<|endoftext|>") > 1
    body = {"messages": [{"role": "user", "content": text}]}
    assert gpt4o.count_chat(body) == 3 + 1 + gpt4o.count_text(text) + 3


def test_lone_surrogates_do_not_raise(gpt4o: ModelCounter) -> None:
    """Text that is not valid UTF-8 is counted, not refused."""
    assert gpt4o.count_text("a\ud800b") > 0


def test_text_parts_count_like_string_content(gpt4o: ModelCounter) -> None:
    """Content given as text parts counts as the same text given as a string."""
    as_string = {"messages": [{"role": "user", "content": "Hello there, world"}]}
    as_parts = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hello there,"},
                    {"type": "text", "text": " world"},
                ],
            }
        ]
    }
    assert gpt4o.count_chat(as_parts) == gpt4o.count_chat(as_string)


@pytest.mark.parametrize(
    ("image_url", "image_tokens"),
    [
        ({"url": "https://example.com/a.png", "detail": "low"}, 85),
        ({"url": "https://example.com/a.png", "detail": "high"}, 85 + 8 * 170),
        ({"url": "https://example.com/a.png"}, 85 + 8 * 170),
        ("https://example.com/a.png", 85 + 8 * 170),
        (
            {"url": "data:image/png;base64," + base64.b64encode(png(1024, 1024)).decode()},
            765,
        ),
        (
            {
                "url": "data:image/png;base64," + base64.b64encode(png(2048, 4096)).decode(),
                "detail": "high",
            },
            1105,
        ),
    ],
)
def test_image_parts(gpt4o: ModelCounter, image_url: object, image_tokens: int) -> None:
    """Images cost their tile price, never the length of their base64 text."""
    body = {
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": image_url}]}]
    }
    assert gpt4o.count_chat(body) == 3 + 1 + image_tokens + 3


def test_gpt4o_mini_images_use_its_own_pricing(counter: PromptCounter) -> None:
    """The same low-detail image costs 2833 tokens on gpt-4o-mini."""
    part = {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "low"}}
    body = {"messages": [{"role": "user", "content": [part]}]}
    assert counter.for_model("gpt-4o-mini").count_chat(body) == 3 + 1 + 2833 + 3


def test_tool_calls_and_results_are_counted(gpt4o: ModelCounter) -> None:
    """Assistant tool calls count their name and arguments; tool results their content."""
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_current_weather", "arguments": '{"location": "Paris"}'},
    }
    asked = {"role": "assistant", "content": None, "tool_calls": [call]}
    answered = {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'}
    base = gpt4o.count_chat({"messages": COOKBOOK_TOOL_MESSAGES})
    with_call = gpt4o.count_chat({"messages": [*COOKBOOK_TOOL_MESSAGES, asked]})
    with_both = gpt4o.count_chat({"messages": [*COOKBOOK_TOOL_MESSAGES, asked, answered]})
    arguments = gpt4o.count_text('{"location": "Paris"}')
    assert with_call - base >= 3 + arguments + gpt4o.count_text("get_current_weather")
    assert with_both - with_call >= 3 + gpt4o.count_text('{"temp": 21}')


def test_legacy_function_messages_are_counted(gpt4: ModelCounter) -> None:
    """``function_call`` and ``role: function`` messages count their text and name."""
    messages = [
        {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
        {"role": "function", "name": "f", "content": "42"},
    ]
    assert gpt4.count_chat({"messages": messages}) > 3 + 3 + 3


def test_json_schema_response_format_is_counted(gpt4o: ModelCounter) -> None:
    """A structured-output schema is part of the prompt."""
    schema = {
        "name": "answer",
        "schema": {"type": "object", "properties": {"x": {"type": "string"}}},
    }
    plain = {"messages": COOKBOOK_TOOL_MESSAGES}
    structured = {**plain, "response_format": {"type": "json_schema", "json_schema": schema}}
    assert gpt4o.count_chat(structured) > gpt4o.count_chat(plain)


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "text",
        {},
        {"messages": None},
        {"messages": "hello"},
        {"messages": [None, 1, "x", [], {}]},
        {"messages": [{"role": "user", "content": {"unexpected": ["shape", 1, None]}}]},
        {"messages": [{"role": "user", "content": [None, 3, {"type": "image_url"}]}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": 7}]}]},
        {"messages": [{"role": "assistant", "tool_calls": "nope"}]},
        {
            "messages": [],
            "tools": [None, {"type": "function"}, {"type": "function", "function": 3}],
        },
        {
            "messages": [],
            "tools": [{"type": "function", "function": {"parameters": {"properties": 1}}}],
        },
        {"messages": [], "tools": {"type": "web_search"}},
        {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": 5}]}]},
    ],
)
def test_odd_shapes_count_without_raising(gpt4o: ModelCounter, body: object) -> None:
    """Bodies an upstream would reject still get a non-negative count."""
    assert gpt4o.count_chat(body) >= 0


def test_deeply_nested_content_does_not_overflow_the_stack(gpt4o: ModelCounter) -> None:
    """Unknown shapes are walked without recursion."""
    deep: object = "leaf"
    for _ in range(100_000):
        deep = [deep]
    assert gpt4o.count_chat({"messages": [{"role": "user", "content": {"x": deep}}]}) > 0


def test_audio_is_estimated_from_the_wav_header(gpt4o: ModelCounter) -> None:
    """Ten seconds of 16 kHz 16-bit mono WAV cost about 100 tokens."""
    byte_rate = 32_000
    header = b"RIFF\0\0\0\0WAVEfmt " + bytes(12) + byte_rate.to_bytes(4, "little") + bytes(16)
    wav = header + bytes(byte_rate * 10)
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav).decode()}}
    body = {"messages": [{"role": "user", "content": [part]}]}
    assert 100 <= gpt4o.count_chat(body) - 7 <= 102


def test_files_are_estimated_from_their_size(gpt4o: ModelCounter) -> None:
    """An attached file costs its name plus a quarter token per byte, not its base64 text."""
    data = "data:application/pdf;base64," + base64.b64encode(bytes(40_000)).decode()
    part = {"type": "file", "file": {"filename": "report.pdf", "file_data": data}}
    body = {"messages": [{"role": "user", "content": [part]}]}
    assert gpt4o.count_chat(body) == 7 + 10_000 + gpt4o.count_text("report.pdf")


@given(JSON)
def test_any_json_body_counts_without_raising(gpt4o: ModelCounter, body: object) -> None:
    """Whatever JSON arrives, the count is a non-negative integer."""
    assert gpt4o.count_chat(body) >= 0
    assert gpt4o.count_chat({"messages": body}) >= 0
    assert gpt4o.count_chat({"messages": [{"role": "user", "content": body}]}) >= 0
    assert gpt4o.count_chat({"messages": [], "tools": body, "functions": body}) >= 0


@given(st.lists(JSON, max_size=4))
def test_any_tool_list_counts_without_raising(gpt4: ModelCounter, tools: list[object]) -> None:
    """Arbitrary tool definitions never raise."""
    wrapped = [{"type": "function", "function": tool} for tool in tools]
    assert gpt4.count_chat({"messages": [], "tools": tools + wrapped}) >= 0
