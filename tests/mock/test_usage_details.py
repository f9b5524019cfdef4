"""``x-mock-usage-details``: the mock reports cached and reasoning tokens when asked."""

from __future__ import annotations

import aiohttp
import pytest

from sentinel.mock.settings import KnobError, parse_usage_details
from tests.conftest import Upstream

CHAT = {"model": "o4-mini", "messages": [{"role": "user", "content": "one two three four"}]}


def test_the_header_parses_either_part() -> None:
    """Both parts are optional; anything else is a KnobError."""
    assert parse_usage_details(None) == (0, 0)
    assert parse_usage_details("cached=3") == (3, 0)
    assert parse_usage_details(" reasoning=5 , cached=1") == (1, 5)
    for bad in ("cached=-1", "audio=2", "cached=x"):
        with pytest.raises(KnobError):
            parse_usage_details(bad)


async def test_chat_and_responses_report_the_details(
    upstream: Upstream, http: aiohttp.ClientSession
) -> None:
    """Cached tokens are part of the prompt, reasoning tokens part of the completion."""
    headers = {"x-mock-usage-details": "cached=2,reasoning=6"}
    async with http.post(f"{upstream.url}/chat/completions", json=CHAT, headers=headers) as r:
        usage = (await r.json())["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 2
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 6
    assert usage["completion_tokens"] == 5 + 6  # five chunks, six hidden tokens
    body = {"model": "o4-mini", "input": "one two three"}
    async with http.post(f"{upstream.url}/responses", json=body, headers=headers) as r:
        usage = (await r.json())["usage"]
    assert usage["input_tokens_details"]["cached_tokens"] == 2
    assert usage["output_tokens_details"]["reasoning_tokens"] == 6
    async with http.post(
        f"{upstream.url}/chat/completions", json=CHAT, headers={"x-mock-usage-details": "nope=1"}
    ) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "invalid_mock_header"
