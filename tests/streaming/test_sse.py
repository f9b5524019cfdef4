"""The SSE framer: WHATWG line rules on bytes, identical results however the stream is split."""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.streaming.sse import SSEEvent, SSEParser

RECORDED = Path(__file__).parent / "recorded"
STREAMS = sorted(p.name for p in RECORDED.glob("*.sse"))
ENDINGS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}

Framed = tuple[bytes, str | None, bytes, bool]
_EOL = re.compile(rb"\r\n|\r|\n")


def recorded(name: str, ending: str) -> bytes:
    """A recorded stream (stored with LF endings) rewritten to use ``ending``."""
    text = (RECORDED / name).read_bytes().replace(b"\r\n", b"\n")
    return text.replace(b"\n", ENDINGS[ending])


def reference(stream: bytes) -> list[Framed]:
    """A deliberately naive framer of a whole stream, to check the incremental one against."""
    events: list[Framed] = []
    start = pos = 0
    name: bytes = b""
    parts: list[bytes] = []

    def dispatch(end: int) -> None:
        nonlocal name, parts
        data = b"\n".join(parts)
        events.append(
            (stream[start:end], name.decode("utf-8", "replace") or None, data, bool(parts))
        )
        name, parts = b"", []

    while pos < len(stream):
        match = _EOL.search(stream, pos)
        eol, nxt = (match.start(), match.end()) if match else (len(stream), len(stream))
        line = stream[pos:eol]
        if pos == 0:
            line = line.removeprefix(b"\xef\xbb\xbf")
        field, _colon, value = line.partition(b":")
        value = value.removeprefix(b" ")
        if not line and match:
            dispatch(nxt)
            start = nxt
        elif field == b"data":
            parts.append(value)
        elif field == b"event":
            name = value
        pos = nxt
    if start < len(stream):
        dispatch(len(stream))
    return events


def framed(events: list[SSEEvent]) -> list[Framed]:
    return [(e.raw, e.event, e.data, e.has_data) for e in events]


def frame(chunks: list[bytes]) -> list[Framed]:
    """Feed ``chunks`` then close, checking after every feed that no byte is lost or repeated."""
    parser = SSEParser()
    events: list[SSEEvent] = []
    fed = b""
    for chunk in chunks:
        events += parser.feed(chunk)
        fed += chunk
        assert b"".join(e.raw for e in events) + parser.tail() == fed
    last = parser.close()
    if last is not None:
        events.append(last)
    assert b"".join(e.raw for e in events) == fed and parser.tail() == b""
    return framed(events)


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("name", STREAMS)
def test_recorded_stream_whole(name: str, ending: str) -> None:
    """A recorded stream fed in one chunk frames exactly as the reference framer does."""
    stream = recorded(name, ending)
    events = frame([stream])
    assert events == reference(stream)
    assert all(has_data for _, _, _, has_data in events)
    assert len(events) == stream.count(ENDINGS[ending] * 2)


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("name", STREAMS)
def test_recorded_stream_split_at_every_offset(name: str, ending: str) -> None:
    """Splitting a recorded stream in two at any byte gives the same events as feeding it whole."""
    stream = recorded(name, ending)
    expected = reference(stream)
    for i in range(len(stream) + 1):
        assert frame([stream[:i], stream[i:]]) == expected, f"split at {i}"


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("name", STREAMS)
def test_recorded_stream_byte_at_a_time(name: str, ending: str) -> None:
    """Feeding a recorded stream one byte at a time gives the same events as feeding it whole."""
    stream = recorded(name, ending)
    assert frame([stream[i : i + 1] for i in range(len(stream))]) == reference(stream)


def test_recorded_unicode_data_is_intact() -> None:
    """Multi-byte UTF-8 split mid-character is reassembled byte for byte in the event data."""
    stream = recorded("chat_unicode.sse", "lf")
    cut = stream.index("👋".encode()) + 2
    parser = SSEParser()
    events = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
    (event,) = [e for e in events if "👋".encode() in e.data]
    assert '" 👋🏽"'.encode() in event.data  # whole again, still valid UTF-8


def test_data_optional_space() -> None:
    """``data:`` loses exactly one leading space, and only a space."""
    events = SSEParser().feed(b"data:a\n\ndata: b\n\ndata:  c\n\ndata:\td\n\n")
    assert [e.data for e in events] == [b"a", b"b", b" c", b"\td"]


