"""An incremental Server-Sent Events framer, on bytes, following the WHATWG line rules.

The relay hands it every upstream chunk as it arrives; a chunk may end anywhere (mid-line,
mid-UTF-8 character, between the CR and LF of a CRLF). It returns each event once its blank
line has arrived, with the event's exact bytes, so the caller can forward, drop or inspect
events without ever re-encoding them: the ``raw`` of all returned events followed by
``tail()`` is always exactly what was fed.

Lines end in LF, CRLF or CR, mixed freely. A CR at the very end of what has arrived is left
unparsed until the next byte (or ``close()``) shows whether an LF follows, so the result never
depends on where a chunk was split. Nothing is decoded except the event name; a leading UTF-8
BOM is skipped, comments and unknown fields stay in ``raw`` only.

Cost is linear in the bytes fed: a chunk of complete events is parsed in place with
``bytes.find`` (events that are one ``data:`` line each, as LLM streams send, by a shorter
path), and an event that arrives in pieces is buffered and scanned only once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SSEEvent", "SSEParser"]

_BOM = b"\xef\xbb\xbf"
_EOL = re.compile(rb"[\r\n]")
_LF, _CR = 10, 13


@dataclass(slots=True)
class SSEEvent:
    """One event: its exact bytes, its ``event:`` name and its joined ``data:`` lines.

    An event with no data lines (comments, a lone ``id:``, a stray blank line) is still
    returned, with ``has_data`` False, so that its bytes can be forwarded.
    """

    raw: bytes  # the exact bytes of the event, its terminating blank line included
    event: str | None = None  # the last ``event:`` value; None when absent or empty
    data: bytes = b""  # the ``data:`` values joined with b"\n"
    has_data: bool = False  # at least one ``data`` line (possibly empty) was present


class SSEParser:
    """Frames a byte stream into ``SSEEvent``s; one per stream, not thread-safe by itself."""

    __slots__ = ("_buf", "_cr", "_event", "_fresh", "_line", "_parts", "_scan")

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._buf = bytearray()  # bytes of the event in progress: nothing here is returned yet
        self._line = 0  # where the current, unterminated line starts in _buf
        self._scan = 0  # where the search for its end resumes (bytes before hold no EOL)
        self._event: bytes | None = None
        self._parts: list[bytes | bytearray] = []
        self._cr = False  # a CR has been seen: lines may end in CR or CRLF from now on
        self._fresh = True  # the first line is still to come (it may open with a BOM)

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Take the next chunk; return the events it completed, in order."""
        if not chunk:
            return []
        if not self._cr and _CR in chunk:
            self._cr = True
        buf = self._buf
        if not buf:
            # The common case: parse the chunk in place and copy only an unfinished tail.
            events, start = ([], 0) if self._cr else _data_events(chunk)
            if start:
                self._fresh = False
            if start < len(chunk):
                more, start = self._parse(chunk, eof=False, begin=start)
                events += more
                if start < len(chunk):
                    self._buf = bytearray(memoryview(chunk)[start:])
            return events
        buf += chunk
        events, start = self._parse(buf, eof=False)
        if start:
            del buf[:start]
        return events

    def ends_events(self, chunk: bytes) -> bool:
        """Whether ``chunk`` is whole events that parse the same on their own, later: nothing is
        buffered, no CR has been or is in it (lines end in LF only), and it ends in a blank line.

        This is how LLM streams arrive, and it lets the caller keep such a chunk, or its first
        events up to an LF LF, as bytes (``pass_whole``) and frame them only if they are ever
        read (``SSEParser.events_of``), instead of framing them now. One C-level search (for a
        CR) decides it.
        """
        return not self._buf and not self._cr and chunk.endswith(b"\n\n") and _CR not in chunk

    def pass_whole(self, events: bytes) -> bool:
        """The caller took ``events`` (whole events, or the first of a chunk ``ends_events``
        accepted, up to an LF LF) without feeding them; return whether they open the stream,
        for ``events_of``."""
        opening = self._fresh
        if events:
            self._fresh = False
        return opening

    @staticmethod
    def events_of(events: bytes, opening: bool) -> list[SSEEvent]:
        """Frame whole events that ``pass_whole`` let through, as feeding them would have
        (``opening``: they began the stream, so a leading BOM is skipped)."""
        parser = SSEParser()
        parser._fresh = opening
        return parser.feed(events)

    @property
    def buffered(self) -> int:
        """How many bytes of an incomplete event are buffered (``len(self.tail())``)."""
        return len(self._buf)

    def tail(self) -> bytes:
        """The bytes of the incomplete event still buffered (b"" when none)."""
        return bytes(self._buf)

    def close(self) -> SSEEvent | None:
        """End of stream: the buffered incomplete event, its last line taken as ended, or None.

        A browser would discard such an event; the caller may still forward its bytes or read
        it (an upstream that ends with ``data: [DONE]`` and no blank line). The parser is left
        empty, ready for a new stream.
        """
        buf = self._buf
        if not buf:
            self._reset()
            return None
        events, start = self._parse(buf, eof=True)
        last = events[-1] if events else None  # only a pending CR can complete one here
        if start < len(buf):
            line = buf[start + self._line :]
            if self._fresh and line.startswith(_BOM):
                line = line[len(_BOM) :]
            field, value = _field(line) if line else (None, b"")
            if field == b"data":
                self._parts.append(value)
            elif field == b"event":
                self._event = bytes(value)
            name, parts = self._event, self._parts
            last = SSEEvent(
                bytes(buf[start:]),
                name.decode("utf-8", "replace") if name else None,
                b"\n".join(parts) if parts else b"",
                bool(parts),
            )
        self._reset()
        return last

    def _parse(
        self, buf: bytes | bytearray, *, eof: bool, begin: int = 0
    ) -> tuple[list[SSEEvent], int]:
        """Parse every terminated line in ``buf`` from ``begin`` on; return the completed events
        and where the first unreturned byte is. ``_line`` and ``_scan`` are relative to it."""
        events: list[SSEEvent] = []
        start = begin  # first byte of the event in progress
        line, scan, end = self._line + begin, self._scan + begin, len(buf)
        parts, name, fresh, cr = self._parts, self._event, self._fresh, self._cr
        find = buf.find
        while True:
            if cr:
                eol, nxt = _line_end(buf, scan, eof=eof)
                if eol < 0:
                    scan = nxt
                    break
            else:
                eol = find(b"\n", scan)
                if eol < 0:
                    scan = end
                    break
                nxt = eol + 1
            if fresh:
                fresh = False
                if buf.startswith(_BOM, line, eol):
                    line += len(_BOM)
            if eol == line:  # a blank line ends the event
                raw = buf[start:nxt]
                events.append(
                    SSEEvent(
                        raw if type(raw) is bytes else bytes(raw),
                        name.decode("utf-8", "replace") if name else None,
                        # bytes.join returns a lone bytes item itself, without copying.
                        b"\n".join(parts) if parts else b"",
                        bool(parts),
                    )
                )
                parts, name, start = [], None, nxt
            elif buf[line : line + 6] == b"data: ":  # the usual line: one slice, no more
                parts.append(buf[line + 6 : eol])
            else:
                field, value = _field(buf[line:eol])
                if field == b"data":
                    parts.append(value)
                elif field == b"event":
                    name = bytes(value)
            line = scan = nxt
            if nxt == end:
                break
        self._parts, self._event, self._fresh = parts, name, fresh
        self._line = line - start
        self._scan = scan - start
        return events, start


