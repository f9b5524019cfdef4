"""Usage settings: defaults, validation messages and the spool directory default."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from sentinel.config.usage import UsageSettings, WebhookSettings, default_spool_dir
from sentinel.usage.assembly import build_tracker
from sentinel.usage.sinks.jsonl import JsonlSink
from sentinel.usage.sinks.webhook import WebhookSink


def test_defaults() -> None:
    """The defaults are the documented ones and valid."""
    settings = UsageSettings()
    assert (settings.capacity, settings.batch_size, settings.flush_interval_ms) == (
        10_000,
        100,
        1_000,
    )
    assert (settings.replay_interval_ms, settings.close_timeout_ms) == (5_000, 10_000)
    assert (settings.jsonl_path, settings.webhook, settings.redis_counters) == (None, None, True)
    assert settings.problems() == []
    assert WebhookSettings(url="https://example.com/usage").problems() == []


def test_every_problem_is_reported_with_its_field() -> None:
    """Invalid values are all reported together, each naming its field."""
    settings = UsageSettings(
        capacity=0,
        batch_size=5,
        flush_interval_ms=-1,
        jsonl_keep=-1,
        webhook=WebhookSettings(url="ftp://x", max_attempts=0, backoff_ms=500, backoff_max_ms=100),
    )
    problems = settings.problems()
    assert [p.split(":")[0] for p in problems] == [
        "capacity",
        "flush_interval_ms",
        "jsonl_keep",
        "batch_size",
        "webhook.url",
        "webhook.max_attempts",
        "webhook.backoff_max_ms",
    ]


def test_spool_dir_prefers_xdg_state_home(tmp_path: Path) -> None:
    """$XDG_STATE_HOME wins when absolute; a relative one is ignored as the spec says."""
    home = tmp_path / "home"
    assert default_spool_dir({"XDG_STATE_HOME": "/var/state"}, home) == Path(
        "/var/state/sentinel/spool"
    )
    assert (
        default_spool_dir({"XDG_STATE_HOME": "rel"}, home) == home / ".local/state/sentinel/spool"
    )
    assert default_spool_dir({}, home) == home / ".local/state/sentinel/spool"


def test_spool_dir_without_home_is_relative_not_tmp() -> None:
    """With no usable home the spool goes under the working directory, never /tmp."""
    assert default_spool_dir({}, None) == Path(".sentinel/spool")
    assert default_spool_dir({}, Path("/")) == Path(".sentinel/spool")


async def test_build_tracker_assembles_configured_sinks(tmp_path: Path) -> None:
    """build_tracker() turns on the configured sinks and creates the spool only then."""
    async with aiohttp.ClientSession() as session:
        idle = build_tracker(UsageSettings(spool_dir=tmp_path / "unused"), session=session)
        assert idle.sinks == ()
        assert not (tmp_path / "unused").exists()
        settings = UsageSettings(
            spool_dir=tmp_path / "spool",
            jsonl_path=tmp_path / "usage.jsonl",
            webhook=WebhookSettings(url="http://127.0.0.1:9/usage"),
        )
        tracker = build_tracker(settings, session=session)
        assert [type(s) for s in tracker.sinks] == [JsonlSink, WebhookSink]
        assert (tmp_path / "spool").is_dir()
        await tracker.aclose()
        await idle.aclose()
