"""The stream hold-back: only what could still be part of a match, and the very same output."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.config.patterns import match_lengths
from sentinel.guardrails import Blocked, Entry, Screen, TextScreen
from sentinel.guardrails.pii import DETECTORS


def entry(name: str, pattern: str, action: str = "redact") -> Entry:
    return Entry(name, pattern, action, "response", match_lengths(pattern)[1])  # type: ignore[arg-type]


RULES = [
    entry("code", r"Falcon-\d{1,4}"),
    entry("host", r"(?i)\bcorp\.internal\b"),
    entry("ticket", r"\b(?:INC|REQ)-\d{3,6}\b"),
    entry("greek", r"\p{Greek}{2,5}"),
    entry("tail", r"done\.$"),
    entry("head", r"^Note:"),
    entry("quoted", r"\Q[x]\E{1,3}"),
    entry("caps", r"(?:[A-Z]{2,3} ?){2,4}\b"),
    entry("seen", r"secret", "flag"),
    entry("stop", r"launch codes?", "block"),
]
DETECTED = [
    Entry(name, d.pattern, "redact", "response", match_lengths(d.pattern)[1], d.validator)
    for name, d in DETECTORS.items()
]
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow" + "A" * 40 + "\n-----END RSA PRIVATE KEY-----"
FRAGMENTS = [
    # detectors, each with near misses
    *("ann.lee+x@mail.example.co.uk", "a@b.c", "user@localhost", "bo-b@ex-ample.com", "@ex.org"),
    *("+1 415-555-0199", "(415) 555-0199", "+44 20 7946 0958", "5551234567", "2024-01-15"),
    *("4111 1111 1111 1111", "4111 1111 1111 1112", "378282246310005", "5500-0000-0000-0004"),
    *("GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "GB82 WEST 1234 5698 7654 33"),
    *("123-45-6789", "000-12-3456", "10.1.2.3", "999.1.2.3", "2001:db8::8a2e:370:7334"),
    *("fe80::1", "std::vector", "12:30:45", "sk-proj-" + "a1" * 12, "sk-short", "ghp_short"),
    *("AKIAIOSFODNN7EXAMPLE", "ghp_" + "x" * 36, "github_pat_" + "a" * 22, "xoxb-1234567890-ab"),
    *(
        PEM,
        PEM[:60],
        PEM.replace("\nMII", "\nProc-Type: 4,ENCRYPTED\nMII"),
        "-----BEGIN PUBLIC KEY-----",
    ),
    # user rules
    *("Falcon-12", "Falcon-12345", "corp.internal", "CORP.Internal.x", "INC-1234", "REQ-12"),
    *("αβγδεζ", "done.", "Note:", "[x]]]]", "AB CD EF", "secret", "launch code"),
    # prose
    *("the", "quick", "Hi", "and", "a", "42", "x", "é", "😀"),
]
SCREEN = Screen([*RULES, *DETECTED])
EACH = [Screen([detected]) for detected in DETECTED]
SEPARATORS = [" ", "", "\n", ", ", ".", "-", "@", ":", " (", "\r\n"]


@st.composite
def near_matches(draw: st.DrawFn) -> str:
    """Prose mixed with matches of every rule and detector, near misses and cut-off ones."""
    parts: list[str] = []
    for _ in range(draw(st.integers(min_value=0, max_value=12))):
        fragment = draw(st.sampled_from(FRAGMENTS))
        if draw(st.booleans()):
            fragment = fragment[: draw(st.integers(min_value=1, max_value=len(fragment)))]
        parts.append(fragment + draw(st.sampled_from(SEPARATORS)))
    return "".join(parts)


def relayed(
    screen: Screen, text: str, cuts: list[int]
) -> tuple[str, dict[tuple[str, str, str], int]]:
    """``text`` fed to a stream screen cut at ``cuts``: what it releases, and its hits."""
    hits: dict[tuple[str, str, str], int] = {}
    stream = TextScreen(screen, hits)
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    out = "".join(stream.feed(text[a:b]) for a, b in itertools.pairwise(bounds))
    return out + stream.finish(), hits


@settings(max_examples=400, deadline=None)
@given(near_matches(), st.lists(st.integers(min_value=0, max_value=600), max_size=12))
def test_stream_equals_whole_text_with_every_detector_and_rule(text: str, cuts: list[int]) -> None:
    """Cut anywhere, a stream screened by every detector (validators included) and user rules
    is redacted, flagged and blocked exactly as its joined text."""
    screen = SCREEN
    whole_hits: dict[tuple[str, str, str], int] = {}
    try:
        whole = screen.text(text, whole_hits)
    except Blocked as blocked:
        try:
            relayed(screen, text, cuts)
        except Blocked as also:
            assert also.rule == blocked.rule
        else:
            raise AssertionError("the stream was not blocked") from None
        return
    assert relayed(screen, text, cuts) == (whole, whole_hits)


@settings(max_examples=200, deadline=None)
@given(near_matches(), st.lists(st.integers(min_value=0, max_value=600), max_size=12))
def test_stream_equals_whole_text_with_each_detector(text: str, cuts: list[int]) -> None:
    """The same, one detector at a time: each one's own hold-back is enough."""
    for screen in EACH:
        assert relayed(screen, text, cuts)[0] == screen.text(text, {}), screen.entries[0].name


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="xyz é😀@.-:", max_size=30), max_size=10))
def test_hold_back_is_bounded_by_the_longest_match(pieces: list[str]) -> None:
    """However the text goes, never more than ``hold_back`` characters are held."""
    screen = Screen(DETECTED)
    stream = TextScreen(screen, {})
    fed = released = 0
    for piece in pieces:
        fed += len(piece)
        released += len(stream.feed(piece))
        assert fed - released <= screen.hold_back


def test_prose_is_held_back_by_its_last_word_at_most() -> None:
    """With every detector, prose is released but for the word that could begin a match."""
    stream = TextScreen(Screen(DETECTED), {})
    assert (
        stream.feed("Sure! Here is the summary you asked for")
        == "Sure! Here is the summary you asked "
    )
    assert stream.feed(". Done") == "for. "
    assert stream.feed(" ") == "Done "
    assert stream.finish() == ""


def test_private_key_is_held_until_it_cannot_go_on() -> None:
    """A key block is held from its BEGIN line until its END line completes it."""
    stream = TextScreen(Screen(DETECTED), {})
    assert stream.feed("key: -----BEGIN RSA PRIVATE") == "key: "
    assert stream.feed(" KEY-----\nMIIEow" + "A" * 500) == ""
    assert stream.feed("\n-----END RSA PRIVATE KEY-----") == "[REDACTED:api_key]"
    assert stream.feed("\nthanks") == "\n"
    assert stream.finish() == "thanks"


def test_an_assertion_at_the_end_waits_for_the_next_character() -> None:
    """After ``(415) `` the phone pattern's ``\\b`` is false, until a digit follows: held."""
    stream = TextScreen(Screen(DETECTED), {})
    assert stream.feed("call (415) ") == "call "
    assert stream.feed("555-0199 now") + stream.finish() == "[REDACTED:phone] now"
