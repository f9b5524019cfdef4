"""The pure functions of sentinel.tenancy.objects, and the proof that may_refer misses nothing."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sentinel.tenancy
from sentinel.tenancy import (
    MAX_BODY_DEPTH,
    ObjectKind,
    ObjectRef,
    body_object_ids,
    collection_kind,
    created_objects,
    may_refer,
    path_object,
)

# --- paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("files/file-abc", ObjectRef("file", "file-abc")),
        ("files/file-abc/content", ObjectRef("file", "file-abc")),
        ("batches/batch_1/cancel", ObjectRef("batch", "batch_1")),
        ("uploads/upload_1/parts", ObjectRef("upload", "upload_1")),
        ("responses/resp_1", ObjectRef("response", "resp_1")),
        ("responses/resp_1/input_items", ObjectRef("response", "resp_1")),
        ("chat/completions/chatcmpl-1", ObjectRef("chat_completion", "chatcmpl-1")),
        ("chat/completions/chatcmpl-1/messages", ObjectRef("chat_completion", "chatcmpl-1")),
        ("vector_stores/vs_1/files/file-2", ObjectRef("vector_store", "vs_1")),
        ("assistants/asst_1", ObjectRef("assistant", "asst_1")),
        ("threads/thread_1/runs/run_1", ObjectRef("thread", "thread_1")),
        ("fine_tuning/jobs/ftjob-1/events", ObjectRef("fine_tuning_job", "ftjob-1")),
        ("models/ft:gpt-4o:org::abc", ObjectRef("model", "ft:gpt-4o:org::abc")),
        ("models/ft:org/custom", ObjectRef("model", "ft:org/custom")),
    ],
)
def test_path_object_names_the_addressed_object(path: str, expected: ObjectRef) -> None:
    """A path below a collection addresses the object whose id follows the collection."""
    assert path_object(tuple(path.split("/"))) == expected


@pytest.mark.parametrize(
    "path",
    [
        "files",
        "chat/completions",
        "fine_tuning/jobs",
        "responses/input_tokens",
        "responses/compact",
        "threads/runs",
        "models",
        "models/gpt-4o",
        "embeddings",
        "chat",
        "fine_tuning",
        "fine_tuning/checkpoints/ft:x/permissions",
    ],
)
def test_path_object_is_none_off_objects(path: str) -> None:
    """Collections, endpoints in an id's place and base models address no object."""
    assert path_object(tuple(path.split("/"))) is None


def test_path_object_is_none_for_an_empty_id() -> None:
    """An empty segment where the id belongs names no object."""
    assert path_object(("files", "")) is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("files", "file"),
        ("batches", "batch"),
        ("uploads", "upload"),
        ("responses", "response"),
        ("chat/completions", "chat_completion"),
        ("vector_stores", "vector_store"),
        ("assistants", "assistant"),
        ("threads", "thread"),
        ("fine_tuning/jobs", "fine_tuning_job"),
        ("models", None),
        ("chat", None),
        ("files/file-abc", None),
        ("threads/runs", None),
    ],
)
def test_collection_kind(path: str, expected: ObjectKind | None) -> None:
    """Exactly the nine list/create paths are collections of gateway-owned objects."""
    assert collection_kind(tuple(path.split("/"))) == expected


# --- request bodies ---------------------------------------------------------------------------


def test_body_ids_are_found_anywhere() -> None:
    """Ids in tool resources, attachments and input parts are found, in document order."""
    body = {
        "model": "ft:gpt-4o:org::abc",
        "previous_response_id": "resp_1",
        "input": [{"content": [{"type": "input_file", "file_id": "file-1"}]}],
        "tool_resources": {
            "file_search": {"vector_store_ids": ["vs_1", "vs_2"]},
            "code_interpreter": {"file_ids": ["file-2"]},
        },
        "attachments": [{"file_id": "file-3", "tools": []}],
        "assistant_id": "asst_1",
        "thread_id": "thread_1",
        "training_file": "file-4",
        "validation_file": "file-5",
        "input_file_id": "file-6",
        "vector_store_id": "vs_3",
    }
    assert body_object_ids(body) == [
        ObjectRef("model", "ft:gpt-4o:org::abc"),
        ObjectRef("response", "resp_1"),
        ObjectRef("file", "file-1"),
        ObjectRef("vector_store", "vs_1"),
        ObjectRef("vector_store", "vs_2"),
        ObjectRef("file", "file-2"),
        ObjectRef("file", "file-3"),
        ObjectRef("assistant", "asst_1"),
        ObjectRef("thread", "thread_1"),
        ObjectRef("file", "file-4"),
        ObjectRef("file", "file-5"),
        ObjectRef("file", "file-6"),
        ObjectRef("vector_store", "vs_3"),
    ]


