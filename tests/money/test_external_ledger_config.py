"""``[credits]``, and the ledger protocol's answers read without a network: every problem named,
every reply that is not the protocol's taken as "cannot say", never as an admission."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from sentinel.config import Config, ConfigError, load_config
from sentinel.config.credits import CreditsConfig
from sentinel.money.ledger import (
    CreditsUnavailable,
    ExternalLedger,
    Held,
    Refused,
    Unanswered,
    balance_headers,
    read_batch_answer,
    read_hold_answer,
)
from sentinel.money.ledger_batches import BatchFailed, Settlement, SettlementBatches

UPSTREAM = '[[upstreams]]\nname = "u"\nbase_url = "http://127.0.0.1:9000/v1"\ntimeout_ms = 60000\n'
LEDGER = '[credits]\nurl = "https://ledger.test/v1/"\n'


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "sentinel.toml"
    path.write_text(UPSTREAM + text, encoding="utf-8")
    return load_config(path, env=env or {})


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    return info.value.problems


def test_no_credits_table_keeps_credits_in_sentinel(tmp_path: Path) -> None:
    """Without ``[credits]`` there is no external ledger."""
    assert load(tmp_path, "").credits is None


def test_the_table_is_read_and_its_token_is_a_secret(tmp_path: Path) -> None:
    """Every field is read; ``env:`` tokens come from the environment and are redacted."""
    text = LEDGER + (
        'token = "env:LEDGER_TOKEN"\naccount = "team"\ntimeout_ms = 250\n'
        "capture_batch_ms = 50\ncapture_batch_max = 10\n"
    )
    config = load(tmp_path, text, {"LEDGER_TOKEN": "ledger-secret-0123456789"})
    assert config.credits == CreditsConfig(
        url="https://ledger.test/v1",
        token="ledger-secret-0123456789",
        account="team",
        timeout_ms=250,
        capture_batch_ms=50,
        capture_batch_max=10,
    )
    assert "ledger-secret-0123456789" in config.secrets()


def test_there_is_no_fail_open_choice(tmp_path: Path) -> None:
    """``on_unavailable`` other than "refuse" is a problem that says why."""
    [problem] = problems(tmp_path, LEDGER + 'on_unavailable = "admit"\n')
    assert problem.startswith("credits.on_unavailable: expected 'refuse', got 'admit'")
    assert "no fail-open" in problem


def test_each_problem_names_its_path(tmp_path: Path) -> None:
    """A bad url, account, token and batch size are each reported with their path."""
    text = (
        '[credits]\nurl = "ftp://ledger.test"\naccount = "user"\ntoken = "env:MISSING"\n'
        "capture_batch_max = 5000\ntimeot_ms = 5\n"
    )
    found = problems(tmp_path, text)
    assert found == [
        "credits.url: expected an http(s) URL, got 'ftp://ledger.test'",
        "credits.token: environment variable MISSING is not set or empty",
        "credits.account: expected one of 'key', 'team', got 'user'",
        "credits.capture_batch_max: must be at most 1000, got 5000",
        "credits.timeot_ms: unknown key (did you mean 'timeout_ms'?)",
    ]


def test_the_queue_must_hold_a_batch(tmp_path: Path) -> None:
    """``max_pending`` below ``capture_batch_max`` could never fill a batch."""
    assert problems(tmp_path, LEDGER + "capture_batch_max = 50\nmax_pending = 10\n") == [
        "credits.max_pending: must be at least capture_batch_max (50), got 10"
    ]


def test_a_url_is_required(tmp_path: Path) -> None:
    """``[credits]`` without ``url`` is a problem."""
    assert problems(tmp_path, "[credits]\ntimeout_ms = 100\n") == ["credits.url: is required"]


def test_holds_must_outlast_the_longest_request(tmp_path: Path) -> None:
    """``hold_ttl_s`` shorter than an upstream's ``timeout_ms`` could expire mid-request."""
    assert problems(tmp_path, LEDGER + "hold_ttl_s = 30\n") == [
        "credits.hold_ttl_s: must outlast the longest request (an upstream's timeout_ms is "
        "60000 ms), got 30"
    ]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b""),
        (201, b"<html>"),
        (201, b'{"hold_id": "other", "balance_usd": "1"}'),
        (201, b'{"hold_id": "h1"}'),
        (201, b'{"hold_id": "h1", "balance_usd": "-1"}'),
        (201, b'{"hold_id": "h1", "balance_usd": 1.5}'),
        (404, b'{"hold_id": "h1", "balance_usd": "1"}'),
    ],
)
def test_a_hold_answer_that_is_not_the_protocols_is_a_failure(status: int, body: bytes) -> None:
    """Anything but a 201/200 echoing the hold with a balance, or a 402, is no answer."""
    assert isinstance(read_hold_answer(status, body, "h1"), Unanswered)