def test_data_lines_joined_with_lf() -> None:
    """Several data lines in one event are joined with a single LF."""
    (event,) = SSEParser().feed(b"data: one\r\ndata: two\rdata:three\n\n")
    assert event.data == b"one\ntwo\nthree"


def test_empty_data_line_counts_as_data() -> None:
    """A bare ``data`` or ``data:`` line makes an event with empty data."""
    events = SSEParser().feed(b"data:\n\ndata\n\n")
    assert [(e.data, e.has_data) for e in events] == [(b"", True), (b"", True)]


def test_comment_only_event_is_returned() -> None:
    """An event of comments only is returned without data, so its bytes can be forwarded."""
    events = SSEParser().feed(b": OPENROUTER PROCESSING\n\ndata: x\n\n")
    assert framed(events) == [
        (b": OPENROUTER PROCESSING\n\n", None, b"", False),
        (b"data: x\n\n", None, b"x", True),
    ]


def test_comments_and_unknown_fields_stay_out_of_data() -> None:
    """Comments, ``id``, ``retry`` and unknown fields are kept in raw but not in data."""
    raw = b": hi\nid: 7\nretry: 10\nfoo: bar\ndata: x\ndatum: y\n\n"
    (event,) = SSEParser().feed(raw)
    assert (event.raw, event.data) == (raw, b"x")


def test_event_name() -> None:
    """The last ``event:`` line names the event; an empty name means none."""
    events = SSEParser().feed(b"event: a\nevent: b\ndata: 1\n\nevent:\ndata: 2\n\nevent\n\n")
    assert [e.event for e in events] == ["b", None, None]


def test_event_name_decoded_with_replacement() -> None:
    """An event name that is not UTF-8 is decoded with replacement characters, never an error."""
    (event,) = SSEParser().feed(b"event: x\xff\xfe\ndata: 1\n\n")
    assert event.event == "x\ufffd\ufffd"


def test_leading_bom_is_skipped() -> None:
    """A UTF-8 BOM opening the stream is not part of the first field name, but stays in raw."""
    parser = SSEParser()
    events = parser.feed(b"\xef\xbb") + parser.feed(b"\xbfdata: x\n\ndata: y\n\n")
    assert framed(events) == [
        (b"\xef\xbb\xbfdata: x\n\n", None, b"x", True),
        (b"data: y\n\n", None, b"y", True),
    ]


def test_bom_later_in_stream_is_not_skipped() -> None:
    """Only the stream's very first bytes may be a BOM; later ones make an unknown field."""
    events = SSEParser().feed(b"data: x\n\n\xef\xbb\xbfdata: y\n\n")
    assert [e.has_data for e in events] == [True, False]


def test_crlf_split_between_cr_and_lf() -> None:
    """A CRLF split across chunks is one line end, not a line end and a blank line."""
    parser = SSEParser()
    first = parser.feed(b"data: a\r")
    rest = parser.feed(b"\ndata: b\r\n\r\n")
    assert first == [] and framed(rest) == [(b"data: a\r\ndata: b\r\n\r\n", None, b"a\nb", True)]


def test_trailing_cr_waits_for_next_byte() -> None:
    """An event ended by a CR at the end of a chunk is returned only once the next byte is known."""
    parser = SSEParser()
    assert parser.feed(b"data: a\r\r") == []
    assert parser.tail() == b"data: a\r\r"
    assert framed(parser.feed(b"data: b\r\r")) == [(b"data: a\r\r", None, b"a", True)]


def test_trailing_cr_ends_the_event_at_close() -> None:
    """At end of stream a pending CR is a line end, completing the event it closes."""
    parser = SSEParser()
    parser.feed(b"data: a\r\r")
    last = parser.close()
    assert last is not None and framed([last]) == [(b"data: a\r\r", None, b"a", True)]


def test_incomplete_event_stays_in_tail() -> None:
    """A ``data: [DONE]`` with no blank line after it is not returned by feed; it is the tail."""
    parser = SSEParser()
    assert parser.feed(b"data: x\n\ndata: [DONE]\n")[0].data == b"x"
    assert parser.tail() == b"data: [DONE]\n"


