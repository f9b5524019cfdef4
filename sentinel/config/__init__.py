"""Sentinel's configuration: frozen dataclasses, parsed and validated once.

Only this package reads the environment. ``load_config`` turns a TOML file into a ``Config``
and reports every problem at once, each with its path, by raising ``ConfigError``.
"""

from sentinel.config.admin import AdminConfig
from sentinel.config.load import (
    ConfigError,
    embedded_config,
    format_key_hash,
    hash_key,
    load_config,
    resolve_config_path,
)
from sentinel.config.model import (
    Config,
    KeyConfig,
    ModelAlias,
    PassthroughConfig,
    RedisConfig,
    RoutingConfig,
    ServerConfig,
    TelemetryConfig,
    TokensConfig,
    UpstreamConfig,
)

__all__ = [
    "AdminConfig",
    "Config",
    "ConfigError",
    "KeyConfig",
    "ModelAlias",
    "PassthroughConfig",
    "RedisConfig",
    "RoutingConfig",
    "ServerConfig",
    "TelemetryConfig",
    "TokensConfig",
    "UpstreamConfig",
    "embedded_config",
    "format_key_hash",
    "hash_key",
    "load_config",
    "resolve_config_path",
]
