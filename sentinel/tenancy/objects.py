"""Which gateway-created objects a request names and a reply shows: pure functions, no I/O.

A path names at most one object (``path_object``) or one collection (``collection_kind``); a
JSON body may name many, anywhere in it (``body_object_ids``), and ``may_refer`` decides from
the raw bytes alone whether the body needs walking at all. ``created_objects`` reads what a
successful create or retrieve reply shows the caller now owns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MAX_BODY_DEPTH",
    "ObjectKind",
    "ObjectRef",
    "body_object_ids",
    "collection_kind",
    "created_objects",
    "may_refer",
    "path_object",
]

ObjectKind = Literal[
    "file",
    "batch",
    "upload",
    "response",
    "chat_completion",
    "vector_store",
    "assistant",
    "thread",
    "fine_tuning_job",
    "model",
]

MAX_BODY_DEPTH = 64
"""Containers nested deeper than this in a request body make ``body_object_ids`` refuse it."""


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """One object created through the gateway: its kind and its upstream id."""

    kind: ObjectKind
    id: str


_COLLECTIONS: dict[tuple[str, ...], ObjectKind] = {
    ("files",): "file",
    ("batches",): "batch",
    ("uploads",): "upload",
    ("responses",): "response",
    ("chat", "completions"): "chat_completion",
    ("vector_stores",): "vector_store",
    ("assistants",): "assistant",
    ("threads",): "thread",
    ("fine_tuning", "jobs"): "fine_tuning_job",
}
_NOT_IDS: dict[ObjectKind, frozenset[str]] = {
    # Endpoints that sit where an id would: POST /v1/responses/input_tokens, .../compact,
    # and POST /v1/threads/runs (create a thread and run it).
    "response": frozenset({"input_tokens", "compact"}),
    "thread": frozenset({"runs"}),
}


def collection_kind(segments: tuple[str, ...]) -> ObjectKind | None:
    """The kind of object that the list/create path ``segments`` (after ``v1``) collects."""
    return _COLLECTIONS.get(segments)


def path_object(segments: tuple[str, ...]) -> ObjectRef | None:
    """The object that the canonical path ``segments`` (after ``v1``) addresses, if any.

    ``("files", "file-abc", "content")`` addresses the file ``file-abc``; a collection path,
    an endpoint in an id's place and a base model address none. A fine-tuned model id runs
    to the end of the path, so that an id with a slash is still checked.
    """
    if len(segments) >= 2 and segments[0] == "models":
        model = "/".join(segments[1:])
        return ObjectRef("model", model) if model.startswith("ft:") else None
    for width in (1, 2):
        kind = _COLLECTIONS.get(segments[:width])
        if kind is not None and len(segments) > width:
            object_id = segments[width]
            if not object_id or object_id in _NOT_IDS.get(kind, ()):
                return None
            return ObjectRef(kind, object_id)
    return None


_ONE_ID: dict[str, ObjectKind] = {
    "file_id": "file",
    "input_file_id": "file",
    "training_file": "file",
    "validation_file": "file",
    "previous_response_id": "response",
    "vector_store_id": "vector_store",
    "assistant_id": "assistant",
    "thread_id": "thread",
}
_MANY_IDS: dict[str, ObjectKind] = {
    "file_ids": "file",
    "vector_store_ids": "vector_store",
}


def body_object_ids(body: object) -> list[ObjectRef]:
    """Every object a parsed JSON request body names, in document order, each once.

    The keys above count wherever they occur (a file in ``tool_resources``, an ``input_file``
    part of a message); only non-empty string values count. A top-level ``model`` naming a
    fine-tuned model (``ft:``) counts too. ``ValueError`` when containers nest deeper than
    ``MAX_BODY_DEPTH``: such a body is refused rather than half checked.
    """
    found: dict[ObjectRef, None] = {}
    if isinstance(body, dict):
        model = body.get("model")
        if isinstance(model, str) and model.startswith("ft:"):
            found[ObjectRef("model", model)] = None
    _walk(body, 1, found)
    return list(found)


def _walk(value: object, depth: int, found: dict[ObjectRef, None]) -> None:
    if not isinstance(value, dict | list):
        return
    if depth > MAX_BODY_DEPTH:
        raise ValueError(f"the body nests deeper than {MAX_BODY_DEPTH} levels")
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(key, str):
            kind = _ONE_ID.get(key)
            if kind is not None and isinstance(item, str) and item:
                found[ObjectRef(kind, item)] = None
            kind = _MANY_IDS.get(key)
            if kind is not None:
                # A lone string where a list belongs is still an id: checking it costs nothing.
                for one in item if isinstance(item, list) else [item]:
                    if isinstance(one, str) and one:
                        found[ObjectRef(kind, one)] = None
        _walk(item, depth + 1, found)


_MARKERS = (
    b'_id"',  # the end of every single-id key: file_id, thread_id, previous_response_id, ...
    b'_ids"',  # the end of file_ids and vector_store_ids
    b'_file"',  # the end of training_file and validation_file
    b'"ft:',  # the start of a fine-tuned model id, the only id found in a value
    b"\\u",  # a \u escape can spell any of the above in disguise ("file\u005fid")
)
"""Byte strings one of which every body naming an object contains.

A key name or the ``ft:`` prefix can only be disguised by a ``\\u`` escape: the short escapes
(``\\n``, ``\\/`` ...) spell no letter, digit, ``_`` or ``:``. Bytes are only meaningful as
UTF-8 JSON, which is all that orjson parses.
"""


def may_refer(raw: bytes) -> bool:
    """False only when the raw JSON body certainly names no object, so it need not be walked.

    For every ``raw`` where ``body_object_ids(orjson.loads(raw))`` is non-empty this is True
    (a hypothesis test holds it to that); false positives merely cost a walk.
    """
    return _MARKER.search(raw) is not None


_MARKER = re.compile(b"|".join(re.escape(marker) for marker in _MARKERS))
"""Every marker in one pass over the body."""
_ID = re.compile(r"[A-Za-z0-9._:~-]{1,256}")


def created_objects(kind: ObjectKind, reply: object) -> list[tuple[ObjectRef, int]]:
    """The objects a successful create or retrieve reply on a ``kind`` collection shows, each
    with its ``created_at`` (0 when absent), for the caller to claim.

    The reply's own object comes first; after it come the objects it made along the way: an
    upload's ``file``, a batch's output and error files, a fine-tuning job's result files and
    fine-tuned model. Those carry the reply's ``created_at`` unless they show their own. Ids
    that are not 1 to 256 of ``[A-Za-z0-9._:~-]`` are skipped.
    """
    if not isinstance(reply, dict):
        return []
    created = _created_at(reply)
    found: list[tuple[ObjectRef, int]] = []

    def add(nested_kind: ObjectKind, object_id: object, created_at: int = created) -> None:
        if isinstance(object_id, str) and _ID.fullmatch(object_id):
            found.append((ObjectRef(nested_kind, object_id), created_at))

    add(kind, reply.get("id"))
    if kind == "upload":
        file = reply.get("file")
        if isinstance(file, dict):
            add("file", file.get("id"), _created_at(file) or created)
    elif kind == "batch":
        add("file", reply.get("output_file_id"))
        add("file", reply.get("error_file_id"))
    elif kind == "fine_tuning_job":
        results = reply.get("result_files")
        for result in results if isinstance(results, list) else ():
            add("file", result)
        model = reply.get("fine_tuned_model")
        if isinstance(model, str) and model.startswith("ft:"):
            add("model", model)
    return found


def _created_at(reply: dict[object, object]) -> int:
    value = reply.get("created_at")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
