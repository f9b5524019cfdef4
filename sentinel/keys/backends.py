"""Which key store a configuration gets: Redis with ``[redis]``, else the state file."""

from __future__ import annotations

from redis.asyncio import Redis, RedisCluster

from sentinel.config import Config
from sentinel.keys.redis_store import RedisKeyStore
from sentinel.keys.source import RuntimeKeys
from sentinel.keys.sqlite_store import SqliteKeyStore
from sentinel.keys.store import KeyStore
from sentinel.statefile import STATE_FILE

__all__ = ["open_runtime_keys"]


def open_runtime_keys(config: Config, redis: Redis | RedisCluster | None) -> RuntimeKeys | None:
    """The runtime keys of ``config``, or None where there can be none.

    With ``[redis]`` they are always on (another replica may create keys). Without it the
    state file is opened when an admin token can create keys or keys were created before,
    so that a gateway without either never writes to the state directory.
    """
    admin = config.admin
    store: KeyStore
    if config.redis is not None and redis is not None:
        store = RedisKeyStore(
            redis,
            config.redis.timeout_ms,
            audit_retention_days=admin.audit_retention_days,
            audit_max_entries=admin.audit_max_entries,
        )
    elif admin.is_enabled or (config.server.state_dir / STATE_FILE).exists():
        store = SqliteKeyStore(
            config.server.state_dir,
            audit_retention_days=admin.audit_retention_days,
            audit_max_entries=admin.audit_max_entries,
        )
    else:
        return None
    return RuntimeKeys(store, config.limits)
