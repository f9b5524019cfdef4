"""Content rules and PII redaction through a real Sentinel, checked on what the upstream got."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import aiohttp
import openai
import pytest

from sentinel.config import KeyConfig, hash_key
from tests.conftest import CLIENT_KEY, Gateway, RequestLines, StartGateway, encodings
from tests.guardrails.conftest import Recorder

AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}

RULES = """
[[rules]]
name = "no-internal-hosts"
pattern = '(?i)\\bcorp\\.internal\\b'
action = "block"

[[rules]]
name = "project-name"
pattern = 'Project Falcon'
action = "redact"

[[rules]]
name = "competitor"
pattern = 'Acme'
action = "flag"

[pii]
redact = ["email", "credit_card"]
"""


def chat(text: str, role: str = "user", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": role, "content": text}], **extra}


async def post(
    http: aiohttp.ClientSession,
    gateway: Gateway,
    body: dict[str, Any],
    path: str = "chat/completions",
) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{gateway.base_url}/{path}", json=body, headers=AUTH) as r:
        return r.status, await r.json()


async def test_block_answers_400_naming_the_rule_and_sends_nothing(
    recorder: Recorder, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """A block rule's match is a 400 content_blocked naming the rule; the upstream never hears."""
    gateway = await start_gateway(recorder.config(RULES))
    status, body = await post(http, gateway, chat("see wiki.CORP.internal for details"))
    assert status == 400
    assert body["error"]["code"] == "content_blocked"
    assert body["error"]["param"] is None
    assert "no-internal-hosts" in body["error"]["message"]
    assert "wiki" not in body["error"]["message"]
    assert recorder.bodies == []


async def test_redact_and_pii_reach_the_upstream_replaced(
    recorder: Recorder, start_gateway: StartGateway, request_lines: RequestLines
) -> None:
    """Redactions and PII are replaced before sending; flags pass; the log names rules only."""
    gateway = await start_gateway(recorder.config(RULES))
    client = openai.AsyncOpenAI(api_key=CLIENT_KEY, base_url=gateway.base_url)
    text = (
        "Project Falcon: mail bob@example.com, card 4111 1111 1111 1111, "
        "order 4111111111111112, Acme"
    )
    await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}]
    )
    await client.close()
    sent = recorder.bodies[0]["messages"][0]["content"]
    assert sent == (
        "[REDACTED:project-name]: mail [REDACTED:email], card [REDACTED:credit_card], "
        "order 4111111111111112, Acme"
    )
    (line,) = await request_lines.wait()
    assert line["rules"] == ["competitor", "credit_card", "email", "project-name"]
    assert "bob@example.com" not in str(line)


async def test_redaction_happens_before_counting(
    recorder: Recorder,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    request_lines: RequestLines,
) -> None:
    """The prompt estimate is of the redacted text (one placeholder, not 200 words)."""
    toml = '[[rules]]\nname = "long"\npattern = "(?:secret ){200}"\naction = "redact"\n'
    gateway = await start_gateway(recorder.config(toml))
    await post(http, gateway, chat("secret " * 200))
    (line,) = await request_lines.wait()
    assert line["prompt_estimate"] < 30


async def test_every_text_is_screened(
    recorder: Recorder, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """Content parts, tool results, tool call arguments and tool definitions are redacted."""
    toml = '[[rules]]\nname = "x"\npattern = "Falcon"\naction = "redact"\n'
    gateway = await start_gateway(recorder.config(toml))
    call = {"id": "1", "type": "function", "function": {"name": "f", "arguments": '{"q":"Falcon"}'}}
    tool = {
        "type": "function",
        "function": {
            "name": "f",
            "description": "Look up Falcon",
            "parameters": {"type": "object", "properties": {"q": {"description": "Falcon id"}}},
        },
    }
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "About Falcon"},
            {"role": "user", "content": [{"type": "text", "text": "Falcon?"}]},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "1", "content": "Falcon found"},
        ],
        "tools": [tool],
    }
    status, _ = await post(http, gateway, body)
    assert status == 200
    assert "Falcon" not in str(recorder.bodies[0])
    assert str(recorder.bodies[0]).count("[REDACTED:x]") == 6


