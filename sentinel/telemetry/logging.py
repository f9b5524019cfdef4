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
_SENSITIVE_FIELDS = frozenset({"authorization", "api_key", "api-key", "token", "key_secret"})


class SecretRedactor:
    """A structlog processor that scrubs secrets from every string value of an event."""

    def __init__(self, secrets: Iterable[str]) -> None:
        literal = [re.escape(s) for s in sorted(set(secrets), key=len, reverse=True) if s]
        self._pattern = re.compile("|".join([*literal, *_SHAPED_LIKE_SECRETS]))

    def __call__(
        self, logger: object, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        search = self._pattern.search
        for name, value in event.items():
            if name in _SENSITIVE_FIELDS:
                event[name] = _REDACTED
            elif isinstance(value, str) and search(value) is not None:
                event[name] = self._pattern.sub(_REDACTED, value)
            elif isinstance(value, list | tuple | dict):
                rendered = str(value)
                if search(rendered) is not None:
                    event[name] = self._pattern.sub(_REDACTED, rendered)
        return event


def configure_logging(
    telemetry: TelemetryConfig, secrets: Iterable[str], stream: TextIO | None = None
) -> None:
    """Install the process-wide structlog pipeline (called by the composition root only)."""
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
