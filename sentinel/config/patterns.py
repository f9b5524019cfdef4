"""RE2 patterns of ``[[rules]]``: compiled to check them, and measured for their match length.

A response rule is applied to a stream with a hold-back of as many characters as its longest
possible match, so that length must be finite and known. ``match_lengths`` reads a pattern
that RE2 has already accepted and returns the shortest and longest number of characters
(code points) any match can span, ``None`` for no bound. It errs only toward longer: every
atom counts as one character, ``*``, ``+`` and ``{n,}`` are unbounded, and assertions
(``^ $ \\b \\B \\A \\z``) count as zero.
"""

from __future__ import annotations

import re

import re2

__all__ = ["UNBOUNDED", "compile_problem", "match_lengths"]

UNBOUNDED = 1 << 62
"""The length of an unbounded pattern (any sum or product reaching it stays there)."""

_REPEAT = re.compile(r"\{(\d+)(,(\d*))?\}")
_FLAGS = re.compile(r"\(\?[imsU-]*\)")
_ZERO_WIDTH_ESCAPES = frozenset("bBAz")


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
    return None


def match_lengths(pattern: str) -> tuple[int, int]:
    """The fewest and most characters a match of ``pattern`` (valid RE2) can span; the most
    is ``UNBOUNDED`` when any repetition is unbounded."""
    low, high, _ = _alternation(pattern, 0)
    return low, high


def _cap(value: int) -> int:
    return UNBOUNDED if value >= UNBOUNDED else value


def _alternation(p: str, i: int) -> tuple[int, int, int]:
    """Branches separated by ``|`` from ``i`` to the closing ``)`` or the end."""
    low, high, i = _sequence(p, i)
    while i < len(p) and p[i] == "|":
        branch_low, branch_high, i = _sequence(p, i + 1)
        low, high = min(low, branch_low), max(high, branch_high)
    return low, high, i


def _sequence(p: str, i: int) -> tuple[int, int, int]:
    low = high = 0
    while i < len(p) and p[i] not in "|)":
        atom_low, atom_high, i = _atom(p, i)
        atom_low, atom_high, i = _quantified(p, i, atom_low, atom_high)
        low, high = _cap(low + atom_low), _cap(high + atom_high)
    return low, high, i


def _quantified(p: str, i: int, low: int, high: int) -> tuple[int, int, int]:
    """Apply the repetition operator at ``i``, if any (a lazy ``?`` after it changes nothing)."""
    if i >= len(p):
        return low, high, i
    c = p[i]
    if c in "*+?":
        i += 1
        if c == "*":
            low, high = 0, (UNBOUNDED if high else 0)
        elif c == "+":
            high = UNBOUNDED if high else 0
        else:
            low = 0
    else:
        repeat = _REPEAT.match(p, i) if c == "{" else None
        if repeat is None:
            return low, high, i
        i = repeat.end()
        least = int(repeat.group(1))
        most = least if repeat.group(2) is None else (int(repeat.group(3) or -1))
        low = _cap(low * least)
        high = (UNBOUNDED if high else 0) if most < 0 else _cap(high * most)
    if i < len(p) and p[i] == "?":
        i += 1
    return low, high, i


def _atom(p: str, i: int) -> tuple[int, int, int]:
    c = p[i]
    if c == "(":
        flags = _FLAGS.match(p, i)
        if flags is not None:
            return 0, 0, flags.end()
        i += 1
        if p.startswith("?", i):
            while p[i] != ":" and p[i] != ">":  # (?flags:  (?P<name>  (?<name>
                i += 1
            i += 1
        low, high, i = _alternation(p, i)
        return low, high, i + 1  # past the ")"
    if c == "[":
        return 1, 1, _class_end(p, i + 1)
    if c == "\\":
        return _escape(p, i + 1)
    if c in "^$":
        return 0, 0, i + 1
    return 1, 1, i + 1


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
            i = _escape(p, i + 1)[2]
        else:
            i += 1
    return i + 1


def _escape(p: str, i: int) -> tuple[int, int, int]:
    """The escape whose letter is at ``i``: its lengths and the index after it."""
    c = p[i]
    if c == "Q":
        end = p.find("\\E", i + 1)
        quoted = len(p) - i - 1 if end < 0 else end - i - 1
        return quoted, quoted, len(p) if end < 0 else end + 2
    if c in _ZERO_WIDTH_ESCAPES:
        return 0, 0, i + 1
    if c in "pPx" and p.startswith("{", i + 1):
        return 1, 1, p.index("}", i + 1) + 1
    if c in "pP":
        return 1, 1, i + 2
    if c == "x":
        return 1, 1, i + 3
    if c.isdigit():
        j = i + 1
        while j < len(p) and j < i + 3 and p[j].isdigit():
            j += 1
        return 1, 1, j
    return 1, 1, i + 1
