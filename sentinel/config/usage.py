"""``[usage]`` settings as frozen dataclasses, for ``config.py`` to fill and validate.

This module reads no environment and touches no disk: ``default_spool_dir`` takes the
environment as an argument, so that the config package stays its only reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["UsageSettings", "WebhookSettings", "default_spool_dir", "default_state_dir"]


def default_state_dir(environ: Mapping[str, str], home: Path | None) -> Path:
    """Where ``[server] state_dir`` is when not set: the spool's parent (see below)."""
    return default_spool_dir(environ, home).parent


def default_spool_dir(environ: Mapping[str, str], home: Path | None) -> Path:
    """Where the spool lives when ``[usage] spool_dir`` is not set.

    ``$XDG_STATE_HOME/sentinel/spool``, else ``~/.local/state/sentinel/spool`` when there is a
    home directory, else ``./.sentinel/spool``. Never a shared /tmp path: the spool must outlive
    a restart and must not be readable by other users.
    """
    state = environ.get("XDG_STATE_HOME", "")
    if state and Path(state).is_absolute():  # the XDG spec says to ignore relative paths
        return Path(state) / "sentinel" / "spool"
    if home is not None and str(home) not in ("", "/"):
        return home / ".local" / "state" / "sentinel" / "spool"
    return Path(".sentinel") / "spool"


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """``[usage.webhook]``: where batches are POSTed and how hard to try."""

    url: str
    headers: tuple[tuple[str, str], ...] = ()
    timeout_ms: int = 5_000
    max_attempts: int = 3
    backoff_ms: int = 200
    backoff_max_ms: int = 5_000
    breaker_failures: int = 5
    breaker_reset_ms: int = 30_000

    def problems(self) -> list[str]:
        """Every invalid field as ``"field: message"``; empty when all is well."""
        found: list[str] = []
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            found.append(f"url: expected an http(s) URL, got {self.url[:100]!r}")
        for name, low in (
            ("timeout_ms", 1),
            ("max_attempts", 1),
            ("backoff_ms", 0),
            ("breaker_failures", 1),
            ("breaker_reset_ms", 0),
        ):
            found.extend(_at_least(name, getattr(self, name), low))
        if self.backoff_max_ms < self.backoff_ms:
            found.append(f"backoff_max_ms: must be >= backoff_ms ({self.backoff_ms})")
        return found


@dataclass(frozen=True, slots=True)
class UsageSettings:
    """``[usage]``: the tracker's queue and timing, the spool, and which sinks are on.

    Redis counters are written only when ``[redis]`` is configured and ``redis_counters`` is
    true. ``spool_dir`` here is the last-resort default; ``config.py`` should fill it from
    ``default_spool_dir`` when the file does not set it.
    """

    spool_dir: Path = Path(".sentinel/spool")
    capacity: int = 10_000
    batch_size: int = 100
    flush_interval_ms: int = 1_000
    replay_interval_ms: int = 5_000
    close_timeout_ms: int = 10_000
    jsonl_path: Path | None = None
    jsonl_rotate_bytes: int = 100 * 1024 * 1024
    jsonl_keep: int = 5
    webhook: WebhookSettings | None = None
    redis_counters: bool = True
    drain_on_disconnect: bool = False
    drain_timeout_ms: int = 30_000
    max_drains: int = 64

    def problems(self) -> list[str]:
        """Every invalid field as ``"field: message"`` (webhook ones as ``webhook.field``)."""
        found: list[str] = []
        for name, low in (
            ("capacity", 1),
            ("batch_size", 1),
            ("flush_interval_ms", 1),
            ("replay_interval_ms", 1),
            ("close_timeout_ms", 1),
            ("jsonl_rotate_bytes", 1),
            ("jsonl_keep", 0),
            ("drain_timeout_ms", 1),
            ("max_drains", 1),
        ):
            found.extend(_at_least(name, getattr(self, name), low))
        if self.batch_size > self.capacity:
            found.append(f"batch_size: must be <= capacity ({self.capacity})")
        if self.webhook is not None:
            found.extend(f"webhook.{problem}" for problem in self.webhook.problems())
        return found


def _at_least(name: str, value: object, low: int) -> list[str]:
    if type(value) is not int or value < low:
        return [f"{name}: expected an integer >= {low}, got {value!r}"]
    return []