def test_body_ids_count_only_nonempty_strings() -> None:
    """Numbers, nulls, objects and empty strings under an id key name nothing."""
    body = {
        "file_id": 12,
        "thread_id": None,
        "assistant_id": "",
        "file_ids": ["", 3, None, "file-1"],
        "previous_response_id": {"id": "resp_1"},
    }
    assert body_object_ids(body) == [ObjectRef("file", "file-1")]


def test_a_lone_string_under_a_list_key_counts() -> None:
    """``file_ids: "file-1"`` is checked as if it were a one-element list."""
    assert body_object_ids({"file_ids": "file-1"}) == [ObjectRef("file", "file-1")]


def test_only_a_top_level_fine_tuned_model_counts() -> None:
    """A base model, or a model nested below the top level, names no object."""
    assert body_object_ids({"model": "gpt-4o"}) == []
    assert body_object_ids({"tools": [{"model": "ft:x"}]}) == []


def test_conversation_names_no_object() -> None:
    """Conversations are not objects Sentinel creates, so they are never collected."""
    assert body_object_ids({"conversation": "conv_1", "conversation_id": "conv_2"}) == []


def test_body_ids_are_listed_once() -> None:
    """An id named twice is listed once."""
    body = {"file_id": "file-1", "attachments": [{"file_id": "file-1"}]}
    assert body_object_ids(body) == [ObjectRef("file", "file-1")]


def test_bodies_nested_past_the_bound_are_refused() -> None:
    """Containers nested MAX_BODY_DEPTH deep are walked; one level more raises ValueError."""
    deepest: Any = {"file_id": "file-1"}
    for _ in range(MAX_BODY_DEPTH - 1):
        deepest = [deepest]
    assert body_object_ids(deepest) == [ObjectRef("file", "file-1")]
    with pytest.raises(ValueError, match="deeper"):
        body_object_ids([deepest])


def test_plain_chat_body_needs_no_walk() -> None:
    """A chat completion body naming no object passes the pre-filter untouched."""
    raw = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    assert not may_refer(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"file_id": "x"}',
        b'{"file_ids": ["x"]}',
        b'{"training_file": "x"}',
        b'{"model": "ft:x"}',
        b'{"file\\u005fid": "x"}',
    ],
)
def test_each_marker_forces_the_walk(raw: bytes) -> None:
    """Every marker byte string on its own makes the pre-filter say the body may refer."""
    assert may_refer(raw)


# --- the proof obligation of may_refer ----------------------------------------------------

ID_KEYS = [
    "file_id",
    "input_file_id",
    "training_file",
    "validation_file",
    "previous_response_id",
    "vector_store_ids",
    "vector_store_id",
    "file_ids",
    "assistant_id",
    "thread_id",
]
OTHER_KEYS = ["model", "conversation", "id", "input", "tools", "messages", "content"]

ids = st.text(max_size=10) | st.sampled_from(["file-abc", "ft:gpt-4o:org::x", "ft:", "gpt-4o"])
scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | ids
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(ID_KEYS + OTHER_KEYS) | st.text(max_size=6), children)
    ),
    max_leaves=20,
)
bodies = st.dictionaries(st.sampled_from(ID_KEYS + OTHER_KEYS) | st.text(max_size=6), json_values)


def _escaped_json(value: object, rng: random.Random) -> str:
    """JSON text in which a random choice of the characters of every string is a \\u escape."""
    if isinstance(value, str):
        return '"' + "".join(_escaped_char(c, rng) for c in value) + '"'
    if isinstance(value, dict):
        pairs = (_escaped_json(k, rng) + ":" + _escaped_json(v, rng) for k, v in value.items())
        return "{" + ",".join(pairs) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_escaped_json(item, rng) for item in value) + "]"
    return json.dumps(value)


def _escaped_char(char: str, rng: random.Random) -> str:
    if char not in '"\\' and ord(char) >= 0x20 and rng.random() < 0.7:
        return char
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _encodings(body: object, seed: int) -> list[bytes]:
    """The body as orjson, ASCII-only json and UTF-8 json write it, and with escaped strings."""
    return [
        orjson.dumps(body),
        json.dumps(body, ensure_ascii=True).encode(),
        json.dumps(body, ensure_ascii=False).encode(),
        _escaped_json(body, random.Random(seed)).encode(),
    ]


@given(body=bodies, seed=st.integers(0, 2**32))
def test_may_refer_never_misses_a_body_naming_an_object(body: dict[str, Any], seed: int) -> None:
    """Whatever the encoding, a body whose walk finds an id always passes the pre-filter."""
    for raw in _encodings(body, seed):
        parsed = orjson.loads(raw)
        assert parsed == body
        if body_object_ids(parsed):
            assert may_refer(raw), raw


