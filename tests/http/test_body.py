"""Strict JSON bodies: a repeated key is found wherever it is, however the body is spelled."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.errors import InvalidRequest
from sentinel.http.body import parse_json_object

_KEYS = st.text(alphabet='ab:"\\é', min_size=1, max_size=3)
_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-9, 9), st.text(alphabet='x:"\\é ', max_size=4)
)


def _json(value: Any) -> st.SearchStrategy[Any]:
    return st.recursive(
        value,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.lists(st.tuples(_KEYS, inner), max_size=3),  # an object, keys may repeat
        ),
        max_leaves=8,
    )


def _spell(value: Any, draw: st.DrawFn) -> str:
    """``value`` written as JSON with drawn spacing and escapes (pairs lists are objects)."""
    space = draw(st.sampled_from(["", " ", "\n", "\t "]))
    if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
        items = (f"{space}{_string(k, draw)}{space}:{space}{_spell(v, draw)}" for k, v in value)
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_spell(v, draw) for v in value) + "]"
    if isinstance(value, str):
        return _string(value, draw)
    return json.dumps(value)


def _string(text: str, draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return json.dumps(text, ensure_ascii=True).replace(":", "\\u003a")
    return json.dumps(text, ensure_ascii=draw(st.booleans()))


def _repeats(value: Any) -> bool:
    if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
        keys = [k for k, _ in value]
        return len(keys) != len(set(keys)) or any(_repeats(v) for _, v in value)
    return isinstance(value, list) and any(_repeats(v) for v in value)


@st.composite
def _bodies(draw: st.DrawFn) -> tuple[bytes, bool]:
    pairs = draw(st.lists(st.tuples(_KEYS, _json(_LEAVES)), min_size=1, max_size=4))
    return _spell(pairs, draw).encode(), _repeats(pairs)


@given(_bodies())
def test_a_repeated_key_is_always_found(body: tuple[bytes, bool]) -> None:
    """Spacing, escaped colons and quotes, nesting: a body is refused exactly when some object
    in it repeats a key."""
    raw, repeats = body
    if not repeats:
        assert isinstance(parse_json_object(raw, None), dict)
        return
    with pytest.raises(InvalidRequest) as refused:
        parse_json_object(raw, None)
    assert refused.value.code == "duplicate_key" and refused.value.param


def test_the_path_of_the_repeat_is_named() -> None:
    """The error's param is the JSON path of the first repeated key."""
    with pytest.raises(InvalidRequest) as refused:
        parse_json_object(b'{"a": [1, {"b": 1, "c": {"d": 1, "d": 2}}]}', None)
    assert refused.value.param == "a[1].c.d"
