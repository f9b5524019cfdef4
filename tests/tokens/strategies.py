"""Hypothesis strategies for the parsed JSON bodies the counters must survive."""

from __future__ import annotations

from hypothesis import strategies as st

KEYS = st.sampled_from(
    [
        "role",
        "content",
        "name",
        "type",
        "text",
        "image_url",
        "url",
        "detail",
        "tool_calls",
        "function",
        "arguments",
        "function_call",
        "messages",
        "input",
        "prompt",
        "suffix",
        "tools",
        "functions",
        "parameters",
        "properties",
        "enum",
        "description",
        "instructions",
        "output",
        "summary",
        "file",
        "file_data",
        "input_audio",
        "data",
        "refusal",
        "model",
        "response_format",
        "json_schema",
        "max_tokens",
        "n",
        "items",
        "required",
    ]
) | st.text(max_size=8)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(
        [
            "message",
            "function",
            "text",
            "input_text",
            "image_url",
            "input_image",
            "low",
            "high",
            "auto",
            "input_audio",
            "file",
            "input_file",
            "function_call",
            "reasoning",
            "function_call_output",
            "item_reference",
            "json_schema",
            "<|endoftext|>",
            "data:image/png;base64,iVBORw0KGgo=",
            "data:image/jpeg;base64,/9j/",
        ]
    )
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=25,
)
"""JSON-like values biased towards the keys and values the counters look at."""