@given(
    key=st.sampled_from(ID_KEYS),
    object_id=st.text(min_size=1, max_size=10),
    wrappers=st.lists(st.sampled_from(["list", "dict"]), max_size=5),
    rest=bodies,
    seed=st.integers(0, 2**32),
)
def test_may_refer_passes_every_body_with_an_id_key(
    key: str, object_id: str, wrappers: list[str], rest: dict[str, Any], seed: int
) -> None:
    """A body with an id key nested anywhere, in any encoding, passes the pre-filter."""
    inner: Any = {key: object_id}
    for wrapper in wrappers:
        inner = [inner] if wrapper == "list" else {"x": inner}
    body = {**rest, "payload": inner}
    for raw in _encodings(body, seed):
        assert body_object_ids(orjson.loads(raw))
        assert may_refer(raw), raw


@given(model=st.text(max_size=10), seed=st.integers(0, 2**32))
def test_may_refer_passes_every_fine_tuned_model(model: str, seed: int) -> None:
    """A top-level ``ft:`` model in any encoding passes the pre-filter."""
    for raw in _encodings({"model": "ft:" + model}, seed):
        assert may_refer(raw), raw


# --- replies ----------------------------------------------------------------------------------


def test_created_objects_of_a_file() -> None:
    """A create reply shows its own object with its created_at."""
    reply = {"id": "file-abc", "object": "file", "created_at": 1_700_000_000}
    assert created_objects("file", reply) == [(ObjectRef("file", "file-abc"), 1_700_000_000)]


def test_created_objects_of_an_upload_include_its_file() -> None:
    """A completed upload also shows the file it made, with the file's own created_at."""
    reply = {"id": "upload_1", "created_at": 10, "file": {"id": "file-1", "created_at": 12}}
    assert created_objects("upload", reply) == [
        (ObjectRef("upload", "upload_1"), 10),
        (ObjectRef("file", "file-1"), 12),
    ]


def test_created_objects_of_a_batch_include_its_files() -> None:
    """A batch shows its output and error files, dated like the batch."""
    reply = {
        "id": "batch_1",
        "created_at": 10,
        "input_file_id": "file-in",
        "output_file_id": "file-out",
        "error_file_id": "file-err",
    }
    assert created_objects("batch", reply) == [
        (ObjectRef("batch", "batch_1"), 10),
        (ObjectRef("file", "file-out"), 10),
        (ObjectRef("file", "file-err"), 10),
    ]


def test_created_objects_of_a_fine_tuning_job_include_its_model() -> None:
    """A fine-tuning job shows its result files and its fine-tuned model."""
    reply = {
        "id": "ftjob-1",
        "created_at": 10,
        "training_file": "file-train",
        "result_files": ["file-res"],
        "fine_tuned_model": "ft:gpt-4o:org::abc",
    }
    assert created_objects("fine_tuning_job", reply) == [
        (ObjectRef("fine_tuning_job", "ftjob-1"), 10),
        (ObjectRef("file", "file-res"), 10),
        (ObjectRef("model", "ft:gpt-4o:org::abc"), 10),
    ]


def test_created_objects_of_a_response_is_only_its_id() -> None:
    """A response reply shows only itself, whatever ids it mentions."""
    reply = {"id": "resp_1", "created_at": 5, "previous_response_id": "resp_0"}
    assert created_objects("response", reply) == [(ObjectRef("response", "resp_1"), 5)]


def test_created_at_defaults_to_zero() -> None:
    """A missing or non-integer created_at (booleans included) reads as 0."""
    for created in ({}, {"created_at": "10"}, {"created_at": True}, {"created_at": 1.5}):
        assert created_objects("thread", {"id": "thread_1", **created}) == [
            (ObjectRef("thread", "thread_1"), 0)
        ]


@pytest.mark.parametrize("bad", ["", "a b", "a/b", "a{b}", "é", "x" * 257, 12, None])
def test_malformed_ids_are_skipped(bad: object) -> None:
    """Ids that are not 1 to 256 of [A-Za-z0-9._:~-] are never claimed."""
    assert created_objects("file", {"id": bad}) == []
    assert created_objects("batch", {"id": "batch_1", "output_file_id": bad}) == [
        (ObjectRef("batch", "batch_1"), 0)
    ]


def test_the_longest_id_is_kept() -> None:
    """An id of exactly 256 characters is still an id."""
    assert created_objects("file", {"id": "x" * 256}) == [(ObjectRef("file", "x" * 256), 0)]


def test_non_object_replies_show_nothing() -> None:
    """A list, a string or a list page shows no created object."""
    assert created_objects("file", ["file-1"]) == []
    assert created_objects("file", "file-1") == []
    assert created_objects("file", {"object": "list", "data": [{"id": "file-1"}]}) == []


def test_public_names() -> None:
    """The package exports exactly its documented API."""
    assert sorted(sentinel.tenancy.__all__) == sorted(
        [
            "MAX_BODY_DEPTH",
            "MAX_PAGE",
            "MemoryOwners",
            "ObjectKind",
            "ObjectRef",
            "OwnerIndex",
            "OwnershipUnavailable",
            "RedisOwners",
            "body_object_ids",
            "collection_kind",
            "created_objects",
            "may_refer",
            "owned_key",
            "owner_key",
            "path_object",
            "placeholder",
        ]
    )
