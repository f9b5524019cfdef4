"""Loading a config file (or the embedded defaults); the only code that reads the environment."""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sentinel.config.admin import read_admin
from sentinel.config.credits import read_credits
from sentinel.config.edge import read_compression, read_cors
from sentinel.config.families import SPENDING_FAMILIES
from sentinel.config.guardrails import read_guardrails
from sentinel.config.identity import read_identity
from sentinel.config.limits import LimitDefaults
from sentinel.config.model import (
    Config,
    KeyConfig,
    RedisConfig,
    ServerConfig,
    TelemetryConfig,
    TokensConfig,
    UpstreamConfig,
)
from sentinel.config.money import read_money
from sentinel.config.passthrough import read_passthrough
from sentinel.config.spending import read_budget_settings, read_budgets
from sentinel.config.table import (
    MAX_KEY_BYTES,
    Table,
    bind_problem,
    digest_problem,
    http_url_problem,
    name_problem,
    redis_url_problem,
    show,
    unknown_choice,
)
from sentinel.config.upstreams import read_aliases, read_headers, read_routing, read_upstreams
from sentinel.config.usage import (
    UsageSettings,
    WebhookSettings,
    default_spool_dir,
    default_state_dir,
)

# --- errors and key digests ------------------------------------------------------------------


class ConfigError(Exception):
    """The configuration is unusable; ``problems`` lists every reason, each with its path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems)
        self.problems = list(problems)

    def __str__(self) -> str:
        return "\n".join(self.problems)


def hash_key(key: str) -> bytes:
    """The SHA-256 digest of a caller's key, the only form in which Sentinel keeps it."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def format_key_hash(digest: bytes) -> str:
    """The ``sha256:<hex>`` spelling of a key digest, as written in ``key_sha256``."""
    return "sha256:" + digest.hex()


# --- entry points ----------------------------------------------------------------------------


def resolve_config_path(cli_path: str | None, env: Mapping[str, str] | None = None) -> Path | None:
    """The config file to load: ``--config``, else ``$SENTINEL_CONFIG``, else ``./sentinel.toml``.

    None means there is no file and the embedded defaults apply. An explicit path is returned
    even if it does not exist, so that ``load_config`` reports it instead of silently ignoring it.
    """
    if cli_path is not None:
        return Path(cli_path)
    from_env = (os.environ if env is None else env).get("SENTINEL_CONFIG")
    if from_env:
        return Path(from_env)
    local = Path("sentinel.toml")
    return local if local.exists() else None


