"""Sentinel's I/O with Redis: the client of ``[redis]``, hash-tagged key names, and Lua script
calls batched into one round trip."""

from sentinel.redis_io.batching import LATE_REPLY_TURNS, ScriptBatcher
from sentinel.redis_io.client import hash_tag, open_redis, warm_up

__all__ = ["LATE_REPLY_TURNS", "ScriptBatcher", "hash_tag", "open_redis", "warm_up"]
