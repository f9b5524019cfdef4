"""RE2 patterns of ``[[rules]]``: compiled to check them, measured for their match length,
and turned into the pattern of their matches' beginnings.

A response rule is applied to a stream with a hold-back of at most its longest possible match,
so that length must be finite and known. ``match_lengths`` reads a pattern that RE2 has
already accepted and returns the shortest and longest number of characters (code points) any
match can span. It errs only toward longer: every atom counts as one character, ``*``, ``+``
and ``{n,}`` are unbounded, and assertions (``^ $ \\b \\B \\A \\z``) count as zero.

``prefix_pattern`` answers the question the hold-back asks of the text that has arrived: can
its last characters still be the beginning of a match that more text would change? It writes
a pattern that matches what a match can begin with and still go on, and what ends where an
assertion waits on the next character (``foo`` for ``foo\\b``). It errs only toward matching
more: flags set anywhere apply everywhere, and optional runs longer than 16 are unbounded
(the text it reads is at most the longest match anyway).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

import re2

__all__ = ["UNBOUNDED", "compile_problem", "match_lengths", "prefix_pattern"]

UNBOUNDED = 1 << 62
"""The length of an unbounded pattern (any sum or product reaching it stays there)."""

_REPEAT = re.compile(r"\{(\d+)(,(\d*))?\}")
_FLAGS = re.compile(r"\(\?([imsU-]*)\)")
_BROADENING_FLAGS = frozenset("ims")  # each lets a pattern match more (U only prefers)
_EXACT_RUN = 16  # optional repetitions up to this many are kept exact in prefix patterns
_ZERO_WIDTH_ESCAPES = frozenset("bBAz")
_MAX_NESTING = 100  # groups in groups; Python's recursion limit is 1,000 frames


def compile_problem(pattern: str) -> str | None:
    """Why RE2 refuses ``pattern`` (backreferences and lookaround named as such), or None."""
    if "\\C" in pattern.replace("\\\\", ""):
        return r"\C (any byte) is not allowed: it can split a character"
    options = re2.Options()
    options.log_errors = False
    try:
        re2.compile(pattern, options)
    except re2.error as error:
        reason = error.args[0] if error.args else "invalid pattern"
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        if "(?=" in text or "(?!" in text or "(?<=" in text or "(?<!" in text:
            return f"lookaround is not supported by RE2 ({text})"
        if re.search(r"invalid escape sequence: \\[1-9]", text):
            return f"backreferences are not supported by RE2 ({text})"
        return f"not valid RE2 syntax ({text})"
    if _nesting(pattern) > _MAX_NESTING:
        return f"groups nest more than {_MAX_NESTING} deep"
    return None


def _nesting(p: str) -> int:
    """How deep the groups of ``p`` (valid RE2) nest: the readers here recurse per group."""
    depth = deepest = i = 0
    while i < len(p):
        c = p[i]
        if c == "\\":
            end = p.find("\\E", i + 2) if p.startswith("Q", i + 1) else i
            i = len(p) if end < 0 else end + 2
            continue
        if c == "[":
            i = _class_end(p, i + 1)
            continue
        depth += (c == "(") - (c == ")")
        deepest = max(deepest, depth)
        i += 1
    return deepest


_Branch = tuple["_Item", ...]


@dataclass(frozen=True, slots=True)
class _Item:
    """One atom of a parsed pattern and its repetition: a character or class, an assertion, a
    flag change, or a group of branches."""

    atom: str  # as written ("" for a group)
    width: int  # characters the atom spans: 1, or 0 for an assertion or a flag change
    least: int = 1
    most: int = 1  # -1: unbounded
    branches: tuple[_Branch, ...] | None = None  # a group's
    is_flags: bool = False


def match_lengths(pattern: str) -> tuple[int, int]:
    """The fewest and most characters a match of ``pattern`` (valid RE2) can span; the most
    is ``UNBOUNDED`` when any repetition is unbounded."""
    return _lengths(_Parser(pattern).parse())


def prefix_pattern(pattern: str) -> str:
    """A pattern matching every beginning of a match of ``pattern`` (valid RE2) that more text
    could extend or undo, the empty one too: followed by ``\\z``, it finds the earliest point
    of a text where a match may begin that the text to come would change."""
    parser = _Parser(pattern)
    branches = parser.parse()
    return f"(?{''.join(sorted(parser.flags))}:{_prefix_of(branches) or ''})"


class _Parser:
    """Reads a pattern that RE2 accepted into branches of items."""

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.flags: set[str] = set()  # the broadening flags set anywhere

    def parse(self) -> tuple[_Branch, ...]:
        return self._branches()

    def _branches(self) -> tuple[_Branch, ...]:
        """Branches separated by ``|`` up to the closing ``)`` or the end."""
        found = [self._branch()]
        while self.i < len(self.p) and self.p[self.i] == "|":
            self.i += 1
            found.append(self._branch())
        return tuple(found)

    def _branch(self) -> _Branch:
        items: list[_Item] = []
        while self.i < len(self.p) and self.p[self.i] not in "|)":
            items.extend(self._atoms())
            if items:
                items[-1] = self._quantified(items[-1])
        return tuple(items)

    def _quantified(self, item: _Item) -> _Item:
        """``item`` with the repetition operator at ``i``, if any (a lazy ``?`` after it
        changes what is preferred, not what can match)."""
        p, start = self.p, self.i
        if start >= len(p):
            return item
        c, i = p[start], start + 1
        if c in "*+?":
            least, most = {"*": (0, -1), "+": (1, -1), "?": (0, 1)}[c]
        else:
            repeat = _REPEAT.match(p, start) if c == "{" else None
            if repeat is None:
                return item
            i = repeat.end()
            least = int(repeat.group(1))
            most = least if repeat.group(2) is None else int(repeat.group(3) or -1)
        if i < len(p) and p[i] == "?":
            i += 1
        self.i = i
        return _Item(item.atom, item.width, least, most, item.branches, item.is_flags)

    def _atoms(self) -> list[_Item]:
        """The atom at ``i`` (``\\Q..\\E`` is one per character it quotes)."""
        p, i = self.p, self.i
        c = p[i]
        if c == "(":
            return [self._group()]
        if c == "[":
            self.i = _class_end(p, i + 1)
            return [_Item(p[i : self.i], 1)]
        if c == "\\":
            return self._escape()
        self.i = i + 1
        if c in "^$":
            return [_Item(c, 0)]
        return [_Item("\\{" if c == "{" else c, 1)]

    def _group(self) -> _Item:
        p, i = self.p, self.i
        flags = _FLAGS.match(p, i)
        if flags is not None:
            self._note_flags(flags.group(1))
            self.i = flags.end()
            return _Item(flags.group(0), 0, is_flags=True)
        i += 1
        if p.startswith("?", i):
            end = i
            while p[end] != ":" and p[end] != ">":  # (?flags:  (?P<name>  (?<name>
                end += 1
            if p[end] == ":":
                self._note_flags(p[i + 1 : end])
            i = end + 1
        self.i = i
        branches = self._branches()
        self.i += 1  # past the ")"
        return _Item("", 0, branches=branches)

    def _escape(self) -> list[_Item]:
        """The escape whose backslash is at ``i``."""
        p, i = self.p, self.i
        c = p[i + 1]
        if c == "Q":
            end = p.find("\\E", i + 2)
            quoted = p[i + 2 :] if end < 0 else p[i + 2 : end]
            self.i = len(p) if end < 0 else end + 2
            return [_Item("\\" + q if q in string.punctuation else q, 1) for q in quoted]
        if c in _ZERO_WIDTH_ESCAPES:
            self.i = i + 2
            return [_Item(p[i : self.i], 0)]
        self.i = _escape_end(p, i + 1)
        return [_Item(p[i : self.i], 1)]

    def _note_flags(self, spec: str) -> None:
        self.flags.update(_BROADENING_FLAGS.intersection(spec.partition("-")[0]))


def _cap(value: int) -> int:
    return UNBOUNDED if value >= UNBOUNDED else value


def _lengths(branches: tuple[_Branch, ...]) -> tuple[int, int]:
    pairs = [_branch_lengths(branch) for branch in branches]
    return min(low for low, _ in pairs), max(high for _, high in pairs)


def _branch_lengths(branch: _Branch) -> tuple[int, int]:
    low = high = 0
    for item in branch:
        once = (item.width, item.width) if item.branches is None else _lengths(item.branches)
        low = _cap(low + _cap(once[0] * item.least))
        if item.most < 0:
            high = _cap(high + (UNBOUNDED if once[1] else 0))
        else:
            high = _cap(high + _cap(once[1] * item.most))
    return low, high


def _prefix_of(branches: tuple[_Branch, ...]) -> str | None:
    """What a match of one of ``branches`` can begin with and still go on; None for nothing."""
    found = [prefix for prefix in map(_prefix_of_branch, branches) if prefix is not None]
    return "|".join(found) if found else None


def _prefix_of_branch(branch: _Branch) -> str | None:
    """``x1 x2 .. xn`` can go on after a beginning of ``x1`` that can, or after ``x1`` and a
    beginning of the rest that can. An assertion is checked only where text follows it: at
    the end it is undecided, so what ends there counts as going on."""
    found: str | None = None  # the empty sequence cannot go on
    for item in reversed(branch):
        if item.is_flags:
            continue  # prefix_pattern sets every flag for the whole pattern
        if item.branches is None and item.width == 0:
            found = "" if found is None else f"(?:{_loose(item)}{found}|)"
            continue
        after = None if found is None else _loose(item) + found
        alone = _prefix_of_item(item)
        if after is None or alone is None:
            found = alone if after is None else after
        else:
            found = f"(?:{after}|{alone})"
    return found


def _prefix_of_item(item: _Item) -> str | None:
    """``x{n,m}`` can go on after fewer than ``m`` whole ``x`` and a beginning of one more
    that can."""
    once = "" if item.branches is None else _prefix_of(item.branches)
    if item.most == 0 or once is None:
        return None
    once = f"(?:{once})" if once else ""
    if item.most == 1:
        return once
    return f"(?:{_loose_atom(item)}){_loose_repeat(0, item.most - 1)}{once}"


def _loose(item: _Item) -> str:
    """``item`` written for the prefix pattern: capture groups made plain (copies can sit side
    by side), and long optional runs unbounded (``{0,1000}`` twice in a row would cost the
    matcher a state per way of splitting a run; the text it reads is bounded anyway)."""
    if item.is_flags:
        return ""
    return _loose_atom(item) + _loose_repeat(item.least, item.most)


def _loose_atom(item: _Item) -> str:
    if item.branches is None:
        return item.atom
    inner = "|".join("".join(map(_loose, branch)) for branch in item.branches)
    return f"(?:{inner})"


def _loose_repeat(least: int, most: int) -> str:
    if most < 0 or most - least > _EXACT_RUN:
        return "*" if least == 0 else f"{{{least},}}"
    return "" if least == most == 1 else f"{{{least},{most}}}"


def _class_end(p: str, i: int) -> int:
    """The index after the ``]`` closing a class whose body starts at ``i``."""
    if p.startswith("^", i):
        i += 1
    if p.startswith("]", i):
        i += 1  # a leading "]" is a literal
    while p[i] != "]":
        if p.startswith("[:", i):
            i = p.index(":]", i + 2) + 2
        elif p[i] == "\\":
            i = _escape_end(p, i + 1)
        else:
            i += 1
    return i + 1


def _escape_end(p: str, i: int) -> int:
    """The index after the escape (one character, or a class like ``\\pL``) whose letter is
    at ``i``."""
    c = p[i]
    if c in "pPx" and p.startswith("{", i + 1):
        return p.index("}", i + 1) + 1
    if c in "pP":
        return i + 2
    if c == "x":
        return i + 3
    if c.isdigit():
        end = i + 1
        while end < len(p) and end < i + 3 and p[end].isdigit():
            end += 1
        return end
    return i + 1
