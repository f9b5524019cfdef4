"""The configuration's shape: frozen dataclasses every component receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from sentinel.limits.settings import LimitDefaults
from sentinel.limits.spec import LimitSpec
from sentinel.usage.settings import UsageSettings


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """``[server]``: where and how the gateway listens."""

    bind: str = "127.0.0.1:8080"
    workers: int = 1
    max_body_bytes: int = 10 * 1024 * 1024
    shutdown_grace_s: int = 30


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """``[redis]``: the shared store; absent means the embedded in-memory store."""

    url: str = "redis://127.0.0.1:6379/0"
    timeout_ms: int = 100
    on_unavailable: Literal["local", "deny"] = "local"
    replicas: int = 1
    cluster: bool = False  # use redis-py's cluster client (keys are hash-tagged per API key)


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """``[admin]``: the bearer token of the admin API (None disables it)."""

    token: str | None = None


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One ``[[upstreams]]`` entry: a provider endpoint and the models it serves."""

    name: str
    base_url: str  # normalised: no trailing slash
    api_key: str | None = None
    models: tuple[str, ...] = ("*",)
    connect_timeout_ms: int = 5_000
    first_byte_timeout_ms: int = 120_000
    idle_timeout_ms: int = 120_000
    timeout_ms: int = 600_000
    max_connections: int = 100
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class KeyConfig:
    """One ``[[keys]]`` entry: a caller's key, stored only as its SHA-256 digest."""

    name: str
    key_sha256: bytes  # the 32-byte digest, never the key itself
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    tokens_per_day: int | None = None
    tokens_per_week: int | None = None
    tokens_per_month: int | None = None
    models: tuple[str, ...] | None = None  # allow-list of globs; None allows every model

    def limits(self, defaults: LimitDefaults) -> LimitSpec:
        """This key's limits: what it sets, else ``[limits]``'s defaults."""
        return defaults.spec(
            rpm=self.rpm,
            tpm=self.tpm,
            max_parallel=self.max_parallel,
            tokens_per_day=self.tokens_per_day,
            tokens_per_week=self.tokens_per_week,
            tokens_per_month=self.tokens_per_month,
        )


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """``[telemetry]``: logging for now; metrics and traces come with their issue."""

    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True, slots=True)
class TokensConfig:
    """``[tokens]``: the encoding used for models no rule recognises."""

    default_encoding: Literal["cl100k_base", "o200k_base"] = "o200k_base"


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration, as every component receives it."""

    upstreams: tuple[UpstreamConfig, ...]
    keys: tuple[KeyConfig, ...] = ()
    server: ServerConfig = field(default_factory=ServerConfig)
    redis: RedisConfig | None = None
    admin: AdminConfig = field(default_factory=AdminConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    tokens: TokensConfig = field(default_factory=TokensConfig)
    limits: LimitDefaults = field(default_factory=LimitDefaults)
    usage: UsageSettings = field(default_factory=UsageSettings)
    source: Path | None = None  # the file it came from; None for embedded defaults

    def secrets(self) -> tuple[str, ...]:
        """Every secret string in the config, for the log redaction processor."""
        found = [u.api_key for u in self.upstreams if u.api_key]
        if self.admin.token:
            found.append(self.admin.token)
        if self.usage.webhook is not None:
            found.extend(value for _, value in self.usage.webhook.headers)
        if self.redis is not None:
            password = urlsplit(self.redis.url).password
            if password:
                found.append(password)
        return tuple(found)