def embedded_config(env: Mapping[str, str] | None, dev_key: str) -> Config:
    """The defaults used without any config file: OpenAI upstream, one ``dev`` key."""
    env = os.environ if env is None else env
    upstream = UpstreamConfig(
        name="openai",
        base_url="https://api.openai.com/v1",
        api_key=env.get("OPENAI_API_KEY") or None,
    )
    return Config(
        upstreams=(upstream,),
        keys=(KeyConfig(name="dev", key_sha256=hash_key(dev_key)),),
        server=ServerConfig(state_dir=default_state_dir(env, _home(env))),
    )


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, validate and resolve the TOML file at ``path``; ``ConfigError`` lists every problem."""
    raw = _read_toml(path)
    problems: list[str] = []
    config = _build(Table(raw, "", problems, os.environ if env is None else env), path)
    if problems:
        raise ConfigError(problems)
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        # utf-8-sig: editors on Windows like to start the file with a byte-order mark.
        return tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError:
        problem = f"{path}: no such file"
    except OSError as error:
        problem = f"{path}: cannot read ({error.strerror or error})"
    except UnicodeDecodeError as error:
        problem = f"{path}: not UTF-8 text (bad byte at offset {error.start})"
    except tomllib.TOMLDecodeError as error:
        problem = f"{path}: invalid TOML: {error}"  # the message carries line and column
    raise ConfigError([problem])


def _build(root: Table, source: Path) -> Config:
    server = _server(root.table("server"))
    redis = _redis(root.table("redis")) if root.has("redis") else None
    admin = read_admin(root.table("admin"))
    upstreams = read_upstreams(root.tables("upstreams", required=True))
    routing = read_routing(root.table("routing"))
    aliases = read_aliases(root.table("models"), upstreams)
    keys = _keys(root.tables("keys"))
    telemetry = _telemetry(root.table("telemetry"))
    tokens = _tokens(root.table("tokens"))
    limits = _limits(root.table("limits"))
    usage = _usage(root.table("usage"))
    passthrough = read_passthrough(root.table("passthrough"))
    identity = read_identity(root.table("identity"))
    cors = read_cors(root.table("cors")) if root.has("cors") else None
    compression = read_compression(root.table("compression"))
    money = read_money(root.table("money"), root.table("prices"), {u.name for u in upstreams})
    guardrails = read_guardrails(root.tables("rules"), root.table("pii"))
    budgets = read_budget_settings(
        root.table("budgets"),
        root.table("teams"),
        read_webhook=_webhook,
        cluster=redis is not None and redis.cluster,
    )
    longest_ms = max((u.timeout_ms for u in upstreams), default=0)
    credits = read_credits(root.table("credits"), longest_ms) if root.has("credits") else None
    root.finish()
    if server.workers > 1 and redis is None:
        root.problem(
            "server.workers",
            "more than one worker needs [redis]; the in-memory store is per process",
        )
    return Config(
        upstreams=upstreams,
        keys=keys,
        server=server,
        redis=redis,
        admin=admin,
        telemetry=telemetry,
        tokens=tokens,
        limits=limits,
        usage=usage,
        routing=routing,
        aliases=aliases,
        passthrough=passthrough,
        identity=identity,
        cors=cors,
        compression=compression,
        money=money,
        guardrails=guardrails,
        budgets=budgets,
        credits=credits,
        source=source,
    )


def _server(t: Table) -> ServerConfig:
    d = ServerConfig()
    server = ServerConfig(
        bind=t.string("bind", d.bind, check=bind_problem),
        workers=t.integer("workers", d.workers, minimum=1),
        max_body_bytes=t.integer("max_body_bytes", d.max_body_bytes, minimum=1),
        shutdown_grace_s=t.integer("shutdown_grace_s", d.shutdown_grace_s, minimum=0),
        header_timeout_ms=t.integer("header_timeout_ms", d.header_timeout_ms, minimum=100),
        body_timeout_ms=t.integer("body_timeout_ms", d.body_timeout_ms, minimum=100),
        write_timeout_ms=t.integer("write_timeout_ms", d.write_timeout_ms, minimum=100),
        max_client_connections=t.integer(
            "max_client_connections", d.max_client_connections, minimum=1
        ),
        engine=t.choice("engine", ("hypercorn", "uvicorn"), d.engine),
        state_dir=Path(state)
        if (state := t.string("state_dir"))
        else default_state_dir(t.env, _home(t.env)),
    )
    t.finish()
    return server


def _redis(t: Table) -> RedisConfig:
    d = RedisConfig()
    with_sentinels = t.has("sentinels")  # the master comes from them, not from a URL
    redis = RedisConfig(
        url=t.string("url", "" if with_sentinels else d.url, check=redis_url_problem),
        timeout_ms=t.integer("timeout_ms", d.timeout_ms, minimum=1),
        on_unavailable=t.choice("on_unavailable", ("local", "deny"), d.on_unavailable),
        replicas=t.integer("replicas", d.replicas, minimum=1),
        cluster=t.boolean("cluster", d.cluster),
        sentinels=_sentinels(t),
        master_name=t.string("master_name", required=with_sentinels, check=name_problem),
        sentinel_password=t.secret("sentinel_password"),
        password=t.secret("password"),
        db=t.integer("db", d.db, minimum=0),
    )
    if with_sentinels:
        if t.has("url"):
            t.problem("url", "cannot be combined with redis.sentinels (they name the master)")
        if redis.cluster:
            t.problem("cluster", "cannot be combined with redis.sentinels")
    else:
        for key in ("master_name", "sentinel_password"):
            if t.has(key):
                t.problem(key, "only with redis.sentinels")
        for key in ("password", "db"):
            if t.has(key):
                t.problem(key, "only with redis.sentinels (a url carries its own)")
    t.finish()
    return redis


def _sentinels(t: Table) -> tuple[str, ...]:
    """``redis.sentinels``: every entry a ``host:port``; () when any is not."""
    value = t.take("sentinels")
    if value is None:
        return ()
    if not isinstance(value, list) or not value:
        t.problem("sentinels", f'expected a non-empty array of "host:port", got {show(value)}')
        return ()
    problems = [(i, _sentinel_problem(entry)) for i, entry in enumerate(value)]
    for i, problem in problems:
        if problem:
            t.problem(f"sentinels[{i}]", problem)
    return () if any(problem for _, problem in problems) else tuple(value)


def _sentinel_problem(entry: object) -> str | None:
    """Why ``entry`` is not a sentinel's ``host:port``, or None."""
    if not isinstance(entry, str):
        return f'expected a "host:port" string, got {show(entry)}'
    problem = bind_problem(entry)
    if problem is None and int(entry.rpartition(":")[2]) == 0:
        problem = f"expected a port from 1 to 65535, got {show(entry)}"
    return problem