def test_a_hold_and_a_refusal_are_read() -> None:
    """201 carries the balance after the hold; 402 may say what is left."""
    held = read_hold_answer(201, b'{"hold_id": "h1", "balance_usd": "0.25"}', "h1")
    assert held == Held(250_000_000)
    refused = read_hold_answer(402, b'{"error": {}, "balance_usd": "0.000001"}', "h1")
    assert refused == Refused(1_000)
    assert read_hold_answer(402, b"", "h1") == Refused(None)


def test_a_batch_answer_keeps_only_the_holds_sent() -> None:
    """Results of holds not in the batch are ignored; a body without results fails."""
    sent = [Settlement("a", "r1", 5), Settlement("b", "r2", 7)]
    body = b'{"results": [{"hold_id": "a", "status": "captured"}, {"hold_id": "z", "status": "x"}]}'
    assert read_batch_answer(body, sent) == {"a": "captured"}
    with pytest.raises(BatchFailed):
        read_batch_answer(b'{"ok": true}', sent)


def test_balance_headers_keep_the_tightest() -> None:
    """A tighter budget's headers stay; a tighter ledger balance replaces them with never."""
    budget = [(b"x-sentinel-budget-remaining-usd", b"0.5"), (b"x-sentinel-budget-reset", b"1h")]
    assert balance_headers(budget, 900_000_000) == budget
    assert balance_headers(budget, 100_000_000) == [
        (b"x-sentinel-budget-remaining-usd", b"0.1"),
        (b"x-sentinel-budget-reset", b"never"),
    ]


async def test_a_failed_batch_is_sent_again_in_order_and_nothing_is_lost() -> None:
    """The first POST fails: the same settlements go again, first, and each settles once."""
    sent: list[list[str]] = []

    async def send(kind: str, batch: list[Settlement]) -> dict[str, str]:
        sent.append([s.hold_id for s in batch])
        if len(sent) == 1:
            raise BatchFailed("HTTP 503")
        return {s.hold_id: "captured" for s in batch}

    batches = SettlementBatches(
        send,
        batch_ms=1,
        batch_max=3,
        max_pending=4,
        close_timeout_ms=1_000,
        rand=lambda: 0.0,
    )
    for hold_id in "abcd":
        batches.add(Settlement(hold_id, "r", 1))
    assert batches.is_full
    batches.start()
    for _ in range(200):
        if batches.pending == 0:
            break
        await asyncio.sleep(0.01)
    await batches.aclose()
    assert sent == [["a", "b", "c"], ["a", "b", "c"], ["d"]]
    assert batches.pending == 0 and batches.failures == 1


async def test_a_full_settlement_queue_refuses_new_holds_without_asking() -> None:
    """While ``max_pending`` settlements wait, a hold is 503 and no call is made."""
    settings = CreditsConfig(url="http://127.0.0.1:9", capture_batch_max=1, max_pending=1)
    async with aiohttp.ClientSession() as session:
        ledger = ExternalLedger(session, settings)
        ledger.batches.add(Settlement("earlier", "r0", 5))
        with pytest.raises(CreditsUnavailable) as info:
            await ledger.hold("cfg:payer", 1_000, "h1", "r1")
    assert info.value.status == 503 and info.value.code == "credits_unavailable"
    assert ledger.breaker.is_closed and ledger.batches.pending == 1
