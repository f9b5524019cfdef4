"""Sentinel's I/O with Redis: the client of ``[redis]``, hash-tagged key names, and the Lua
function libraries whose queued operations go out together, in one call."""

from sentinel.redis_io.batching import LATE_REPLY_TURNS, FunctionBatcher
from sentinel.redis_io.client import hash_tag, open_redis, warm_up
from sentinel.redis_io.functions import RedisFunction

__all__ = [
    "LATE_REPLY_TURNS",
    "FunctionBatcher",
    "RedisFunction",
    "hash_tag",
    "open_redis",
    "warm_up",
]
