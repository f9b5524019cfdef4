"""Where a sampled process spent its CPU: collapsed stacks grouped into the parts that matter.

Pure: the text of a collapsed-stack profile in (``py-spy record --format raw``: one line per
distinct stack, ``frame;frame;...;leaf COUNT``, each frame ``function (file:line)``), shares
out. Each frame belongs to a *bucket* named after what owns its file: the HTTP engine, the
event loop, the aiohttp client, redis-py, logging, JSON, one bucket per Sentinel subpackage.
A bucket's *self* share is the samples whose innermost frame is its own; its *inclusive*
share the samples with any frame of it on the stack (so the middleware around every request
is inclusive of nearly everything, and a leaf library is inclusive of what it alone does).
Helpers of no part of their own (the rest of the standard library, code generated at run
time such as a dataclass's ``__init__``) count toward the part that called them: a Date
header formatted by ``wsgiref`` for hypercorn is the engine's.

Only Python frames are sampled: time in C (uvloop's own loop and socket calls, orjson,
hiredis, the kernel) counts toward the Python function that called into it, and the loop's C
code between two callbacks shows as the frame that started it (asyncio's ``Runner.run``).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ENTRY",
    "GENERATED",
    "OTHER_STDLIB",
    "TORN",
    "Frame",
    "Profile",
    "Share",
    "bucket_of",
    "parse_collapsed",
]

ENTRY = "process entry"
"""The bucket of the frames every sample starts with (runpy, the CLI, the server's run)."""
TORN = "unreadable frames"
"""The bucket of frames read while the process changed them (a sampler that never pauses the
process sometimes reads garbage: no file, control bytes, absurd line numbers)."""

OTHER_STDLIB = "other standard library"
GENERATED = "generated code"
_HELPERS = frozenset({OTHER_STDLIB, GENERATED})
"""Buckets charged to the innermost caller that has a part of its own (see above)."""

_FILE = re.compile(r"<[\w .-]+>|[\w.-]+(/[\w.-]+)*\.py")
_MAX_LINE = 1_000_000

_ENTRY_FILES = (
    "<frozen runpy>",
    "runpy.py",
    "sentinel/__main__.py",
    "sentinel/server.py",
)
_LOOP_ROOT = "asyncio/runners.py"
"""Where uvloop's C loop is entered: its frame is on every stack, its self time the loop's."""

_LIBRARIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("engine: hypercorn + h11", ("hypercorn", "h11", "h2", "hpack", "hyperframe", "wsproto")),
    ("engine: uvicorn + httptools", ("uvicorn", "httptools")),
    ("starlette", ("starlette", "anyio")),
    ("event loop: asyncio + uvloop", ("asyncio", "uvloop", "selectors", "contextvars")),
    ("aiohttp client", ("aiohttp", "yarl", "multidict", "aiosignal", "frozenlist", "propcache")),
    ("redis-py", ("redis", "hiredis")),
    ("structlog + logging", ("structlog", "logging")),
    ("json + orjson", ("json", "orjson")),
    ("tiktoken + regex", ("tiktoken", "tiktoken_ext", "regex")),
    ("opentelemetry + prometheus", ("opentelemetry", "prometheus_client")),
    (GENERATED, ("<string>",)),
)
_OWNERS = {top: bucket for bucket, tops in _LIBRARIES for top in tops}


@dataclass(frozen=True)
class Frame:
    """One stack frame: the function and the file (py-spy's short form) it is in."""

    function: str
    file: str
    line: int

    @property
    def bucket(self) -> str:
        """The part of the process this frame's code belongs to."""
        return bucket_of(self.file)

    @property
    def is_entry(self) -> bool:
        """Whether this frame starts (nearly) every stack: the process's entry, the loop's."""
        return self.bucket == ENTRY or self.file == _LOOP_ROOT

    @property
    def label(self) -> str:
        """``function (file:line)``, as the profiler wrote it (a torn frame: its text, quoted)."""
        if not self.file:
            return ascii(self.function)
        return f"{self.function} ({self.file}:{self.line})"


