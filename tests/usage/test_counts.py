"""Reading OpenAI ``usage`` objects of both shapes, and rejecting anything doubtful."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.usage.counts import MAX_TOKENS, Usage

CHAT = {
    "prompt_tokens": 81,
    "completion_tokens": 47,
    "total_tokens": 128,
    "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 12, "audio_tokens": 0},
}
RESPONSES = {
    "input_tokens": 37,
    "input_tokens_details": {"cached_tokens": 5},
    "output_tokens": 11,
    "output_tokens_details": {"reasoning_tokens": 3},
    "total_tokens": 48,
}


def test_chat_shape() -> None:
    """Chat and completions usage is read with its cached and reasoning details."""
    assert Usage.from_openai(CHAT) == Usage(81, 47, 128, cached_tokens=64, reasoning_tokens=12)


def test_responses_shape() -> None:
    """Responses API usage maps input/output onto prompt/completion."""
    assert Usage.from_openai(RESPONSES) == Usage(37, 11, 48, cached_tokens=5, reasoning_tokens=3)


def test_embeddings_shape() -> None:
    """Embeddings usage has no completion tokens, which reads as zero."""
    assert Usage.from_openai({"prompt_tokens": 8, "total_tokens": 8}) == Usage(8, 0, 8)


def test_missing_total_is_the_sum() -> None:
    """A usage without ``total_tokens`` totals its parts."""
    assert Usage.from_openai({"prompt_tokens": 2, "completion_tokens": 3}) == Usage(2, 3, 5)


def test_total_is_taken_as_reported() -> None:
    """A reported total is kept even when it is not the sum (some providers count extra)."""
    usage = {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 9}
    assert Usage.from_openai(usage) == Usage(2, 3, 9)


def test_null_details_are_zero() -> None:
    """Null or missing detail objects and fields count as zero."""
    usage = {**CHAT, "prompt_tokens_details": None, "completion_tokens_details": {}}
    assert Usage.from_openai(usage) == Usage(81, 47, 128)


def test_null_completion_is_zero() -> None:
    """A null ``completion_tokens`` (some providers send it on embeddings) counts as zero."""
    assert Usage.from_openai({"prompt_tokens": 4, "completion_tokens": None}) == Usage(4, 0, 4)


@pytest.mark.parametrize(
    "usage",
    [
        None,
        [],
        "usage",
        17,
        {},
        {"total_tokens": 5},
        {"prompt_tokens": None},
        {"prompt_tokens": "5"},
        {"prompt_tokens": 5.0},
        {"prompt_tokens": True},
        {"prompt_tokens": -1},
        {"prompt_tokens": MAX_TOKENS + 1},
        {"prompt_tokens": 1, "completion_tokens": False},
        {"prompt_tokens": 1, "total_tokens": -3},
        {"prompt_tokens": MAX_TOKENS, "completion_tokens": 1},
        {"prompt_tokens": 1, "prompt_tokens_details": []},
        {"prompt_tokens": 1, "prompt_tokens_details": {"cached_tokens": "2"}},
        {"prompt_tokens": 1, "completion_tokens_details": {"reasoning_tokens": -2}},
        {"input_tokens": 1},
        {"input_tokens": 1, "output_tokens": None},
        {"input_tokens": 1, "output_tokens": 2, "output_tokens_details": "x"},
    ],
)
def test_rejects_invalid(usage: object) -> None:
    """Anything but a well-typed usage mapping of non-negative integers gives None."""
    assert Usage.from_openai(usage) is None


_COUNT = st.integers(0, MAX_TOKENS // 2)
_VALUE: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(sorted({*CHAT, *RESPONSES, "cached_tokens"})), inner)
    ),
    max_leaves=12,
)


@given(_VALUE)
def test_never_raises(value: object) -> None:
    """Whatever the value, reading it returns a Usage or None and never raises."""
    usage = Usage.from_openai(value)
    assert (
        usage is None or min(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) >= 0
    )


@given(_COUNT, _COUNT, _COUNT, _COUNT, st.booleans())
def test_valid_counts_are_read(
    prompt: int, completion: int, cached: int, reasoning: int, responses: bool
) -> None:
    """Any in-range counts in either shape are read back exactly."""
    if responses:
        usage: dict[str, Any] = {
            "input_tokens": prompt,
            "output_tokens": completion,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens_details": {"reasoning_tokens": reasoning},
        }
    else:
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
    expected = Usage(prompt, completion, prompt + completion, cached, reasoning)
    assert Usage.from_openai(usage) == expected
