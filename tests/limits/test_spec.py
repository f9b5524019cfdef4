"""Limit specs, local shares, reservation sizes and the [limits] settings."""

from __future__ import annotations

from sentinel.config.limits import LimitDefaults
from sentinel.limits import LimitSpec, Timing, key_spec, local_share, reservation_tokens, timing_of


def test_local_share_divides_every_limit_rounding_down() -> None:
    """Each replica gets floor(limit / replicas) of every dimension; the zone is kept."""
    spec = LimitSpec(rpm=100, tpm=999, max_parallel=3, tokens_per_day=10, timezone="Asia/Tokyo")
    share = local_share(spec, 4)
    assert share == LimitSpec(
        rpm=25, tpm=249, max_parallel=0, tokens_per_day=2, timezone="Asia/Tokyo"
    )


def test_local_share_never_exceeds_the_full_limit() -> None:
    """A replica count below 1 cannot loosen a limit."""
    spec = LimitSpec(rpm=100)
    assert local_share(spec, 0) == spec
    assert local_share(spec, -3) == spec


CHAT = {"caps": ("max_completion_tokens", "max_tokens"), "choices": ("n",)}
COMPLETIONS = {"caps": ("max_tokens",), "choices": ("n", "best_of")}
RESPONSES: dict[str, tuple[str, ...]] = {"caps": ("max_output_tokens",), "choices": ()}


def test_reservation_is_prompt_plus_completion_cap() -> None:
    """max_tokens is the completion cap when no newer field is set."""
    assert reservation_tokens(120, {"max_tokens": 300}, 4096, **CHAT) == 420


def test_reservation_takes_the_largest_of_two_caps() -> None:
    """With both of chat's caps set, the larger is reserved: which one a provider honours is
    not Sentinel's to guess, and guessing low would let a request overshoot its budget."""
    body = {"max_tokens": 300, "max_completion_tokens": 50}
    assert reservation_tokens(10, body, 4096, **CHAT) == 310


def test_reservation_reads_the_responses_api_cap() -> None:
    """The Responses API's max_output_tokens is a completion cap too."""
    assert reservation_tokens(10, {"max_output_tokens": 90}, 4096, **RESPONSES) == 100


def test_reservation_ignores_another_apis_cap() -> None:
    """A chat request cannot lower its reservation with the Responses API's field."""
    body = {"max_output_tokens": 0}
    assert reservation_tokens(10, body, 4096, **CHAT) == 4106


def test_reservation_uses_the_default_without_a_cap() -> None:
    """A request with no cap reserves the configured default completion."""
    assert reservation_tokens(10, {}, 4096, **CHAT) == 4106


def test_reservation_ignores_malformed_caps() -> None:
    """Booleans, strings and negative numbers are not caps."""
    body = {"max_completion_tokens": True, "max_tokens": "9", "max_output_tokens": -1}
    assert reservation_tokens(10, body, 500, **CHAT) == 510


def test_reservation_multiplies_the_cap_by_n_choices() -> None:
    """n=3 can produce three completions, so three caps are reserved."""
    assert reservation_tokens(10, {"max_tokens": 100, "n": 3}, 4096, **CHAT) == 310


def test_reservation_multiplies_by_best_of() -> None:
    """Completions bill every one of best_of candidates, however small n is."""
    body = {"max_tokens": 100, "n": 1, "best_of": 5}
    assert reservation_tokens(10, body, 4096, **COMPLETIONS) == 510


def test_spec_reports_every_bad_field() -> None:
    """Negative limits and unknown time zones are reported with their field names."""
    spec = LimitSpec(rpm=-1, tokens_per_week=-5, timezone="Mars/Olympus")
    assert spec.problems() == [
        "rpm: must be a whole number from 0 to 9007199254740991, got -1",
        "tokens_per_week: must be a whole number from 0 to 9007199254740991, got -5",
        "timezone: unknown time zone 'Mars/Olympus'",
    ]


def test_defaults_fill_what_a_key_leaves_out() -> None:
    """A key's own values win; the rest come from [limits]."""
    defaults = LimitDefaults(rpm=60, tpm=100_000, timezone="Europe/Berlin")
    assert key_spec(defaults, rpm=10) == LimitSpec(rpm=10, tpm=100_000, timezone="Europe/Berlin")


def test_defaults_build_the_store_timing() -> None:
    """bucket_ms, lease_ttl_ms and parallel_retry_ms shape the stores' timing."""
    defaults = LimitDefaults(bucket_ms=500, lease_ttl_ms=30_000, parallel_retry_ms=250)
    assert timing_of(defaults) == Timing(bucket_ms=500, lease_ttl_ms=30_000, parallel_retry_ms=250)


def test_defaults_report_bad_timing() -> None:
    """A bucket that does not divide the minute and a negative reserve are reported."""
    problems = LimitDefaults(bucket_ms=7_000, default_completion_reserve=-1).problems()
    assert problems == [
        "default_completion_reserve: must be >= 0, got -1",
        "bucket_ms: must divide 60000 evenly, got 7000",
    ]


def test_default_settings_are_valid() -> None:
    """The shipped defaults pass validation."""
    assert LimitDefaults().problems() == []