def _telemetry(t: Table) -> TelemetryConfig:
    d = TelemetryConfig()
    endpoint = t.string("otlp_endpoint", check=http_url_problem)
    telemetry = TelemetryConfig(
        log_format=t.choice("log_format", ("json", "console"), d.log_format),
        log_level=t.choice("log_level", ("debug", "info", "warning", "error"), d.log_level),
        service_name=t.string("service_name", d.service_name, check=name_problem),
        instance_id=t.string("instance_id", check=name_problem) or None,
        otlp_endpoint=endpoint or None,
        otlp_protocol=t.choice("otlp_protocol", ("http/protobuf", "grpc"), d.otlp_protocol),
        export_interval_ms=t.integer("export_interval_ms", d.export_interval_ms, minimum=100),
        metrics_public=t.boolean("metrics_public", d.metrics_public),
    )
    t.finish()
    return telemetry


def _tokens(t: Table) -> TokensConfig:
    d = TokensConfig()
    tokens = TokensConfig(
        default_encoding=t.choice(
            "default_encoding", ("cl100k_base", "o200k_base"), d.default_encoding
        ),
    )
    t.finish()
    return tokens


def _limits(t: Table) -> LimitDefaults:
    d = LimitDefaults()
    limits = LimitDefaults(
        **_limit_fields(t),
        timezone=t.string("timezone", d.timezone),
        default_completion_reserve=t.integer(
            "default_completion_reserve", d.default_completion_reserve, minimum=0
        ),
        bucket_ms=t.integer("bucket_ms", d.bucket_ms, minimum=1),
        lease_ttl_ms=t.integer("lease_ttl_ms", d.lease_ttl_ms, minimum=1),
        parallel_retry_ms=t.integer("parallel_retry_ms", d.parallel_retry_ms, minimum=1),
    )
    _report(t, limits.problems())
    t.finish()
    return limits


_LIMIT_FIELDS = (
    "rpm",
    "tpm",
    "max_parallel",
    "tokens_per_day",
    "tokens_per_week",
    "tokens_per_month",
)


def _limit_fields(t: Table) -> dict[str, int | None]:
    """The limits a ``[[keys]]`` entry or ``[limits]`` may set (absent: None)."""
    return {name: t.optional_integer(name, minimum=0) for name in _LIMIT_FIELDS}


def _usage(t: Table) -> UsageSettings:
    d = UsageSettings()
    spool = t.string("spool_dir")
    jsonl = t.string("jsonl_path")
    usage = UsageSettings(
        spool_dir=Path(spool) if spool else default_spool_dir(t.env, _home(t.env)),
        capacity=t.integer("capacity", d.capacity, minimum=1),
        batch_size=t.integer("batch_size", d.batch_size, minimum=1),
        flush_interval_ms=t.integer("flush_interval_ms", d.flush_interval_ms, minimum=1),
        replay_interval_ms=t.integer("replay_interval_ms", d.replay_interval_ms, minimum=1),
        close_timeout_ms=t.integer("close_timeout_ms", d.close_timeout_ms, minimum=1),
        jsonl_path=Path(jsonl) if jsonl else None,
        jsonl_rotate_bytes=t.integer("jsonl_rotate_bytes", d.jsonl_rotate_bytes, minimum=1),
        jsonl_keep=t.integer("jsonl_keep", d.jsonl_keep, minimum=0),
        webhook=_webhook(t.table("webhook")) if t.has("webhook") else None,
        redis_counters=t.boolean("redis_counters", d.redis_counters),
        drain_on_disconnect=t.boolean("drain_on_disconnect", d.drain_on_disconnect),
        drain_timeout_ms=t.integer("drain_timeout_ms", d.drain_timeout_ms, minimum=1),
        max_drains=t.integer("max_drains", d.max_drains, minimum=1),
    )
    _report(t, [p for p in usage.problems() if not p.startswith("webhook.")])
    t.finish()
    return usage


