"""structlog set up as a pipeline of plain callables, rendering one JSON object per line.

Secrets are removed by a processor, not by discipline: every configured secret (upstream
keys, the admin token) and anything shaped like a bearer token or an ``sk-`` key is replaced
before rendering, exceptions included.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import orjson
import structlog

from sentinel.config import TelemetryConfig

__all__ = ["SecretRedactor", "configure_logging"]

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


def configure_logging(
    telemetry: TelemetryConfig, secrets: Iterable[str], stream: TextIO | None = None
) -> None:
    """Install the process-wide structlog pipeline (called by the composition root only).

    Loggers are not cached: the tests configure logging once per gateway they start, and a
    cached module logger would keep writing through the first configuration (it would save
    about 1 µs a line).
    """
    level = logging.getLevelNamesMapping()[telemetry.log_level.upper()]
    out = stream or sys.stdout
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        SecretRedactor(secrets),
    ]
    if telemetry.log_format == "console":
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
        factory: Any = structlog.PrintLoggerFactory(out)
    else:
        processors.append(structlog.processors.JSONRenderer(serializer=orjson.dumps))
        binary: Any = getattr(out, "buffer", out)
        factory = structlog.BytesLoggerFactory(binary)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