async def test_roles_scope(
    recorder: Recorder, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """A rule scoped to system messages leaves user messages alone."""
    toml = '[[rules]]\nname = "s"\npattern = "Falcon"\naction = "block"\nroles = ["system"]\n'
    gateway = await start_gateway(recorder.config(toml))
    assert (await post(http, gateway, chat("Falcon")))[0] == 200
    assert (await post(http, gateway, chat("Falcon", role="system")))[0] == 400


async def test_key_team_and_model_scopes(
    recorder: Recorder, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """keys, teams and models each narrow a rule; all given must match."""
    toml = """
[[rules]]
name = "other-key"
pattern = "Falcon"
action = "block"
keys = ["someone-else"]
[[rules]]
name = "team-model"
pattern = "Falcon"
action = "block"
teams = ["red"]
models = ["gpt-4*"]
"""
    config = recorder.config(toml)
    red = KeyConfig(name="red-key", key_sha256=hash_key("sk-red-key-000000000000"), team="red")
    gateway = await start_gateway(dataclasses.replace(config, keys=(*config.keys, red)))
    assert (await post(http, gateway, chat("Falcon")))[0] == 200  # team-a: no rule applies
    red_auth = {"authorization": "Bearer sk-red-key-000000000000"}
    for model, expected in (("gpt-4o", 400), ("o3-mini", 200)):
        body = {**chat("Falcon"), "model": model}
        async with http.post(
            f"{gateway.base_url}/chat/completions", json=body, headers=red_auth
        ) as r:
            assert r.status == expected, model


async def test_embeddings_token_arrays_are_decoded_and_screened(
    recorder: Recorder, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """A token-array input is read as the text it encodes: a block rule sees it."""
    tokens = encodings().get("o200k_base").encode("ship to corp.internal today")
    gateway = await start_gateway(recorder.config(RULES))
    status, body = await post(http, gateway, {"model": "gpt-4o", "input": tokens}, "embeddings")
    assert status == 400 and body["error"]["code"] == "content_blocked"
    status, _ = await post(http, gateway, {"model": "gpt-4o", "input": [1, 2, 3]}, "embeddings")
    assert status == 200


async def test_completions_and_responses_texts(
    recorder: Recorder, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """Completions prompts (lists too) and Responses instructions, input items, tool outputs."""
    toml = '[[rules]]\nname = "x"\npattern = "Falcon"\naction = "redact"\n'
    gateway = await start_gateway(recorder.config(toml))
    await post(http, gateway, {"model": "m", "prompt": ["a Falcon", "b"]}, "completions")
    assert recorder.bodies[-1]["prompt"] == ["a [REDACTED:x]", "b"]
    body = {
        "model": "m",
        "instructions": "Falcon rules",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Falcon?"}]},
            {"type": "function_call_output", "call_id": "c", "output": "Falcon!"},
        ],
    }
    status, _ = await post(http, gateway, body, "responses")
    assert status == 200
    sent = recorder.bodies[-1]
    assert sent["instructions"] == "[REDACTED:x] rules"
    assert sent["input"][0]["content"][0]["text"] == "[REDACTED:x]?"
    assert sent["input"][1]["output"] == "[REDACTED:x]!"


async def test_passthrough_bodies_are_refused_for_keys_rules_apply_to(
    recorder: Recorder, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """A pass-through body the rules cannot read is 403 content_unscreened; GETs still pass."""
    gateway = await start_gateway(recorder.config(RULES))
    async with http.post(f"{gateway.base_url}/moderations", json={"input": "x"}, headers=AUTH) as r:
        assert r.status == 403
        assert (await r.json())["error"]["code"] == "content_unscreened"
    assert recorder.bodies == []


async def test_catastrophic_pattern_is_linear(
    recorder: Recorder, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """``(a+)+$`` against 100 KB of 'a's, the classic ReDoS, is answered at once."""
    toml = '[[rules]]\nname = "redos"\npattern = "(a+)+$"\naction = "block"\n'
    gateway = await start_gateway(recorder.config(toml))
    async with asyncio.timeout(10):  # a backtracking engine would take longer than the universe
        status, body = await post(http, gateway, chat("a" * 100_000 + "!"))
        assert status == 200
        status, body = await post(http, gateway, chat("a" * 100_000))
        assert body["error"]["code"] == "content_blocked"


# --- replies ---------------------------------------------------------------------------------

RESPONSE_RULES = """
[[rules]]
name = "codename"
pattern = 'Falcon-\\d{1,4}'
action = "redact"
direction = "response"

[[rules]]
name = "forbidden"
pattern = 'launch codes'
action = "block"
direction = "response"
"""


async def test_json_reply_redacted_and_logprobs_dropped(
    recorder: Recorder, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """A JSON reply's matches are replaced and its logprobs removed."""
    recorder.pieces = ["Meet Falcon-12", " at noon"]
    recorder.logprobs = True
    gateway = await start_gateway(recorder.config(RESPONSE_RULES))
    status, body = await post(http, gateway, chat("hi"))
    assert status == 200
    assert body["choices"][0]["message"]["content"] == "Meet [REDACTED:codename] at noon"
    assert body["choices"][0]["logprobs"] is None
    assert recorder.bodies[0]["messages"][0]["content"] == "hi"  # request untouched


async def test_json_reply_blocked(
    recorder: Recorder, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """A JSON reply a block rule matches is replaced by a 400 content_blocked."""
    recorder.pieces = ["the launch", " codes are 1234"]
    gateway = await start_gateway(recorder.config(RESPONSE_RULES))
    status, body = await post(http, gateway, chat("hi"))
    assert status == 400
    assert body["error"]["code"] == "content_blocked"
    assert "forbidden" in body["error"]["message"]


async def test_stream_redacted_across_chunks(
    recorder: Recorder, start_gateway: StartGateway
) -> None:
    """A match split over stream chunks is redacted; the SDK sees a normal stream."""
    recorder.pieces = ["Meet Fal", "con-1", "2 at", " noon"]
    gateway = await start_gateway(recorder.config(RESPONSE_RULES))
    client = openai.AsyncOpenAI(api_key=CLIENT_KEY, base_url=gateway.base_url)
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    await client.close()
    assert text == "Meet [REDACTED:codename] at noon"


async def test_stream_block_ends_with_in_band_error(
    recorder: Recorder, start_gateway: StartGateway, request_lines: RequestLines
) -> None:
    """A block rule matching mid-stream ends it with an error event the SDK raises."""
    recorder.pieces = ["word " * 10, "the launch", " codes", " are", " here"]
    recorder.delay_s = 0.05  # the first words go out before the rest arrives
    gateway = await start_gateway(recorder.config(RESPONSE_RULES))
    client = openai.AsyncOpenAI(api_key=CLIENT_KEY, base_url=gateway.base_url, max_retries=0)
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    seen = ""
    with pytest.raises(openai.APIError, match="forbidden"):
        async for chunk in stream:
            if chunk.choices:
                seen += chunk.choices[0].delta.content or ""
    await client.close()
    assert "launch" not in seen
    (line,) = await request_lines.wait()
    assert (line["error_code"], line["outcome"], line["rules"]) == (
        "content_blocked",
        "content_blocked",
        ["forbidden"],
    )


async def test_matches_counted_in_metrics(
    recorder: Recorder, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """/metrics counts matches per rule, action and direction, never the text."""
    recorder.pieces = ["Falcon-7"]
    config = recorder.config(RULES + RESPONSE_RULES)
    telemetry = dataclasses.replace(config.telemetry, metrics_public=True)
    gateway = await start_gateway(dataclasses.replace(config, telemetry=telemetry))
    await post(http, gateway, chat("Acme and Project Falcon"))
    async with http.get(f"{gateway.url}/metrics") as r:
        text = await r.text()
    assert (
        'sentinel_guardrail_matches_total{sentinel_rule="codename",sentinel_rule_action="redact",'
        'sentinel_rule_direction="response"} 1.0'
    ) in text
    assert 'sentinel_rule="competitor",sentinel_rule_action="flag"' in text
    assert "Falcon-7" not in text and "Project Falcon" not in text
