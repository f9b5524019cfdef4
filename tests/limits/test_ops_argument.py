"""The batch argument of the Lua functions: one flat msgpack array, as Redis decodes it."""

from __future__ import annotations

import msgpack
import pytest
from redis.asyncio import Redis

from sentinel.redis_io.functions import op_fields, ops_argument

_ECHO = """#!lua name=sentinel_test_echo
redis.register_function('sentinel_test_echo', function(keys, args)
  local A, out = cmsgpack.unpack(args[1]), {}
  for i = 1, #A do
    local value = A[i]
    if type(value) == 'number' then value = string.format('%d', value) end
    out[i] = value
  end
  return out
end)
"""
"""A function that answers the flat array it decoded, numbers as the digits Lua holds."""

_EDGES: list[int | str] = [0, 1, -1, 127, 128, 255, 256, -32, -33, 2**31, -(2**31) - 1]
_EDGES += [2**53 - 1, -(2**53) + 1, 1_765_000_000_123, "", "admit", "day:20261208", "é ✓"]


@pytest.mark.parametrize("size", [0, 1, 15, 16, 65_535, 65_536])
def test_fields_of_any_count_unpack_in_place(size: int) -> None:
    """Every array header msgpack has (fix, 16 and 32 bits) is cut off, whatever the count."""
    fields: list[int | str] = [n % 300 - 100 for n in range(size)]
    count, packed = op_fields(fields)
    assert count == size
    assert msgpack.unpackb(ops_argument([(1, 2, (count, packed))])) == [1, 2, size, *fields]


def test_operations_follow_one_another_with_their_keys() -> None:
    """Each operation: its first key's index, its number of keys, its number of fields, then
    the fields; key indexes past one byte's small numbers are packed too."""
    ops = [
        (1, 5, op_fields(["admit", 1, "r"])),
        (128, 3, op_fields([])),
        (70_000, 11, op_fields(_EDGES)),
    ]
    flat = msgpack.unpackb(ops_argument(ops))
    assert flat == [1, 5, 3, "admit", 1, "r", 128, 3, 0, 70_000, 11, len(_EDGES), *_EDGES]


async def test_redis_decodes_every_number_and_string_exactly(redis: Redis) -> None:
    """Through Redis's own cmsgpack: whole numbers up to 2^53 - 1 of either sign stay exact,
    and strings (UTF-8 included) arrive byte for byte."""
    await redis.function_load(_ECHO, replace=True)
    try:
        argument = ops_argument([(3, 2, op_fields(_EDGES))])
        got = await redis.fcall("sentinel_test_echo", 0, argument)
        assert [value.decode() for value in got] == [
            str(value) for value in [3, 2, len(_EDGES), *_EDGES]
        ]
    finally:
        await redis.function_delete("sentinel_test_echo")