def _data_events(chunk: bytes) -> tuple[list[SSEEvent], int]:
    """The events at the start of ``chunk`` that are each one ``data: `` line ending in LF and a
    blank line (nearly every event of an LLM stream), and where the first other byte is.

    Only for a parser at an event boundary that has seen no CR, where these bytes parse the
    same as they would line by line.
    """
    events: list[SSEEvent] = []
    start, end = 0, len(chunk)
    find, startswith = chunk.find, chunk.startswith
    while startswith(b"data: ", start):
        eol = find(b"\n", start + 6)
        nxt = eol + 2
        if eol < 0 or nxt > end or chunk[eol + 1] != _LF:
            break
        events.append(SSEEvent(chunk[start:nxt], None, chunk[start + 6 : eol], True))
        start = nxt
    return events, start


def _field(line: bytes | bytearray) -> tuple[bytes | bytearray | None, bytes | bytearray]:
    """A non-blank line's field name (None for a comment) and value, one leading space removed."""
    colon = line.find(b":")
    if colon == 0:
        return None, b""
    if colon < 0:
        return line, b""
    value = line[colon + 1 :]
    return line[:colon], value[1:] if value.startswith(b" ") else value


def _line_end(buf: bytes | bytearray, scan: int, *, eof: bool) -> tuple[int, int]:
    """Where the line being scanned ends and the next begins, with CR, LF or CRLF endings;
    (-1, where to resume) when its end has not arrived."""
    match = _EOL.search(buf, scan)
    if match is None:
        return -1, len(buf)
    eol = match.start()
    if buf[eol] == _LF:
        return eol, eol + 1
    if eol + 1 < len(buf):
        return eol, eol + 2 if buf[eol + 1] == _LF else eol + 1
    # A CR as the last byte so far: it may be half of a CRLF, so wait for the next byte.
    return (eol, eol + 1) if eof else (-1, eol)
