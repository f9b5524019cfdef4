"""Screening text against a group of rules: one RE2 set pass, then only the rules that matched.

A ``Screen`` holds the compiled patterns of the rules that apply to one kind of text (one
role, one direction, one scope). ``Screen.text`` screens a whole text: an ``re2.Set`` over the
UTF-8 bytes says which rules match anywhere (the usual answer, "none", costs that one linear
pass); a matching ``block`` rule raises ``Blocked``, a ``flag`` rule is noted, and the matches
of the ``redact`` rules are replaced left to right.

Which matches are replaced is defined so that it does not depend on how the text is cut: from
the current position, the match that starts first among all redact rules (the longest on a tie,
then the first rule) is taken, and the search goes on after its end. ``TextScreen`` runs the
same definition on a stream of pieces, releasing text only where no undecided match can start.
A match starting at some point is decided once no match of any rule from there can reach the
end of what has arrived: then all the text it spans (and the one character after it that
``$`` or ``\\b`` look at) is known, whatever comes next. ``Screen.undecided_start`` finds the
earliest point that is not, by matching the end of the text against each rule's prefix pattern
(``sentinel.config.patterns.prefix_pattern``: what a match can begin with and still go on),
never further back than ``hold_back``, the longest match of any rule. A cut keeps one character
of context before it for ``^`` and ``\\b``. So a stream, however it is chunked, is redacted
exactly as its joined text would be, holding back at most ``hold_back`` characters and only
the trailing run that could still be part of a match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import re2

from sentinel.config.patterns import prefix_pattern

__all__ = ["Blocked", "Entry", "Hits", "Screen", "TextScreen"]

Action = Literal["block", "redact", "flag"]
Hits = dict[tuple[str, str, str], int]
"""Matches per (rule, action, direction), for the metrics and the log line: never the text."""

_SET_MAX_MEM = 64 << 20  # a set never falls back to the NFA: give its DFA room


class Blocked(Exception):
    """A ``block`` rule matched; ``rule`` is its name."""

    def __init__(self, rule: str) -> None:
        super().__init__(rule)
        self.rule = rule


@dataclass(frozen=True, slots=True)
class Entry:
    """One rule or PII detector as the screens run it."""

    name: str
    pattern: str
    action: Action
    direction: str
    max_length: int  # characters
    validator: Callable[[bytes], bool] | None = None

    @property
    def placeholder(self) -> bytes:
        return f"[REDACTED:{self.name}]".encode()


def _options(max_mem: int | None = None) -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    if max_mem is not None:
        options.max_mem = max_mem
    return options


class Screen:
    """The compiled rules for one kind of text; immutable, shared by every request."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.entries = tuple(entries)
        self.hold_back = max((e.max_length for e in self.entries), default=0)
        self._regexps = tuple(re2.compile(e.pattern.encode(), _options()) for e in self.entries)
        self._set = re2.Set.SearchSet(_options(_SET_MAX_MEM))
        for entry in self.entries:
            self._set.Add(entry.pattern.encode())
        self._set.Compile()

    def undecided_start(self, data: bytes) -> int:
        """Where in ``data`` (UTF-8, the text so far) the earliest match that more text could
        still change may begin: ``len(data)`` when none can."""
        window = _last_chars_start(data, self.hold_back)
        regexp, plain = self._undecided
        start = _last_chars_start(data, plain) if plain else len(data)
        if regexp is not None:
            match = regexp.search(data, window)
            if match is not None:
                start = min(start, match.start())
        return start

    @cached_property
    def _undecided(self) -> tuple[re2._Regexp | None, int]:
        """The prefix patterns of every entry, ending the text; and the longest match of the
        entries whose prefix pattern RE2 refused (held back whole)."""
        prefixes: list[str] = []
        plain = 0
        for entry in self.entries:
            prefix = prefix_pattern(entry.pattern)
            if _compiled(prefix + r"\z") is None:
                plain = max(plain, entry.max_length)
            else:
                prefixes.append(prefix)
        regexp = _compiled(f"(?:{'|'.join(prefixes)})\\z") if prefixes else None
        if prefixes and regexp is None:
            plain = self.hold_back
        return regexp, plain

    def candidates(self, data: bytes) -> list[int]:
        """The entries with a match somewhere in ``data`` (one pass over it)."""
        return self._set.Match(data) or []

    def text(self, text: str, hits: Hits) -> str:
        """``text`` screened whole: the same object when nothing in it was redacted."""
        data = text.encode()
        found = self._set.Match(data)
        if not found:
            return text
        screen = TextScreen(self, hits)
        out = screen.feed_bytes(data, final=True, found=found)
        return text if screen.redactions == 0 else out

    def find(self, index: int, data: bytes, pos: int) -> tuple[int, int] | None:
        """The first match of entry ``index`` starting at or after ``pos`` that its validator
        accepts; ``data`` before ``pos`` is context (``^``, ``\\b``)."""
        regexp, validator = self._regexps[index], self.entries[index].validator
        while pos <= len(data):
            match = regexp.search(data, pos)
            if match is None:
                return None
            start, end = match.span()
            if validator is None or validator(data[start:end]):
                return start, end
            pos = start + 1
        return None


