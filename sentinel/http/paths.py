"""Canonical request targets: the only paths and queries Sentinel lets reach a handler.

A canonical path is ``/`` followed by segments of ``[A-Za-z0-9._~-]`` joined by single
slashes: no empty segment (``//``, a trailing slash), no ``.`` or ``..`` segment, no ``;``
parameters and no percent-encoding at all (a canonical spelling never encodes an unreserved
character, and an encoded ``/ . ? #`` is how traversal hides). The check runs on the raw
target as it came off the wire, so what a handler matched and what the upstream receives are
the same bytes; anything else is a 404 before any handler runs. A query may hold only the
characters RFC 3986 allows there, with well-formed percent escapes.
"""

from __future__ import annotations

import re

__all__ = ["is_canonical"]

# Each segment holds at least one character that is not a dot.
_PATH = re.compile(rb"(?:/\.*[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+")
_QUERY = re.compile(rb"(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*")


def is_canonical(raw_path: bytes, query: bytes) -> bool:
    """Whether a request target (raw path and query, as received) is canonical."""
    return _PATH.fullmatch(raw_path) is not None and (
        not query or _QUERY.fullmatch(query) is not None
    )
