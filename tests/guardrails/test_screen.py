"""The pure screens: one-pass whole texts, streams cut anywhere, PII and its near misses."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.config.patterns import match_lengths
from sentinel.guardrails import Blocked, Entry, Screen, TextScreen
from sentinel.guardrails.pii import DETECTORS


def entry(name: str, pattern: str, action: str = "redact") -> Entry:
    return Entry(name, pattern, action, "response", match_lengths(pattern)[1])  # type: ignore[arg-type]


def pii(*names: str) -> Screen:
    found = []
    for name in names:
        d = DETECTORS[name]
        found.append(
            Entry(name, d.pattern, "redact", "request", match_lengths(d.pattern)[1], d.validator)
        )
    return Screen(found)


SCREEN = Screen(
    [
        entry("code", r"Falcon-\d{1,4}"),
        entry("word", r"\bfal\w{0,6}\b"),
        entry("aa", r"aa"),
        entry("start", r"^Hi"),
        entry("end", r"bye$"),
    ]
)


def test_whole_text_keeps_the_same_object_when_nothing_matches() -> None:
    """No match: the very string comes back, and nothing is counted."""
    text = "nothing to see here"
    hits: dict[tuple[str, str, str], int] = {}
    assert SCREEN.text(text, hits) is text and hits == {}


def test_matches_replaced_and_counted() -> None:
    """Leftmost match first, longest on a tie; hits count per rule."""
    hits: dict[tuple[str, str, str], int] = {}
    assert SCREEN.text("Hi Falcon-12 falls aaa bye", hits) == (
        "[REDACTED:start] [REDACTED:code] [REDACTED:word] [REDACTED:aa]a [REDACTED:end]"
    )
    assert hits[("aa", "redact", "response")] == 1


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet="Hi Falcon-0123 fal bye aé€😀\n", max_size=80),
    st.lists(st.integers(min_value=0, max_value=80), max_size=8),
)
def test_stream_equals_whole_text_however_it_is_cut(text: str, cuts: list[int]) -> None:
    """Fed in pieces cut anywhere, a stream is redacted exactly as its joined text."""
    whole = SCREEN.text(text, {})
    stream = TextScreen(SCREEN, {})
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    out = "".join(stream.feed(text[a:b]) for a, b in itertools.pairwise(bounds))
    assert out + stream.finish() == whole


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="xyz é😀", max_size=30), max_size=10))
def test_hold_back_is_bounded(pieces: list[str]) -> None:
    """Never more than ``hold_back`` characters of a stream are held."""
    stream = TextScreen(SCREEN, {})
    fed = released = 0
    for piece in pieces:
        fed += len(piece)
        released += len(stream.feed(piece))
        assert fed - released <= SCREEN.hold_back


def test_stream_holds_back_only_what_could_still_match() -> None:
    """Text no match can still reach is released at once; a possible beginning is held."""
    stream = TextScreen(SCREEN, {})
    assert stream.feed("x" * 100) == "x" * 100
    assert stream.feed(" then Falc") == " then "
    assert stream.feed("on-12") == ""
    assert stream.feed("34 and") == "[REDACTED:code] and"  # four digits: it cannot go on
    assert stream.feed(" bye") == " "  # bye$: only if nothing follows
    assert stream.finish() == "[REDACTED:end]"


def test_stream_holds_back_at_most_the_longest_match() -> None:
    """A run that could go on matching is held for no more than ``hold_back`` characters."""
    screen = Screen([entry("run", r"[a-z]{3,40}")])
    stream = TextScreen(screen, {})
    out = stream.feed("A" + "b" * 100)
    assert out == "A" + "[REDACTED:run]" * 2
    assert stream.finish() == "[REDACTED:run]"


def test_block_in_a_stream_fires_once_its_match_is_decided() -> None:
    """A block match split across pieces raises when it is complete."""
    screen = Screen([entry("stop", r"launch codes", "block")])
    stream = TextScreen(screen, {})
    stream.feed("the laun")
    with pytest.raises(Blocked) as raised:
        stream.feed("ch codes" + " " * 20)
    assert raised.value.rule == "stop"


def test_catastrophic_backtracking_pattern_is_linear() -> None:
    """``(a+)+$`` over 100 KB of 'a' then '!' (exponential for backtracking engines)."""
    screen = Screen([entry("redos", r"(a+)+$", "block")])
    text = "a" * 100_000 + "!"
    assert screen.text(text, {}) is text


@pytest.mark.parametrize(
    ("name", "found", "missed"),
    [
        ("email", ["ann.lee+x@mail.example.co.uk"], ["user@localhost", "a@b.c", "@example.com"]),
        (
            "credit_card",
            ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005"],
            ["4111 1111 1111 1112", "1234567812345678", "0000 0000 0000 0000"],
        ),
        (
            "iban",
            ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000"],
            ["GB82 WEST 1234 5698 7654 33"],
        ),
        ("us_ssn", ["123-45-6789"], ["000-12-3456", "666-12-3456", "123-00-6789", "123456789"]),
        (
            "phone",
            ["+1 415-555-0199", "(415) 555-0199", "+44 20 7946 0958"],
            ["5551234567", "2024-01-15"],
        ),
        (
            "ip_address",
            ["10.1.2.3", "2001:db8::8a2e:370:7334", "fe80::1"],
            ["999.1.2.3", "std::vector", "12:30:45"],
        ),
        (
            "api_key",
            [
                "sk-proj-" + "a1" * 12,
                "AKIAIOSFODNN7EXAMPLE",
                "ghp_" + "x" * 36,
                "xoxb-1234567890-abcdef",
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEow"
                + "A" * 64
                + "\n-----END RSA PRIVATE KEY-----",
            ],
            ["sk-short", "AKIA123", "ghp_short", "-----BEGIN PUBLIC KEY-----"],
        ),
    ],
)
def test_pii_detectors(name: str, found: list[str], missed: list[str]) -> None:
    """Each detector finds its kind and lets its near misses through."""
    screen = pii(name)
    for text in found:
        assert screen.text(f"see {text} now", {}) == f"see [REDACTED:{name}] now", text
    for text in missed:
        assert screen.text(f"see {text} now", {}) == f"see {text} now", text
