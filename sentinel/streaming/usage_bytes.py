"""What a chunk's raw bytes say about usage, read without decoding its JSON.

The stream accumulator decodes a chat or completions chunk only when it may carry a usage that
is not null; these scans decide that with a few C-level byte searches. A JSON key is written
``"usage"`` (a quote cannot occur unescaped inside a string) unless some of its letters are
``\\u`` escapes, which both scans treat as "maybe".
"""

from __future__ import annotations

import re

__all__ = ["first_usage_or_done", "may_carry_usage"]


def first_usage_or_done(chunk: bytes, escaped: bool) -> int:
    """Where in ``chunk``, a chunk of whole events, the first thing worth reading at once is: a
    ``"usage"`` key that is not null, or the end of the stream; 0 when escaped keys may hide a
    usage anywhere; ``len(chunk)`` when there is neither.

    No event that ends before it carries a usage. The end of the stream is the chunk's last
    event when that is ``[DONE]`` (found without a search: a ``[DONE]`` before it can only
    repeat it), else the first ``[DONE]``.
    """
    if escaped and b"\\u00" in chunk:
        return 0
    if chunk.endswith(_DONE_EVENT) and (len(chunk) == len(_DONE_EVENT) or chunk.endswith(_AFTER)):
        first = len(chunk) - len(_DONE_EVENT)
    else:
        first = chunk.find(b"[DONE]")
        if first < 0:
            first = len(chunk)
    usage = _NOT_NULL_USAGE.search(chunk, 0, first)
    return first if usage is None else usage.start()


def may_carry_usage(data: bytes) -> bool:
    """False only when the JSON in ``data`` cannot have a top-level ``usage`` that is not null.

    A key is written ``"usage"`` (quotes cannot occur unescaped inside a string), unless some of
    its letters are ``\\u`` escapes. Most chunks have no such key, or one null ``usage`` last.
    """
    if _NOT_NULL_USAGE.search(data) is not None:
        return True
    # Escaped letters are rare: look for them only past a backslash.
    return data.find(b"\\") >= 0 and (b"\\u006" in data or b"\\u007" in data)


_DONE_EVENT = b"data: [DONE]\n\n"
_AFTER = b"\n\n" + _DONE_EVENT  # the same, as an event of its own after another
_NOT_NULL_USAGE = re.compile(rb'"usage"(?!: ?null)')
"""A ``"usage"`` key (or text) not followed by a null value; one C-level scan finds the first."""
