"""The public surface of sentinel.limits and its Redis key layout."""

from __future__ import annotations

import sentinel.limits
from sentinel.limits import redis_keys


def test_public_names() -> None:
    """The package exports exactly its documented API."""
    assert sorted(sentinel.limits.__all__) == sorted(
        [
            "DEGRADED_HEADER",
            "REDIS_BREAKER",
            "Admission",
            "Decision",
            "Dimension",
            "GuardStats",
            "GuardedStore",
            "KeyState",
            "LimitSpec",
            "LimitStore",
            "MemoryStore",
            "MergingStore",
            "OnUnavailable",
            "Period",
            "RateWindow",
            "RedisStore",
            "Refusal",
            "Reservation",
            "StoreUnavailable",
            "Timing",
            "WindowUsage",
            "current_period",
            "key_spec",
            "duration",
            "local_share",
            "rate_limit_headers",
            "redis_keys",
            "refusal_error",
            "reservation_tokens",
            "timing_of",
        ]
    )


def test_every_key_of_a_name_shares_one_hash_tag() -> None:
    """All five keys carry the key name as their hash tag, so one Lua call hits one slot."""
    assert redis_keys("sentinel", "team-a") == [
        "sentinel:{team-a}:requests",
        "sentinel:{team-a}:tokens",
        "sentinel:{team-a}:quotas",
        "sentinel:{team-a}:leases",
        "sentinel:{team-a}:settled",
    ]


def test_braces_in_a_name_cannot_break_the_hash_tag() -> None:
    """Braces and percent signs are encoded, so the tag is always the whole name."""
    assert redis_keys("s", "a}b{%")[0] == "s:{a%7Db%7B%25}:requests"
    assert redis_keys("s", "")[0] == "s:{%}:requests"


def test_lua_library_ships_with_the_package() -> None:
    """The function library is a package resource whose header names its keys, arguments and
    units, loaded under a name that carries its source's digest."""
    from importlib.resources import files

    from sentinel.redis_io.functions import RedisFunction

    text = files("sentinel.limits").joinpath("limits.lua").read_text(encoding="utf-8")
    assert text.startswith("--[[ limits.lua:")
    assert "K[1]" in text and "ARGV" in text and "(ms)" in text
    function = RedisFunction("sentinel.limits", "limits.lua", "sentinel_limits", views=True)
    assert function.name.startswith("sentinel_limits_") and "@NAME@" not in function.source
    assert function.source.startswith(f"#!lua name={function.name}\n--[[ views.lua:")
    assert text.replace("@NAME@", function.name) in function.source