def _webhook(t: Table) -> WebhookSettings:
    d = WebhookSettings(url="")
    hook = WebhookSettings(
        url=t.string("url", required=True, check=http_url_problem),
        headers=read_headers(t, secret_values=True),
        timeout_ms=t.integer("timeout_ms", d.timeout_ms, minimum=1),
        max_attempts=t.integer("max_attempts", d.max_attempts, minimum=1),
        backoff_ms=t.integer("backoff_ms", d.backoff_ms, minimum=0),
        backoff_max_ms=t.integer("backoff_max_ms", d.backoff_max_ms, minimum=0),
        breaker_failures=t.integer("breaker_failures", d.breaker_failures, minimum=1),
        breaker_reset_ms=t.integer("breaker_reset_ms", d.breaker_reset_ms, minimum=0),
    )
    if hook.url:
        _report(t, [p for p in hook.problems() if not p.startswith("url:")])
    t.finish()
    return hook


def _home(env: Mapping[str, str]) -> Path | None:
    home = env.get("HOME", "")
    return Path(home) if home and Path(home).is_absolute() else None


def _report(t: Table, problems: list[str]) -> None:
    """Record a settings object's own ``"field: message"`` problems under ``t``'s path."""
    for problem in problems:
        field, _, message = problem.partition(": ")
        if not any(p.startswith(t.where(field) + ":") for p in t.problems):
            t.problem(field, message)


def _keys(tables: list[Table]) -> tuple[KeyConfig, ...]:
    keys = tuple(_key(t) for t in tables)
    _report_duplicates(tables, [k.name for k in keys], "name")
    first: dict[bytes, Table] = {}
    for t, key in zip(tables, keys, strict=True):
        if key.key_sha256 and key.key_sha256 in first:
            t.problem(None, f"same key as {first[key.key_sha256].where()}")
        first.setdefault(key.key_sha256, t)
    return keys


def _key(t: Table) -> KeyConfig:
    key = KeyConfig(
        name=t.string("name", required=True, check=name_problem),
        key_sha256=_key_digest(t),
        **_limit_fields(t),
        models=t.string_list("models", ()) or None if t.has("models") else None,
        admin=t.boolean("admin", False),
        team=t.string("team", check=name_problem) or None,
        passthrough=_names(t, "passthrough", SPENDING_FAMILIES),
        budgets=read_budgets(t),
    )
    t.finish()
    return key


def _names(t: Table, key: str, known: frozenset[str]) -> tuple[str, ...]:
    """A list of names from ``known``; each unknown one is a problem with a suggestion."""
    names = t.string_list(key, ())
    for i, name in enumerate(names):
        if name not in known:
            t.problem(f"{key}[{i}]", unknown_choice(name, known))
    return tuple(n for n in names if n in known)


def _key_digest(t: Table) -> bytes:
    """The digest of ``key`` or the parsed ``key_sha256``; b"" when neither is usable."""
    if t.has("key") == t.has("key_sha256"):
        t.take("key")
        t.take("key_sha256")
        t.problem(None, "set exactly one of 'key' or 'key_sha256'")
        return b""
    if t.has("key_sha256"):
        text = t.string("key_sha256", check=digest_problem)
        return bytes.fromhex(text.removeprefix("sha256:")) if text else b""
    key = t.secret("key", min_length=8)
    if key is not None and len(key.encode("utf-8")) > MAX_KEY_BYTES:
        t.problem("key", f"must be at most {MAX_KEY_BYTES} bytes")
        return b""
    if key is not None and key != key.strip():
        t.problem("key", "must not start or end with whitespace (clients' keys are trimmed)")
        return b""
    return hash_key(key) if key is not None else b""


def _report_duplicates(tables: list[Table], values: list[str], key: str) -> None:
    first: dict[str, Table] = {}
    for t, value in zip(tables, values, strict=True):
        if value and value in first:
            t.problem(key, f"duplicate {key} {value!r} (also {first[value].where()})")
        first.setdefault(value, t)
