"""structlog set up as a pipeline of plain callables, rendering one JSON object per line.

Secrets are removed by the pipeline, not by discipline: every configured secret (upstream
keys, the admin token) and anything shaped like a bearer token or an ``sk-`` key is replaced,
exceptions included. JSON lines are checked after rendering, on the exact bytes about to be
written (``RedactingJSONRenderer``): the usual line costs a few byte searches, and only a line
that may hold a secret is scrubbed field by field and rendered again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import Iterable, MutableMapping
from typing import Any, BinaryIO, TextIO

import orjson
import structlog

from sentinel.config import TelemetryConfig
from sentinel.timestamps import iso_utc

__all__ = ["LineLogger", "RedactingJSONRenderer", "SecretRedactor", "configure_logging"]

_REDACTED = "[REDACTED]"
_SHAPED_LIKE_SECRETS = (
    r"(?i:bearer)\s+[^\s\"',;]+",
    r"\bsk-[A-Za-z0-9_\-]{8,}",
)
# Substrings without which no shaped secret can match (the first is looked for lowercased).
_SHAPED_MARKERS = ("bearer", "sk-")
_SENSITIVE_FIELDS = frozenset({"authorization", "api_key", "api-key", "token", "key_secret"})
# Types whose rendering can hold no secret; any other value is checked as its repr.
_PLAIN = frozenset({int, float, bool, type(None)})


class SecretRedactor:
    """A structlog processor that scrubs secrets from every value of an event.

    A few substring tests over all of the event's text decide whether any value can hold a
    secret, so the usual event pays for them and no regex at all.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
        literal = [re.escape(s) for s in self._secrets]
        self._pattern = re.compile("|".join([*literal, *_SHAPED_LIKE_SECRETS]))
        # A secret holding a shaped marker is found by the marker's own search.
        self._escaped = tuple(
            escaped
            for escaped in (orjson.dumps(secret)[1:-1] for secret in self._secrets)
            if b"sk-" not in escaped and b"bearer" not in escaped.lower()
        )

    def __call__(
        self, logger: object, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if not _SENSITIVE_FIELDS.isdisjoint(event):
            for name in _SENSITIVE_FIELDS.intersection(event):
                event[name] = _REDACTED
        texts = []
        for value in event.values():
            if isinstance(value, str):
                texts.append(value)
            elif type(value) not in _PLAIN:
                texts.append(repr(value))
        if self._may_hold_secret("\n".join(texts)):
            self._scrub(event)
        return event

    def may_hold_secret_json(self, rendered: bytes) -> bool:
        """False only when no secret can be in ``rendered``, a JSON text: JSON escapes each
        character on its own, so a string holding a secret holds the secret's escaped form."""
        if b"sk-" in rendered or b"bearer" in rendered.lower():
            return True
        for secret in self._escaped:
            if secret in rendered:
                return True
        return False

    def scrub_event(self, event: MutableMapping[str, Any]) -> None:
        """Replace every secret in ``event``'s values (containers by their scrubbed repr)."""
        if not _SENSITIVE_FIELDS.isdisjoint(event):
            for name in _SENSITIVE_FIELDS.intersection(event):
                event[name] = _REDACTED
        self._scrub(event)

    def _may_hold_secret(self, text: str) -> bool:
        """False only when no secret pattern can match anywhere in ``text``."""
        bearer, sk = _SHAPED_MARKERS
        if sk in text or bearer in text.lower():
            return True
        for secret in self._secrets:
            if secret in text:
                return True
        return False

    def _scrub(self, event: MutableMapping[str, Any]) -> None:
        sub = self._pattern.sub
        for name, value in event.items():
            if isinstance(value, str):
                scrubbed = sub(_REDACTED, value)
            elif type(value) not in _PLAIN:
                # Containers and objects render as their repr (orjson's fallback for objects).
                text = repr(value)
                scrubbed = sub(_REDACTED, text)
                if scrubbed == text:
                    continue
            else:
                continue
            event[name] = scrubbed


class RedactingJSONRenderer:
    """The last processor of the JSON pipeline: render, then scrub only what needs it.

    Sensitive field names are redacted before rendering; the rendered line is then searched for
    every secret's JSON form and the shaped markers, and only a line where one may occur is
    scrubbed (as ``SecretRedactor`` does) and rendered again.
    """

    def __init__(
        self, redactor: SecretRedactor, out: BinaryIO | None = None, info: bool = True
    ) -> None:
        self._redactor = redactor
        self._out = out
        self._info = info  # whether the configured level lets info events through
        self._flushing = False  # a flush is scheduled for the end of this loop turn

    def write_info(self, event: str, fields: dict[str, Any]) -> None:
        """Write one info event to the pipeline's output exactly as the whole pipeline would
        (fields, ``event``, ``level``, ``timestamp``; redacted; one line), minus structlog's
        per-call machinery, and flushed at the end of the loop turn (``_flush_soon``). Only for
        plain values: exception info is not formatted here."""
        if not self._info or self._out is None:
            return
        fields["event"] = event
        fields["level"] = "info"
        fields["timestamp"] = iso_utc(time.time_ns())
        self._out.write(self(None, "info", fields) + b"\n")
        self._flush_soon()

    def _flush_soon(self) -> None:
        """Flush at the end of this turn of the event loop: the lines of the requests that end
        in one turn go out in one write. With no loop running, flush now."""
        if self._flushing:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush()
            return
        self._flushing = True
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        if self._out is not None:
            self._out.flush()

    def __call__(self, logger: object, method: str, event: MutableMapping[str, Any]) -> bytes:
        if not _SENSITIVE_FIELDS.isdisjoint(event):
            for name in _SENSITIVE_FIELDS.intersection(event):
                event[name] = _REDACTED
        rendered = _render(event)
        if self._redactor.may_hold_secret_json(rendered):
            self._redactor.scrub_event(event)
            rendered = _render(event)
        return rendered


def _render(event: MutableMapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(event, default=repr, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # an integer past 64 bits, or a repr that raised: render it all as text
        return orjson.dumps({str(k): _text(v) for k, v in event.items()})


def _text(value: object) -> object:
    if type(value) in _PLAIN or isinstance(value, str):
        return value
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not lose the line
        return f"<unrepresentable {type(value).__name__}>"


class LineLogger:
    """The info-level logger of an event written on every request (``request_finished``).

    Handed the JSON pipeline's renderer (what ``configure_logging`` returns), it writes the
    line through it directly (``RedactingJSONRenderer.write_info``): the same bytes for a
    fraction of the cost. Without one (the console format, a test's ``capture_logs``) it
    goes through structlog as usual.
    """

    __slots__ = ("_log", "_renderer")

    def __init__(self, name: str, renderer: RedactingJSONRenderer | None = None) -> None:
        self._log = structlog.get_logger(name).bind()
        self._renderer = renderer

    def info(self, event: str, fields: dict[str, Any]) -> None:
        """Log ``event`` with ``fields`` (which it may add to)."""
        if self._renderer is not None:
            self._renderer.write_info(event, fields)
        else:
            self._log.info(event, **fields)


def configure_logging(
    telemetry: TelemetryConfig, secrets: Iterable[str], stream: TextIO | None = None
) -> RedactingJSONRenderer | None:
    """Install the process-wide structlog pipeline (called by the composition root only), and
    return its JSON renderer (None for the console format), which the composition root hands
    to the ``LineLogger`` of the line every request writes.

    Module loggers are not cached: the tests configure logging once per gateway they start, and
    a cached module logger would keep writing through the first configuration.
    """
    level = logging.getLevelNamesMapping()[telemetry.log_level.upper()]
    out = stream or sys.stdout
    redactor = SecretRedactor(secrets)
    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer: RedactingJSONRenderer | None = None
    if telemetry.log_format == "console":
        processors += [redactor, structlog.dev.ConsoleRenderer(colors=False)]
        factory: Any = structlog.PrintLoggerFactory(out)
    else:
        binary: Any = getattr(out, "buffer", out)
        renderer = RedactingJSONRenderer(redactor, binary, info=level <= logging.INFO)
        processors.append(renderer)
        factory = structlog.BytesLoggerFactory(binary)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    return renderer if telemetry.log_format == "json" else None
