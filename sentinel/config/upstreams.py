"""Reading ``[[upstreams]]``, ``[routing]`` and ``[models]``: where requests go, and failover."""

from __future__ import annotations

import math
from urllib.parse import quote

from sentinel.config.model import ModelAlias, RoutingConfig, UpstreamConfig, UpstreamKind
from sentinel.config.table import (
    HEADER_VALUE_CONTROL,
    TOKEN,
    Table,
    http_url_problem,
    kind,
    name_problem,
    show,
)

__all__ = ["read_aliases", "read_headers", "read_routing", "read_upstreams"]

_KINDS: tuple[UpstreamKind, ...] = ("openai", "azure", "openai-compatible")


def read_upstreams(tables: list[Table]) -> tuple[UpstreamConfig, ...]:
    """Every ``[[upstreams]]`` entry; duplicate names are problems."""
    upstreams = tuple(_upstream(t) for t in tables)
    first: dict[str, Table] = {}
    for t, upstream in zip(tables, upstreams, strict=True):
        if upstream.name and upstream.name in first:
            t.problem(
                "name", f"duplicate name {upstream.name!r} (also {first[upstream.name].where()})"
            )
        first.setdefault(upstream.name, t)
    return upstreams


def _upstream(t: Table) -> UpstreamConfig:
    d = UpstreamConfig(name="", base_url="")
    upstream_kind = t.choice("kind", _KINDS, d.kind)
    upstream = UpstreamConfig(
        name=t.string("name", required=True, check=name_problem),
        base_url=t.string("base_url", required=True, check=http_url_problem).rstrip("/"),
        api_key=t.secret("api_key"),
        models=t.string_list("models", d.models),
        connect_timeout_ms=t.integer("connect_timeout_ms", d.connect_timeout_ms, minimum=1),
        first_byte_timeout_ms=t.integer(
            "first_byte_timeout_ms", d.first_byte_timeout_ms, minimum=1
        ),
        idle_timeout_ms=t.integer("idle_timeout_ms", d.idle_timeout_ms, minimum=1),
        timeout_ms=t.integer("timeout_ms", d.timeout_ms, minimum=1),
        max_connections=t.integer("max_connections", d.max_connections, minimum=1),
        headers=read_headers(t),
        kind=upstream_kind,
        priority=t.integer("priority", d.priority, minimum=0),
        weight=t.integer("weight", d.weight, minimum=1),
        api_keys=_api_keys(t),
        api_version=_api_version(t, upstream_kind),
        deployments=_deployments(t, upstream_kind),
        health_check_interval_s=t.integer(
            "health_check_interval_s", d.health_check_interval_s, minimum=0
        ),
    )
    if upstream.api_key and upstream.api_keys:
        t.problem("api_keys", "set either 'api_key' or 'api_keys', not both")
    t.finish()
    return upstream


def _api_keys(t: Table) -> tuple[str, ...]:
    value = t.take("api_keys")
    if value is None:
        return ()
    if not isinstance(value, list) or not value:
        t.problem("api_keys", f"expected a non-empty array of secrets, got {show(value)}")
        return ()
    keys: list[str] = []
    for i, item in enumerate(value):
        # Each item is read as a secret of its own, so env:NAME works and values never show.
        secret = Table({f"api_keys[{i}]": item}, t.path, t.problems, t.env).secret(f"api_keys[{i}]")
        if secret is not None:
            keys.append(secret)
    return tuple(keys)


def _api_version(t: Table, upstream_kind: str) -> str | None:
    if upstream_kind != "azure":
        if t.has("api_version"):
            t.take("api_version")
            t.problem("api_version", "only azure upstreams take an api_version")
        return None
    version = t.string("api_version", required=True)
    if version and version != quote(version, safe="-._~"):
        t.problem(
            "api_version", f"expected a plain version such as '2024-10-21', got {show(version)}"
        )
        return None
    return version or None


def _deployments(t: Table, upstream_kind: str) -> tuple[tuple[str, str], ...]:
    value = t.take("deployments")
    if value is None:
        return ()
    if upstream_kind != "azure":
        t.problem("deployments", "only azure upstreams map models to deployments")
        return ()
    if not isinstance(value, dict):
        t.problem("deployments", f'expected a table of model = "deployment", got {show(value)}')
        return ()
    pairs = []
    for model, deployment in value.items():
        if not isinstance(deployment, str) or not deployment:
            t.problem(f"deployments.{model}", f"expected a deployment name, got {show(deployment)}")
        elif deployment != quote(deployment, safe="-._~"):
            t.problem(
                f"deployments.{model}",
                f"expected letters, digits, '-', '_', '.' or '~', got {show(deployment)}",
            )
        else:
            pairs.append((model, deployment))
    return tuple(pairs)