class TextScreen:
    """Screens one text that arrives in pieces (one choice of a streamed reply)."""

    __slots__ = ("_buf", "_detect", "_emit", "_fired", "_hits", "_screen", "redactions")

    def __init__(self, screen: Screen, hits: Hits) -> None:
        self._screen = screen
        self._hits = hits
        self._buf = b""  # the text not yet released, after one character of context
        self._emit = 0  # where the released text ends in _buf
        self._detect = 0  # where block and flag rules have not been looked for yet
        self._fired: set[int] = set()
        self.redactions = 0

    def feed(self, piece: str, *, final: bool = False) -> str:
        """Take the next piece; return the text that is now safe to release (``final``: all)."""
        return self.feed_bytes(piece.encode(), final=final)

    def finish(self) -> str:
        """The text still held back, screened (the stream of this text ended)."""
        return self.feed_bytes(b"", final=True)

    def feed_bytes(self, piece: bytes, *, final: bool, found: list[int] | None = None) -> str:
        buf = self._buf + piece if self._buf else piece
        screen = self._screen
        safe = len(buf) if final else screen.undecided_start(buf)
        if found is None:
            found = screen.candidates(buf)
        emit = self._emit
        out: list[bytes] = []
        if found:
            self._detect_in(buf, found, safe)
            emit = self._redact(buf, found, safe, out)
        end = max(emit, safe)
        out.append(buf[emit:end])
        self._emit = end
        self._detect = max(self._detect, safe)
        keep = _context_start(buf, min(self._emit, self._detect))
        self._buf = buf[keep:]
        self._emit -= keep
        self._detect -= keep
        return b"".join(out).decode()

    def _detect_in(self, buf: bytes, found: list[int], safe: int) -> None:
        """Raise for a block rule, note a flag rule, whose match starts before ``safe``."""
        screen = self._screen
        for index in found:
            entry = screen.entries[index]
            if entry.action == "redact" or index in self._fired:
                continue
            match = screen.find(index, buf, self._detect)
            if match is None or match[0] >= safe:
                continue
            self._fired.add(index)
            key = (entry.name, entry.action, entry.direction)
            self._hits[key] = self._hits.get(key, 0) + 1
            if entry.action == "block":
                raise Blocked(entry.name)

    def _redact(self, buf: bytes, found: list[int], safe: int, out: list[bytes]) -> int:
        """Append the released text with the decided matches replaced; return where it ends."""
        screen = self._screen
        redactors = [i for i in found if screen.entries[i].action == "redact"]
        pos = self._emit
        if not redactors:
            return pos
        nearest: dict[int, tuple[int, int] | None] = {}
        while True:
            best: tuple[int, int, int] | None = None
            for index in redactors:
                match = nearest.get(index, (-1, -1))
                if match is not None and match[0] < pos:
                    match = nearest[index] = screen.find(index, buf, pos)
                if match is not None and (
                    best is None
                    or match[0] < best[0]
                    or (match[0] == best[0] and match[1] > best[1])
                ):
                    best = (match[0], match[1], index)
            if best is None or best[0] >= safe:
                return pos
            start, end, index = best
            entry = screen.entries[index]
            out.append(buf[pos:start])
            out.append(entry.placeholder)
            key = (entry.name, entry.action, entry.direction)
            self._hits[key] = self._hits.get(key, 0) + 1
            self.redactions += 1
            pos = end


def _compiled(pattern: str) -> re2._Regexp | None:
    """``pattern`` compiled for searching the end of a stream's text, or None if RE2 refuses
    it (a prefix pattern nests deeper, and grows larger, than its rule)."""
    try:
        return re2.compile(pattern.encode(), _options(_SET_MAX_MEM))
    except re2.error:
        return None


def _last_chars_start(data: bytes, count: int) -> int:
    """Where the last ``count`` characters of UTF-8 ``data`` begin (0 if it has fewer)."""
    if count <= 0:
        return len(data)
    if len(data) <= count:
        return 0
    if data.isascii():
        return len(data) - count
    tail = data[-(4 * count + 4) :]  # holds at least ``count`` whole characters
    skip = 0
    while skip < len(tail) and tail[skip] & 0xC0 == 0x80:
        skip += 1  # the tail may begin inside a character
    chars = tail[skip:].decode()
    if len(chars) <= count:
        return 0
    return len(data) - len(chars[-count:].encode())


def _context_start(data: bytes, pos: int) -> int:
    """The start of the character before ``pos`` (kept as context), or 0."""
    if pos <= 0:
        return 0
    pos -= 1
    while pos > 0 and data[pos] & 0xC0 == 0x80:
        pos -= 1
    return pos
