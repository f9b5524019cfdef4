"""The pass-through endpoint families: which ``/v1`` paths Sentinel forwards, with which methods.

The pass-through is an allow-list. A path is forwarded only when it matches a route of a
family that ``[passthrough.<family>]`` (or the defaults) enables, with one of that family's
enabled methods; any other path is a 404 ``unknown_url``, and a family that is not enabled a
404 ``endpoint_not_enabled``. Families that spend tokens the reply may not report (images,
audio, batches) are refused to keys with token limits unless the key names them in its own
``passthrough`` list. Never forwarded, whatever the config: ``/v1/organization/*`` (the
provider account's administration), realtime sessions and client secrets.

Routes are tuples of path segments after ``v1``; ``*`` stands for one segment (an object id)
and ``**`` for one or more.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_FAMILIES",
    "FAMILIES",
    "SPENDING_FAMILIES",
    "Family",
    "RouteMatch",
    "match_route",
]


@dataclass(frozen=True, slots=True)
class Family:
    """One family of pass-through endpoints and the methods each of its routes accepts."""

    name: str
    routes: tuple[tuple[tuple[str, ...], frozenset[str]], ...]
    spends_tokens: bool = False

    @property
    def methods(self) -> frozenset[str]:
        """Every method some route of this family accepts."""
        return frozenset().union(*(methods for _, methods in self.routes))


def _m(*methods: str) -> frozenset[str]:
    return frozenset(methods)


_GET, _POST, _DELETE = _m("GET"), _m("POST"), _m("DELETE")
_GET_DELETE, _GET_POST = _m("GET", "DELETE"), _m("GET", "POST")
_ALL = _m("GET", "POST", "DELETE")

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("models", ((("models", "*"), _GET_DELETE),)),
        Family("moderations", ((("moderations",), _POST),)),
        Family(
            "files",
            (
                (("files",), _GET_POST),
                (("files", "*"), _GET_DELETE),
                (("files", "*", "content"), _GET),
            ),
        ),
        Family(
            "uploads",
            (
                (("uploads",), _POST),
                (("uploads", "*", "parts"), _POST),
                (("uploads", "*", "complete"), _POST),
                (("uploads", "*", "cancel"), _POST),
            ),
        ),
        Family(
            "batches",
            (
                (("batches",), _GET_POST),
                (("batches", "*"), _GET),
                (("batches", "*", "cancel"), _POST),
            ),
            spends_tokens=True,
        ),
        Family(
            "images",
            tuple((("images", op), _POST) for op in ("generations", "edits", "variations")),
            spends_tokens=True,
        ),
        Family(
            "audio",
            tuple((("audio", op), _POST) for op in ("speech", "transcriptions", "translations")),
            spends_tokens=True,
        ),
        Family(
            "responses",
            (
                (("responses", "*"), _GET_DELETE),
                (("responses", "*", "input_items"), _GET),
                (("responses", "*", "cancel"), _POST),
            ),
        ),
        Family(
            "chat_completions",
            (
                (("chat", "completions"), _GET),
                (("chat", "completions", "*"), _ALL),
                (("chat", "completions", "*", "messages"), _GET),
            ),
        ),
        Family("vector_stores", ((("vector_stores",), _GET_POST), (("vector_stores", "**"), _ALL))),
        Family("assistants", ((("assistants",), _GET_POST), (("assistants", "*"), _ALL))),
        Family("threads", ((("threads",), _POST), (("threads", "**"), _ALL)), spends_tokens=True),
        Family(
            "fine_tuning",
            ((("fine_tuning", "jobs"), _GET_POST), (("fine_tuning", "jobs", "**"), _GET_POST)),
            spends_tokens=True,
        ),
    )
}
"""Every family Sentinel knows how to forward."""

DEFAULT_FAMILIES = (
    "models",
    "moderations",
    "files",
    "uploads",
    "batches",
    "images",
    "audio",
    "responses",
)
"""Enabled, with all their methods, when ``[passthrough]`` does not say otherwise."""

SPENDING_FAMILIES = frozenset(f.name for f in FAMILIES.values() if f.spends_tokens) | {"background"}
"""Names a key may list in ``passthrough``: ``background`` is a Responses run with
``background: true``, whose tokens are spent after the answer."""

_NEVER = (("organization",), ("realtime",))


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """The family a path belongs to and the methods its route accepts."""

    family: Family
    methods: frozenset[str]


def match_route(segments: tuple[str, ...]) -> RouteMatch | None:
    """The family route ``segments`` (after ``v1``) match, or None for any other path."""
    if any(segments[: len(prefix)] == prefix for prefix in _NEVER):
        return None
    for family in FAMILIES.values():
        for pattern, methods in family.routes:
            if _matches(pattern, segments):
                return RouteMatch(family, methods)
    return None


def _matches(pattern: tuple[str, ...], segments: tuple[str, ...]) -> bool:
    if pattern and pattern[-1] == "**":
        head = pattern[:-1]
        return len(segments) > len(head) and _matches(head, segments[: len(head)])
    if len(pattern) != len(segments):
        return False
    return all(p == "*" or p == s for p, s in zip(pattern, segments, strict=True))