def test_close_returns_unterminated_event() -> None:
    """At end of stream the unterminated last event is returned with its last line read."""
    parser = SSEParser()
    parser.feed(b"event: e\ndata: [DONE]")
    last = parser.close()
    assert last is not None
    assert framed([last]) == [(b"event: e\ndata: [DONE]", "e", b"[DONE]", True)]
    assert parser.tail() == b""


def test_close_with_nothing_buffered() -> None:
    """Closing when every event is complete returns None."""
    parser = SSEParser()
    parser.feed(b"data: x\n\n")
    assert parser.close() is None


def test_stray_blank_lines_are_empty_events() -> None:
    """Blank lines outside an event come back as empty events, so no byte goes missing."""
    events = SSEParser().feed(b"\n\r\ndata: x\n\n\n")
    assert framed(events) == [
        (b"\n", None, b"", False),
        (b"\r\n", None, b"", False),
        (b"data: x\n\n", None, b"x", True),
        (b"\n", None, b"", False),
    ]


def test_empty_chunk_is_harmless() -> None:
    """Feeding b"" returns nothing and changes nothing."""
    parser = SSEParser()
    parser.feed(b"data: x\r")
    assert parser.feed(b"") == [] and parser.tail() == b"data: x\r"


def test_whole_chunk_event_is_not_copied() -> None:
    """A chunk that is exactly one event comes back as the very same bytes object."""
    chunk = b'data: {"a":1}\n\n'
    (event,) = SSEParser().feed(chunk)
    assert event.raw is chunk


def test_event_in_small_pieces_is_linear() -> None:
    """A 4 MB event arriving in 64-byte pieces is scanned once, not once per piece."""
    stream = b"data: " + b"x" * (4 << 20) + b"\r\n\r\n"
    parser = SSEParser()
    began = time.perf_counter()
    events = [e for i in range(0, len(stream), 64) for e in parser.feed(stream[i : i + 64])]
    assert time.perf_counter() - began < 5  # quadratic re-scanning takes hours
    assert len(events) == 1 and len(events[0].data) == 4 << 20


def test_many_lines_in_one_chunk_are_linear() -> None:
    """A chunk of 100,000 CR-ended lines is parsed without re-scanning the rest for each line."""
    stream = b"data: x\r" * 100_000 + b"\r"
    began = time.perf_counter()
    (event,) = SSEParser().feed(stream + b"\n")
    assert time.perf_counter() - began < 5
    assert event.data == b"\n".join([b"x"] * 100_000)


# Random streams: lines of every kind, each with any line ending, split anywhere.
_TEXT = st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_LINES = st.one_of(
    _TEXT.map(lambda v: b"data:" + v),
    _TEXT.map(lambda v: b"data: " + v),
    st.just(b"data"),
    _TEXT.map(lambda v: b":" + v),
    _TEXT.map(lambda v: b"event: " + v),
    st.sampled_from([b"id: 1", b"retry: 5", b"event", b"foo", b"data :x", b"\xef\xbb\xbfdata: x"]),
    _TEXT,
)
_ENDING = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """A random stream: random events, random line endings, sometimes a BOM or a cut-off end."""
    out = [draw(st.sampled_from([b"", b"\xef\xbb\xbf"]))]
    for _ in range(draw(st.integers(0, 6))):
        for line in draw(st.lists(_LINES, max_size=4)):
            out.append(line + draw(_ENDING))
        out.append(draw(_ENDING))
    out.append(draw(st.lists(_LINES, max_size=2).map(b"\n".join)))
    return b"".join(out)


