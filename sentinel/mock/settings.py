"""The mock's knobs: server-wide defaults, per-request header overrides and the fault grammar.

Everything here is pure: header values in, a validated ``Knobs`` out, or a ``KnobError`` (a
``ValueError``) naming the field or header that was wrong; the server answers that with an
OpenAI-shaped 400.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "FAULT_KINDS",
    "HEADER_BYTES",
    "HEADER_CHUNKS",
    "HEADER_CHUNK_DELAY",
    "HEADER_FAULT",
    "HEADER_LATENCY",
    "MAX_CHUNKS",
    "Fault",
    "KnobError",
    "Knobs",
    "MockSettings",
    "knobs_from_headers",
    "parse_byte_count",
    "parse_fault",
]

MAX_CHUNKS = 100_000
MAX_DELAY = 600_000  # milliseconds

# Faults whose name carries an argument after a colon, and those that take none.
_ARG_FAULTS = frozenset({"status", "die-after", "stall-after"})
_PLAIN_FAULTS = frozenset({"reset", "stall", "no-usage", "no-done", "slow-body"})
FAULT_KINDS = _ARG_FAULTS | _PLAIN_FAULTS


class KnobError(ValueError):
    """A knob value out of range or unparsable; ``param`` names the field or header."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected misbehaviour: ``kind`` is a name from ``FAULT_KINDS``, ``arg`` its number."""

    kind: str
    arg: int = 0


def parse_fault(text: str) -> Fault:
    """Parse ``status:<code>``, ``die-after:<n>``, ``stall-after:<n>`` or a plain fault name."""
    kind, sep, arg = text.strip().partition(":")
    if kind in _PLAIN_FAULTS and not sep:
        return Fault(kind)
    if kind not in _ARG_FAULTS or not (arg.isascii() and arg.isdigit()) or len(arg) > 9:
        raise ValueError(f"unknown fault {text!r}; expected one of {', '.join(_fault_forms())}")
    number = int(arg)
    if kind == "status" and not 400 <= number <= 599:
        raise ValueError(f"fault {text!r}: the status must be within 400-599")
    return Fault(kind, number)


def _fault_forms() -> list[str]:
    return sorted([f"{kind}:<n>" for kind in _ARG_FAULTS] + list(_PLAIN_FAULTS))


@dataclass(frozen=True)
class MockSettings:
    """Server-wide defaults; each one can be overridden per request by an ``x-mock-*`` header."""

    chunks: int = 20
    """Content chunks in a stream (one word each); also the completion token count."""
    chunk_delay_ms: float = 0.0
    """Pause between two stream events (and between the parts of a ``slow-body`` reply)."""
    latency_ms: float = 0.0
    """Pause before the response headers."""
    fault: str | None = None
    """A fault applied to every request that does not name its own (see ``parse_fault``)."""

    def __post_init__(self) -> None:
        self.knobs()  # validates every field, raising KnobError

    def knobs(self) -> Knobs:
        """These settings as the validated per-request form."""
        return Knobs(
            chunks=_chunks(self.chunks, "chunks"),
            chunk_delay_s=_delay_ms(self.chunk_delay_ms, "chunk_delay_ms") / 1000,
            latency_s=_delay_ms(self.latency_ms, "latency_ms") / 1000,
            fault=None if self.fault is None else _settings_fault(self.fault),
        )


def _settings_fault(text: str) -> Fault:
    try:
        return parse_fault(text)
    except ValueError as error:
        raise KnobError(str(error), "fault") from None


@dataclass(frozen=True, slots=True)
class Knobs:
    """What one request runs with: the settings after its header overrides."""

    chunks: int
    chunk_delay_s: float
    latency_s: float
    fault: Fault | None

    def has(self, kind: str) -> bool:
        """Whether this request's fault is ``kind``."""
        return self.fault is not None and self.fault.kind == kind


HEADER_CHUNKS = "x-mock-chunks"
HEADER_CHUNK_DELAY = "x-mock-chunk-delay-ms"
HEADER_LATENCY = "x-mock-latency-ms"
HEADER_FAULT = "x-mock-fault"
HEADER_BYTES = "x-mock-bytes"
HEADER_USAGE_DETAILS = "x-mock-usage-details"


def parse_usage_details(value: str | None) -> tuple[int, int]:
    """``x-mock-usage-details: cached=<n>,reasoning=<n>`` (either part optional) as
    ``(cached, reasoning)``: the cached prompt tokens and hidden reasoning tokens to report."""
    found = {"cached": 0, "reasoning": 0}
    for part in (value or "").split(","):
        if not part.strip():
            continue
        name, _, number = part.partition("=")
        if name.strip() not in found:
            raise KnobError(f"{HEADER_USAGE_DETAILS}: expected cached=<n>,reasoning=<n>", name)
        found[name.strip()] = _header_int(number, HEADER_USAGE_DETAILS, MAX_CHUNKS)
    return found["cached"], found["reasoning"]


def knobs_from_headers(defaults: Knobs, headers: Mapping[str, str]) -> Knobs:
    """``defaults`` with any ``x-mock-*`` header applied; ``KnobError`` names a bad header."""
    chunks = headers.get(HEADER_CHUNKS)
    delay = headers.get(HEADER_CHUNK_DELAY)
    latency = headers.get(HEADER_LATENCY)
    fault = headers.get(HEADER_FAULT)
    if chunks is None and delay is None and latency is None and fault is None:
        return defaults
    return Knobs(
        chunks=defaults.chunks
        if chunks is None
        else _header_int(chunks, HEADER_CHUNKS, MAX_CHUNKS),
        chunk_delay_s=defaults.chunk_delay_s
        if delay is None
        else _header_s(delay, HEADER_CHUNK_DELAY),
        latency_s=defaults.latency_s if latency is None else _header_s(latency, HEADER_LATENCY),
        fault=defaults.fault if fault is None else _header_fault(fault),
    )


def parse_byte_count(value: str | None, default: int, limit: int) -> int:
    """The ``x-mock-bytes`` value (a size within ``0..limit``), or ``default`` when absent."""
    return default if value is None else _header_int(value, HEADER_BYTES, limit)


def _header_fault(value: str) -> Fault | None:
    if value.strip() in ("", "none"):
        return None
    try:
        return parse_fault(value)
    except ValueError as error:
        raise KnobError(f"{HEADER_FAULT}: {error}", HEADER_FAULT) from None


def _header_int(value: str, name: str, limit: int) -> int:
    text = value.strip()
    number = int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else -1
    return _chunks(number, name, limit, shown=value)


def _header_s(value: str, name: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        number = math.nan
    return _delay_ms(number, name, shown=value) / 1000


def _chunks(value: int, name: str, limit: int = MAX_CHUNKS, shown: object = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        shown = value if shown is None else shown
        raise KnobError(f"{name}: expected an integer within 0-{limit}, got {shown!r}", name)
    return value


def _delay_ms(value: float, name: str, shown: object = None) -> float:
    if not isinstance(value, int | float) or not (math.isfinite(value) and 0 <= value <= MAX_DELAY):
        shown = value if shown is None else shown
        raise KnobError(f"{name}: expected milliseconds within 0-{MAX_DELAY}, got {shown!r}", name)
    return float(value)
