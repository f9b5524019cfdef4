"""Tests for ``read_answer``: what each answer of the identity service means."""

from __future__ import annotations

import orjson

from sentinel.identity.lookup import MAX_BACKOFF_MS, Failed, Found, Unknown, read_answer


def test_200_with_principal_fields_is_found() -> None:
    """The principal's fields are read with the shared reader."""
    answer = read_answer(200, orjson.dumps({"name": "alice", "team": "ml", "rpm": 5}))
    assert isinstance(answer, Found)
    assert answer.fields.name == "alice"
    assert answer.fields.team == "ml"
    assert answer.fields.limits["rpm"] == 5


def test_admin_and_other_extra_fields_are_ignored_and_named() -> None:
    """``admin`` never comes from the service; unknown fields are dropped, not obeyed."""
    body = {"name": "alice", "admin": True, "email": "a@example.com"}
    answer = read_answer(200, orjson.dumps(body))
    assert isinstance(answer, Found)
    assert answer.ignored == ("admin", "email")


def test_404_is_unknown() -> None:
    """Only a 404 says the key does not exist."""
    assert read_answer(404, b"") == Unknown()


def test_other_statuses_are_failures_never_unknown() -> None:
    """401, 403, 500, 502 ... are the service's trouble: no answer about the key."""
    for status in (400, 401, 403, 408, 500, 502, 503):
        assert isinstance(read_answer(status, b""), Failed)


def test_bad_bodies_are_failures() -> None:
    """Not JSON, not an object, no name, a bad limit: the answer is not used."""
    for body in (b"nope", b"[]", b"{}", orjson.dumps({"name": "a", "rpm": -1})):
        assert isinstance(read_answer(200, body), Failed), body


def test_429_backs_off_for_retry_after() -> None:
    """Retry-After in seconds becomes the back-off; absent or garbage, one second."""
    assert read_answer(429, b"", "7") == Failed("HTTP 429", backoff_ms=7_000)
    assert read_answer(429, b"", None) == Failed("HTTP 429", backoff_ms=1_000)
    assert read_answer(429, b"", "soon") == Failed("HTTP 429", backoff_ms=1_000)
    assert read_answer(429, b"", "99999999") == Failed("HTTP 429", backoff_ms=MAX_BACKOFF_MS)
