"""The configuration's shape: frozen dataclasses every component receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from sentinel.config.admin import AdminConfig
from sentinel.config.budgets import Budgets
from sentinel.config.credits import CreditsConfig
from sentinel.config.edge import CompressionConfig, CorsConfig
from sentinel.config.families import DEFAULT_FAMILIES, FAMILIES
from sentinel.config.guardrails import GuardrailsConfig
from sentinel.config.identity import IdentityConfig
from sentinel.config.limits import LimitDefaults
from sentinel.config.money import MoneyConfig
from sentinel.config.spending import BudgetSettings
from sentinel.config.usage import UsageSettings


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """``[server]``: where and how the gateway listens."""

    bind: str = "127.0.0.1:8080"
    workers: int = 1
    max_body_bytes: int = 10 * 1024 * 1024
    shutdown_grace_s: int = 30
    header_timeout_ms: int = 30_000  # request line and headers, and idle keep-alive
    body_timeout_ms: int = 60_000  # the whole request body: 408 after it
    write_timeout_ms: int = 30_000  # one write to a client that stopped reading: dropped
    max_client_connections: int = 10_000  # requests in flight at once: 503 above it
    engine: Literal["hypercorn", "uvicorn"] = "hypercorn"  # the HTTP server (sentinel.engines)
    # Without [redis]: the SQLite file of runtime keys, credits and the audit (sentinel.statefile)
    state_dir: Path = Path(".sentinel")


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """``[redis]``: the shared store; absent means the embedded in-memory store."""

    url: str = "redis://127.0.0.1:6379/0"
    timeout_ms: int = 100
    on_unavailable: Literal["local", "deny"] = "local"
    replicas: int = 1
    cluster: bool = False  # use redis-py's cluster client (keys are hash-tagged per API key)
    # Redis Sentinel instead of url: "host:port" of each sentinel, and the master's name there.
    sentinels: tuple[str, ...] = ()
    master_name: str = ""
    sentinel_password: str | None = None  # AUTH to the sentinels
    password: str | None = None  # AUTH to the master (with url, the URL carries it)
    db: int = 0


UpstreamKind = Literal["openai", "azure", "openai-compatible"]


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
    kind: UpstreamKind = "openai"
    priority: int = 0  # lower is tried first
    weight: int = 1  # share of traffic among upstreams of the same priority
    api_keys: tuple[str, ...] = ()  # rotated; a key that gets a 429 is set aside
    api_version: str | None = None  # azure: the api-version query parameter
    deployments: tuple[tuple[str, str], ...] = ()  # azure: model -> deployment name
    health_check_interval_s: int = 0  # 0: no active health checks

    @property
    def keys(self) -> tuple[str, ...]:
        """Every key this upstream may be called with, in rotation order."""
        return ((self.api_key,) if self.api_key else ()) + self.api_keys


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """``[routing]``: failover attempts, their backoff, and the upstream circuit breakers."""

    max_attempts: int = 3
    backoff_ms: int = 50
    backoff_max_ms: int = 1_000
    max_retry_after_ms: int = 2_000  # an upstream retry-after is honoured only if shorter
    breaker_failures: int = 5  # consecutive failures that open a breaker
    breaker_failure_ratio: float = 0.5  # ... or this share of failures over the window
    breaker_window_s: int = 30
    breaker_min_requests: int = 20  # the ratio applies from this many calls in the window
    breaker_cooldown_ms: int = 10_000  # open this long before one probe goes through


@dataclass(frozen=True, slots=True)
class ModelAlias:
    """One ``[models]`` entry: a public model name served as named models on upstreams."""

    name: str
    targets: tuple[tuple[str, str], ...]  # (upstream name, model name on that upstream)


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
    admin: bool = False  # sees every tenant's objects (files, batches, responses, ...)
    team: str | None = None  # carried on usage records and log lines
    passthrough: tuple[str, ...] = ()  # token-spending families allowed despite token limits
    budgets: Budgets = field(default_factory=Budgets)  # usd_* in nano-USD


@dataclass(frozen=True, slots=True)
class PassthroughConfig:
    """``[passthrough.<family>]``: the pass-through families forwarded, each with its methods."""

    enabled: tuple[tuple[str, frozenset[str]], ...] = tuple(
        (name, FAMILIES[name].methods) for name in DEFAULT_FAMILIES
    )

    def methods(self, family: str) -> frozenset[str]:
        """The methods ``family`` is forwarded with (empty: not enabled)."""
        for name, methods in self.enabled:
            if name == family:
                return methods
        return frozenset()


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """``[telemetry]``: logs, metrics (Prometheus ``/metrics`` and OTLP) and traces (OTLP)."""

    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    service_name: str = "sentinel"
    instance_id: str | None = None  # default: <hostname>-<pid>
    otlp_endpoint: str | None = None  # absent: no OTLP export, no traces
    otlp_protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    export_interval_ms: int = 10_000
    metrics_public: bool = False  # false: /metrics needs the admin token


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
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    aliases: tuple[ModelAlias, ...] = ()
    passthrough: PassthroughConfig = field(default_factory=PassthroughConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)  # service and JWTs
    cors: CorsConfig | None = None  # absent: no CORS layer at all
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    money: MoneyConfig = field(default_factory=MoneyConfig)  # [money] and [prices]
    budgets: BudgetSettings = field(default_factory=BudgetSettings)  # [budgets], [teams.*]
    credits: CreditsConfig | None = None  # [credits]: an external ledger (None: Sentinel's own)
    guardrails: GuardrailsConfig = field(default_factory=GuardrailsConfig)  # [[rules]], [pii]
    source: Path | None = None  # the file it came from; None for embedded defaults

    def secrets(self) -> tuple[str, ...]:
        """Every secret string in the config, for the log redaction processor."""
        found = [key for u in self.upstreams for key in u.keys]
        found.extend(t.token for t in self.admin.named_tokens())
        if self.usage.webhook is not None:
            found.extend(value for _, value in self.usage.webhook.headers)
        if self.budgets.webhook is not None:
            found.extend(value for _, value in self.budgets.webhook.headers)
        if self.redis is not None:
            passwords = (
                urlsplit(self.redis.url).password,
                self.redis.password,
                self.redis.sentinel_password,
            )
            found.extend(password for password in passwords if password)
        found.extend(self.identity.secrets())
        if self.credits is not None and self.credits.token:
            found.append(self.credits.token)
        return tuple(found)