def bucket_of(file: str) -> str:
    """The bucket of code in ``file`` (a path like ``sentinel/limits/gate.py``)."""
    if _FILE.fullmatch(file) is None:
        return TORN
    if file in _ENTRY_FILES:
        return ENTRY
    if file == _LOOP_ROOT:
        return _OWNERS["asyncio"]
    parts = file.split("/")
    if parts[0] == "sentinel":
        name = parts[1].removesuffix(".py") if len(parts) > 1 else "sentinel"
        return f"sentinel.{name}"
    if parts[0] == "bench":
        return "bench (the bare pass-through)"
    top = parts[0].removesuffix(".py")
    if (owner := _OWNERS.get(top)) is not None:
        return owner
    top = top.removeprefix("<frozen ").removesuffix(">")
    if top.split(".")[0] in sys.stdlib_module_names:
        return OTHER_STDLIB
    return f"other: {top}"


def _frame(text: str) -> Frame:
    """``function (file:line)``; a frame that is not (see ``TORN``) keeps its text as its name
    and no file."""
    function, sep, location = text.rpartition(" (")
    file, _, line = location.removesuffix(")").rpartition(":")
    readable = sep and location.endswith(")") and function.isprintable() and line.isdigit()
    if not readable or int(line) > _MAX_LINE or _FILE.fullmatch(file) is None:
        return Frame(text, "", 0)
    return Frame(function, file, int(line))


def parse_collapsed(text: str) -> list[tuple[tuple[Frame, ...], int]]:
    """Each stack (outermost frame first) with its sample count; malformed lines are skipped."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append((tuple(_frame(part) for part in stack.split(";")), int(count)))
    return stacks


@dataclass(frozen=True)
class Share:
    """One bucket's or one function's samples: those where it was innermost, those where it
    was anywhere on the stack."""

    name: str
    self_samples: int
    inclusive_samples: int


def _charged(frames: tuple[Frame, ...]) -> list[str]:
    """Each frame's bucket, a helper's replaced by its innermost caller's with a part of its own
    (a helper with none above it keeps its own)."""
    charged = []
    owner = None
    for frame in frames:
        bucket = frame.bucket
        if bucket in _HELPERS:
            bucket = owner or bucket
        elif bucket != ENTRY:
            owner = bucket
        charged.append(bucket)
    return charged


class Profile:
    """The samples of one profile, counted by bucket and by function."""

    def __init__(self, stacks: Iterable[tuple[tuple[Frame, ...], int]]) -> None:
        self.samples = 0
        self._bucket_self: Counter[str] = Counter()
        self._bucket_inclusive: Counter[str] = Counter()
        self._function_self: Counter[Frame] = Counter()
        self._function_inclusive: Counter[Frame] = Counter()
        for frames, count in stacks:
            if not frames:
                continue
            self.samples += count
            buckets = _charged(frames)
            self._bucket_self[buckets[-1]] += count
            self._function_self[frames[-1]] += count
            for bucket in set(buckets):
                self._bucket_inclusive[bucket] += count
            for frame in set(frames):  # a recursive function counts once per sample
                self._function_inclusive[frame] += count

    @classmethod
    def from_collapsed(cls, text: str) -> Profile:
        """The profile of a collapsed-stack text."""
        return cls(parse_collapsed(text))

    def buckets(self) -> list[Share]:
        """Every bucket, the most self time first (ties: the most inclusive)."""
        names = set(self._bucket_inclusive)
        shares = [
            Share(name, self._bucket_self[name], self._bucket_inclusive[name]) for name in names
        ]
        return sorted(shares, key=lambda s: (-s.self_samples, -s.inclusive_samples, s.name))

    def top_self(self, count: int) -> list[tuple[Frame, Share]]:
        """The ``count`` functions that were innermost most often."""
        return [(frame, self._share(frame)) for frame, _ in self._function_self.most_common(count)]

    def top_inclusive(self, count: int) -> list[tuple[Frame, Share]]:
        """The ``count`` functions most often on the stack, the process's entry frames (on
        every stack) and the loop's left out."""
        ranked = [
            frame for frame, _ in self._function_inclusive.most_common() if not frame.is_entry
        ]
        return [(frame, self._share(frame)) for frame in ranked[:count]]

    def _share(self, frame: Frame) -> Share:
        return Share(frame.label, self._function_self[frame], self._function_inclusive[frame])