def read_headers(t: Table, *, secret_values: bool = False) -> tuple[tuple[str, str], ...]:
    """``headers = { name = "value" }``; with ``secret_values``, values may be ``env:NAME``."""
    value = t.take("headers")
    if value is None:
        return ()
    if not isinstance(value, dict):
        t.problem("headers", f"expected a table of name = value strings, got {show(value)}")
        return ()
    pairs = []
    for name, item in value.items():
        path = f"headers.{name}"
        if not TOKEN.fullmatch(name):
            t.problem("headers", f"{show(name)} is not a valid HTTP header name")
        elif not isinstance(item, str):
            t.problem(path, f"expected a string, got {kind(item)}")
        elif secret_values and item.startswith("env:"):
            resolved = Table({name: item}, f"{t.where('headers')}", t.problems, t.env)
            secret = resolved.secret(name)
            if secret is not None and HEADER_VALUE_CONTROL.search(secret):
                t.problem(path, "must not contain CR, LF, NUL or other control characters")
            elif secret is not None:
                pairs.append((name, secret))
        elif HEADER_VALUE_CONTROL.search(item):
            t.problem(path, "must not contain CR, LF, NUL or other control characters")
        else:
            pairs.append((name, item))
    return tuple(pairs)


def read_routing(t: Table) -> RoutingConfig:
    """``[routing]``: attempts, backoff and breaker settings."""
    d = RoutingConfig()
    routing = RoutingConfig(
        max_attempts=t.integer("max_attempts", d.max_attempts, minimum=1),
        backoff_ms=t.integer("backoff_ms", d.backoff_ms, minimum=0),
        backoff_max_ms=t.integer("backoff_max_ms", d.backoff_max_ms, minimum=0),
        max_retry_after_ms=t.integer("max_retry_after_ms", d.max_retry_after_ms, minimum=0),
        breaker_failures=t.integer("breaker_failures", d.breaker_failures, minimum=1),
        breaker_failure_ratio=_ratio(t, "breaker_failure_ratio", d.breaker_failure_ratio),
        breaker_window_s=t.integer("breaker_window_s", d.breaker_window_s, minimum=1),
        breaker_min_requests=t.integer("breaker_min_requests", d.breaker_min_requests, minimum=1),
        breaker_cooldown_ms=t.integer("breaker_cooldown_ms", d.breaker_cooldown_ms, minimum=1),
    )
    if routing.backoff_max_ms < routing.backoff_ms:
        t.problem("backoff_max_ms", f"must be at least backoff_ms ({routing.backoff_ms})")
    t.finish()
    return routing


def _ratio(t: Table, key: str, default: float) -> float:
    value = t.take(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        t.problem(key, f"expected a number from 0 to 1, got {show(value)}")
        return default
    if not 0 < value <= 1:
        t.problem(key, f"must be greater than 0 and at most 1, got {show(value)}")
        return default
    return float(value)


def read_aliases(t: Table, upstreams: tuple[UpstreamConfig, ...]) -> tuple[ModelAlias, ...]:
    """``[models]``: ``"public" = ["upstream:model", ...]``; every upstream must exist."""
    names = {u.name for u in upstreams}
    aliases = []
    for alias in t.keys():
        value = t.take(alias)
        if not alias:
            t.problem(alias, "an alias needs a name")
            continue
        if not isinstance(value, list) or not value:
            t.problem(alias, f'expected a non-empty array of "upstream:model", got {show(value)}')
            continue
        targets = []
        for i, item in enumerate(value):
            where = f"{alias}[{i}]"
            upstream, colon, model = item.partition(":") if isinstance(item, str) else ("", "", "")
            if not colon or not upstream or not model:
                t.problem(where, f'expected "upstream:model", got {show(item)}')
            elif upstream not in names:
                t.problem(where, f"no upstream is named {upstream!r}")
            else:
                targets.append((upstream, model))
        if len(targets) == len(value):
            aliases.append(ModelAlias(name=alias, targets=tuple(targets)))
    t.finish()
    return tuple(aliases)