@st.composite
def chunkings(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A random stream and a random way of cutting it into chunks."""
    stream = draw(streams())
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    bounds = [0, *cuts, len(stream)]
    return stream, [stream[a:b] for a, b in itertools.pairwise(bounds)]


@given(chunkings())
def test_random_streams_match_reference(case: tuple[bytes, list[bytes]]) -> None:
    """Any stream, cut anywhere, frames exactly as the reference framer frames it whole."""
    stream, chunks = case
    assert frame(chunks) == reference(stream)


@given(st.lists(st.binary(max_size=40), max_size=20))
def test_arbitrary_bytes_never_lose_a_byte(chunks: list[bytes]) -> None:
    """Whatever bytes arrive, returned raws plus the tail are exactly what was fed."""
    frame(chunks)


def take_whole(parser: SSEParser, chunk: bytes, cut: int | None = None) -> list[Framed] | None:
    """As the accumulator does: a chunk ``ends_events`` accepts is passed whole up to ``cut``
    (an LF LF of it; default all of it), framed later with ``events_of``, and the rest fed.
    None when it is declined."""
    if not parser.ends_events(chunk):
        return None
    cut = len(chunk) if cut is None else cut
    kept = chunk[:cut]
    opening = parser.pass_whole(kept)
    return framed(SSEParser.events_of(kept, opening)) + framed(parser.feed(chunk[cut:]))


def frame_whole(chunks: list[bytes], cuts: list[int] | None = None) -> tuple[list[Framed], int]:
    """Frame as the accumulator does: chunks of whole events passed, ``feed`` for a chunk
    declined; also return how many chunks were passed. ``cuts`` picks, for each chunk, which
    of its LF LF ends the part passed whole (by index, wrapping; default: all of it)."""
    parser = SSEParser()
    events: list[Framed] = []
    taken = 0
    for index, chunk in enumerate(chunks):
        cut = None
        if cuts:
            ends = [m.end() for m in re.finditer(b"\n\n", chunk)] or [len(chunk)]
            cut = ends[cuts[index % len(cuts)] % len(ends)]
        whole = take_whole(parser, chunk, cut)
        if whole is None:
            events += framed(parser.feed(chunk))
            continue
        taken += 1
        assert b"".join(raw for raw, *_ in whole) == chunk
        events += whole
    last = parser.close()
    return events + framed([last] if last is not None else []), taken


def test_whole_events_are_framed_later_as_now() -> None:
    """A chunk of whole events is accepted; framed later it gives what feeding it gives."""
    chunk = b'data: {"a":1}\n\n: ping\n\nevent: delta\ndata:  x\ndata: y\n\ndata: [DONE]\n\n'
    parser = SSEParser()
    assert take_whole(parser, chunk) == reference(chunk)
    assert parser.tail() == b""


def test_a_leading_bom_is_skipped_only_at_the_start() -> None:
    """Passed whole at the start of a stream, a BOM is skipped; anywhere later it is not."""
    chunk = b"\xef\xbb\xbfdata: x\n\n"
    assert frame_whole([chunk])[0] == reference(chunk)
    assert frame_whole([chunk, chunk])[0] == reference(chunk + chunk)
    assert frame_whole([chunk, chunk], cuts=[0])[0] == reference(chunk + chunk)


@pytest.mark.parametrize(
    "chunk",
    [
        b"data: x\n\ndata: y",  # the last event is incomplete
        b"data: x\n",
        b"data: x\r\n\r\n",
        b"data: x\n\r\n",
        b"data: x\n\n\r",
        b"",
    ],
)
def test_anything_but_whole_lf_events_is_declined(chunk: bytes) -> None:
    """Any other chunk is declined untouched, and ``feed`` then frames it as usual."""
    parser = SSEParser()
    assert take_whole(parser, chunk) is None
    assert framed(parser.feed(chunk)) + framed([e for e in [parser.close()] if e]) == reference(
        chunk
    )


def test_whole_events_are_declined_while_an_event_is_buffered() -> None:
    """A chunk of whole events is declined while an earlier event is incomplete, or after a CR."""
    parser = SSEParser()
    parser.feed(b"data: x")
    assert take_whole(parser, b"data: y\n\n") is None
    parser = SSEParser()
    parser.feed(b"data: x\r\r")
    assert take_whole(parser, b"data: y\n\n") is None


@given(chunkings(), st.lists(st.integers(min_value=0, max_value=8), max_size=5))
def test_random_streams_passed_whole_match_reference(
    case: tuple[bytes, list[bytes]], cuts: list[int]
) -> None:
    """Passing whole chunks, whole or in part, where ``ends_events`` accepts them frames any
    stream as the reference does."""
    stream, chunks = case
    assert frame_whole(chunks, cuts)[0] == reference(stream)


_DATA_EVENT = _TEXT.map(lambda v: b"data: " + v + b"\n\n")


@given(st.lists(st.lists(_DATA_EVENT, max_size=4).map(b"".join), max_size=6))
def test_event_aligned_chunks_are_passed_whole(chunks: list[bytes]) -> None:
    """An LLM-like stream, chunked at event boundaries, is passed whole and framed correctly."""
    events, taken = frame_whole(chunks)
    assert events == reference(b"".join(chunks))
    assert taken == sum(1 for chunk in chunks if chunk)
