"""The benchmark: its response parser, load generator, targets, counting cost and a quick run."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import pytest

from bench.__main__ import _options, _parser, main
from bench.children import REPO_ROOT, ChildError, CpuPlan, Finishing
from bench.counting import chat_body, measure
from bench.goals import verdicts
from bench.http1 import ProtocolError, ResponseParser
from bench.load import _cycle, run_load
from bench.measurement import CountCost, Measurement, percentile
from bench.procstat import (
    cpu_seconds,
    parse_busy_ticks,
    parse_cpu_ticks,
    parse_rss_kib,
    rss_bytes,
)
from bench.report import render
from bench.runner import Options, Outcome, Results, UsageKept, best_rounds
from bench.scenarios import (
    CLIENT_KEY,
    MANY_KEYS,
    MODES,
    Scenario,
    build_request,
    client_keys,
    keys_of,
    request_body,
)
from bench.targets import (
    POLICY_LIMITS,
    accounting_config,
    many_keys_config,
    policy_config,
    routed_config,
    start_redis,
)
from sentinel.config import hash_key, load_config
from sentinel.tokens import Encodings, ModelCounter, PromptCounter

JSON_RESPONSE = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
)
CHUNKED_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"d\r\ndata: first\n\n\r\n"
    b"E;ext=1\r\ndata: second\n\n\r\n"
    b"0\r\n\r\n"
)


def feed_in_pieces(parser: ResponseParser, data: bytes, size: int) -> list[bool]:
    """What ``feed`` answered for each ``size``-byte piece of ``data``."""
    return [parser.feed(data[i : i + size]) for i in range(0, len(data), size)]


def test_parser_reads_a_content_length_body() -> None:
    """A Content-Length response completes exactly at its last body byte."""
    parser = ResponseParser()
    assert parser.feed(JSON_RESPONSE[:-1]) is False
    assert parser.feed(JSON_RESPONSE[-1:]) is True
    assert parser.status == 200
    assert parser.body_bytes == 11
    assert parser.headers[b"content-type"] == b"application/json"
    assert parser.is_keep_alive and not parser.has_leftover


def test_parser_reads_a_chunked_body_to_the_zero_chunk() -> None:
    """A chunked response completes at the zero chunk; chunk extensions are ignored."""
    parser = ResponseParser()
    assert parser.feed(CHUNKED_RESPONSE[:-2]) is False
    assert parser.feed(CHUNKED_RESPONSE[-2:]) is True
    assert parser.body_bytes == len(b"data: first\n\n") + len(b"data: second\n\n")


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16])
def test_parser_handles_chunks_split_across_reads(size: int) -> None:
    """Heads, chunk-size lines, chunk data and CRLFs may be split anywhere between reads."""
    parser = ResponseParser()
    answers = feed_in_pieces(parser, CHUNKED_RESPONSE, size)
    assert answers[-1] is True and not any(answers[:-1])
    assert parser.status == 200
    assert parser.body_bytes == 27


def test_parser_keeps_bytes_of_the_next_response() -> None:
    """Bytes past the end of one response are parsed as the next one after ``reset``."""
    parser = ResponseParser()
    assert parser.feed(JSON_RESPONSE + CHUNKED_RESPONSE[:20]) is True
    assert parser.has_leftover
    assert parser.reset() is False
    assert parser.feed(CHUNKED_RESPONSE[20:]) is True
    assert parser.headers[b"transfer-encoding"] == b"chunked"


def test_parser_reads_an_unframed_body_until_the_connection_ends() -> None:
    """Without Content-Length or chunking, the body ends with the connection."""
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\npartial") is False
    assert parser.feed(b" body") is False
    assert parser.feed_eof() is True
    assert parser.status == 500 and parser.body_bytes == 12
    assert not parser.is_keep_alive


def test_parser_completes_a_bodiless_response_at_its_head() -> None:
    """A 204 has no body, whatever its headers say."""
    assert ResponseParser().feed(b"HTTP/1.1 204 No Content\r\n\r\n") is True


@pytest.mark.parametrize(
    "response",
    [
        b"SPDY/3 200 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
    ],
)
def test_parser_rejects_malformed_responses(response: bytes) -> None:
    """Malformed status lines, headers, lengths and chunks raise ``ProtocolError``."""
    with pytest.raises(ProtocolError):
        ResponseParser().feed(response)


def test_request_bytes_are_a_complete_http_request() -> None:
    """The pre-encoded request carries the client key and an exact Content-Length."""
    request = build_request("stream", "127.0.0.1", 8080)
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"Authorization: Bearer sk-bench-client-key" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body) == json.loads(request_body("stream"))
    assert json.loads(body)["stream"] is True


def test_percentile_uses_the_nearest_rank() -> None:
    """p50 of 1..100 is 50, p99 is 99, and no values give 0."""
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([], 0.5) == 0


def test_procstat_parses_stat_and_status() -> None:
    """CPU ticks survive a command name with spaces and parentheses; VmRSS is in KiB."""
    stat = "42 (we ird) name) S 1 2 3 4 5 6 7 8 9 10 100 20 3 4 20 0 1 0"
    assert parse_cpu_ticks(stat) == 127
    assert parse_rss_kib("Name:\tx\nVmRSS:\t  1234 kB\n") == 1234
    assert parse_rss_kib("Name:\tx\n") is None


def test_procstat_parses_machine_busy_time() -> None:
    """Machine busy time is everything in the cpu line but idle and iowait."""
    stat = "cpu  100 2 30 9999 50 4 5 6 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"
    assert parse_busy_ticks(stat) == 100 + 2 + 30 + 4 + 5 + 6
    with pytest.raises(ValueError):
        parse_busy_ticks("intr 1 2 3\n")


def measured(rps: float, p50_ms: float, cpu_s: float | None = None) -> Measurement:
    """A one-second measurement with ``rps`` requests and the given p50."""
    p50 = int(p50_ms * 1000)
    return Measurement(
        requests=int(rps),
        errors=0,
        seconds=1.0,
        p50_us=p50,
        p90_us=p50,
        p99_us=p50,
        max_us=p50,
        mean_us=p50,
        body_bytes=10,
        statuses={"200": int(rps)},
        cpu_seconds=cpu_s,
        rss_bytes=None if cpu_s is None else 50 * 2**20,
    )


def cells_of(text: str, prefix: str) -> list[str]:
    """The cells of the first markdown table row of ``text`` that starts with ``prefix``."""
    row = next(line for line in text.splitlines() if line.startswith(prefix))
    return [cell.strip() for cell in row.strip("|").split("|")]


def table(text: str, header: str) -> list[list[str]]:
    """The cells of each body row of the markdown table whose header row starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header)) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_report_compares_the_gateways_with_bare_and_direct() -> None:
    """Sentinel's and policy's rows show their share of bare req/s and the p50 they add."""
    outcomes = [
        Outcome(Scenario("direct", "json", 1), measured(4000, 0.25)),
        Outcome(Scenario("bare", "json", 1), measured(1000, 1.0, cpu_s=0.5)),
        Outcome(Scenario("sentinel", "json", 1), measured(500, 2.0, cpu_s=0.4)),
        Outcome(Scenario("policy", "json", 1), measured(400, 2.5, cpu_s=0.4)),
        Outcome(Scenario("sentinel", "stream", 1), None, "failed to start: boom"),
    ]
    options = Options(MODES, ("json",), (1,), 0.0, 1.0)
    text = render(
        Results(outcomes, usage={"policy": UsageKept(400, 400)}),
        options,
        CpuPlan(None, None, None),
    )
    assert cells_of(text, "| sentinel | json") == [
        "sentinel",
        "json",
        "1",
        "500",
        "2.00",
        "2.00",
        "800",
        "50",
        "50%",
        "+1.75",
        "0",
    ]
    assert cells_of(text, "| policy | json")[8:10] == ["40%", "+2.25"]
    assert (
        "json, p50 added to direct at 1 connection: bare +0.75 ms, "
        "sentinel +1.75 ms (1.00 over bare), policy +2.25 ms (1.50 over bare)"
    ) in text
    assert "policy wrote 400 usage records for 400 responses" in text
    assert "(warm-up and every round included), naming 1 key\n" in text
    assert "best of" not in text
    assert "**failed to start: boom**" in text
    assert "1 scenario(s) failed or had errors" in text


def test_each_scenario_keeps_its_best_round_unless_one_went_wrong() -> None:
    """Over the rounds a scenario keeps the round with the most req/s; a round that failed or
    saw errors is kept instead, so that a better round never hides it."""
    json, stream, policy = (
        Scenario("sentinel", "json", 1),
        Scenario("sentinel", "stream", 1),
        Scenario("policy", "json", 1),
    )
    erring = replace(measured(900, 1.0), errors=3)
    rounds = [
        [Outcome(json, measured(500, 2.0)), Outcome(stream, measured(400, 2.0)),
         Outcome(policy, measured(300, 3.0))],
        [Outcome(json, measured(700, 1.5)), Outcome(stream, erring),
         Outcome(policy, None, "failed to start: boom")],
        [Outcome(json, measured(600, 1.2)), Outcome(stream, measured(450, 1.8)),
         Outcome(policy, measured(350, 2.5))],
    ]  # fmt: skip
    best = best_rounds(rounds)
    assert [o.scenario for o in best] == [json, stream, policy]
    assert best[0].measurement is not None and best[0].measurement.rps == 700
    assert best[1].measurement is erring
    assert best[2].measurement is None and best[2].failure == "failed to start: boom"


def test_report_names_the_rounds() -> None:
    """With more than one round the header says each figure is the best of them."""
    options = Options(("direct",), ("json",), (1,), 1.0, 3.0, rounds=3)
    text = render(Results([]), options, CpuPlan(None, None, None))
    assert text.startswith("Sentinel benchmark: 1 s warm-up + 3 s per scenario, best of 3 rounds")


def test_report_checks_the_targets() -> None:
    """The targets table shows the worst share and the worst added p50, met or not."""
    outcomes = [
        Outcome(Scenario("bare", "json", 1), measured(1000, 1.0)),
        Outcome(Scenario("bare", "json", 16), measured(2000, 8.0)),
        Outcome(Scenario("sentinel", "json", 1), measured(900, 1.5)),
        Outcome(Scenario("sentinel", "json", 16), measured(1700, 9.0)),
        Outcome(Scenario("accounting", "json", 1), measured(880, 1.6)),
        Outcome(Scenario("accounting", "json", 16), measured(1500, 10.0)),
        Outcome(Scenario("policy", "json", 1), measured(850, 1.8)),
        Outcome(Scenario("policy", "json", 16), measured(1400, 11.0)),
    ]
    options = Options(MODES, ("json",), (1, 16), 0.0, 1.0)
    text = render(Results(outcomes), options, CpuPlan(None, None, None))
    assert cells_of(text, "| sentinel req/s, share of bare") == [
        "sentinel req/s, share of bare",
        "≥ 80%",
        "85% (worst: json/16)",
        "yes",
    ]
    assert cells_of(text, "| accounting req/s, share of sentinel")[2:] == [
        "88% (worst: json/16)",
        "**no**",
    ]
    assert cells_of(text, "| policy req/s, share of bare")[2:] == ["70% (worst: json/16)", "**no**"]
    assert cells_of(text, "| sentinel p50 over bare")[1:] == [
        "≤ 0.60 ms",
        "+0.50 ms (worst: json)",
        "yes",
    ]
    assert cells_of(text, "| policy p50 over bare")[2:] == ["+0.80 ms (worst: json)", "**no**"]


def test_targets_need_both_figures() -> None:
    """Without bare's figures no target against bare is claimed."""
    found = {
        ("sentinel", "json", 1): measured(900, 1.5),
        ("accounting", "json", 1): measured(800, 2),
        ("policy", "json", 1): measured(700, 2),
    }
    [only] = verdicts(found)
    assert only.check == "accounting req/s, share of sentinel"
    assert only.measured == "89% (worst: json/1)" and not only.is_met


def test_report_shows_the_counting_cost() -> None:
    """Each prompt size gets a row with its tokens, its median µs and tokens per second."""
    cost = CountCost("gpt-4o", "o200k_base", 1000, 1064, 5153, 50, 200.0, 190.0)
    options = Options(("direct",), ("json",), (1,), 0.0, 1.0, counting_runs=50)
    text = render(Results([], [cost]), options, CpuPlan(None, None, None))
    assert "(gpt-4o, o200k_base)" in text and "median of 50 counts" in text
    assert cells_of(text, "| ~1k") == ["~1k", "1064", "5.2", "200", "190", "5,320,000"]
    failed = render(Results([], [], "failed: boom"), options, CpuPlan(None, None, None))
    assert "Counting cost: **failed: boom**" in failed


def test_accounting_config_keeps_usage_and_sets_no_limits(tmp_path: Path) -> None:
    """The accounting config loads, uses the given Redis and writes usage into the given
    directory; its key has no limits, so no request reaches the limit store."""
    path = tmp_path / "accounting.toml"
    path.write_text(
        accounting_config("http://127.0.0.1:9/v1", "127.0.0.1:9", "redis://127.0.0.1:7/0", tmp_path)
    )
    config = load_config(path, env={})
    assert config.redis is not None and config.redis.url == "redis://127.0.0.1:7/0"
    assert config.usage.jsonl_path == tmp_path / "usage.jsonl" and config.usage.redis_counters
    [key] = config.keys
    assert all(getattr(key, name) is None for name in POLICY_LIMITS)


def test_policy_config_turns_every_policy_on(tmp_path: Path) -> None:
    """The policy config loads, uses the given Redis, writes usage into the workdir, limits all."""
    path = tmp_path / "policy.toml"
    path.write_text(
        policy_config("http://127.0.0.1:9/v1", "127.0.0.1:9", "redis://127.0.0.1:7/0", tmp_path)
    )
    config = load_config(path, env={})
    assert config.redis is not None and config.redis.url == "redis://127.0.0.1:7/0"
    assert config.usage.jsonl_path == tmp_path / "usage.jsonl"
    assert config.usage.spool_dir == tmp_path / "spool"
    assert config.usage.redis_counters
    [key] = config.keys
    assert {name: getattr(key, name) for name in POLICY_LIMITS} == POLICY_LIMITS
    assert tomllib.loads(path.read_text())["keys"][0]["rpm"] == POLICY_LIMITS["rpm"]


def test_many_keys_config_gives_each_of_its_keys_the_policy_limits(tmp_path: Path) -> None:
    """The policy-keys config loads with ``MANY_KEYS`` distinct keys, the load generator's,
    each with every policy limit, and keeps usage like the policy config."""
    path = tmp_path / "policy-keys.toml"
    path.write_text(
        many_keys_config("http://127.0.0.1:9/v1", "127.0.0.1:9", "redis://127.0.0.1:7/0", tmp_path)
    )
    config = load_config(path, env={})
    assert config.redis is not None and config.usage.redis_counters
    assert config.usage.jsonl_path == tmp_path / "usage.jsonl"
    assert len(config.keys) == MANY_KEYS == len({key.name for key in config.keys})
    assert [key.key_sha256 for key in config.keys] == [
        hash_key(key) for key in keys_of("policy-keys")
    ]
    for key in config.keys:
        assert {name: getattr(key, name) for name in POLICY_LIMITS} == POLICY_LIMITS


def test_only_policy_keys_spreads_its_requests_over_many_keys() -> None:
    """Every target but policy-keys sends the one client key; policy-keys numbered ones."""
    assert all(keys_of(mode) == (CLIENT_KEY,) for mode in MODES if mode != "policy-keys")
    many = keys_of("policy-keys")
    assert len(set(many)) == MANY_KEYS and many[0] == f"{CLIENT_KEY}-0000"
    assert client_keys(1) == (CLIENT_KEY,)


def test_routed_config_offers_three_weighted_candidates(tmp_path: Path) -> None:
    """The routed config loads with two weighted upstreams at one priority and a backup."""
    path = tmp_path / "routed.toml"
    path.write_text(routed_config("http://127.0.0.1:9/v1", "127.0.0.1:9"))
    config = load_config(path, env={})
    shape = [(u.name, u.priority, u.weight) for u in config.upstreams]
    assert shape == [("primary", 0, 3), ("secondary", 0, 1), ("backup", 1, 1)]
    assert {u.base_url for u in config.upstreams} == {"http://127.0.0.1:9/v1"}


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_bench_redis_is_private_and_stopped(tmp_path: Path) -> None:
    """The benchmark's Redis answers on a fresh port (never 6379) and is gone once stopped."""
    redis = start_redis(tmp_path, None)
    try:
        assert redis.port != 6379 and redis.redis_url.endswith(f":{redis.port}/0")
        with socket.create_connection(("127.0.0.1", redis.port), timeout=2) as connection:
            connection.sendall(b"CONFIG GET save\r\n")
            assert b"save\r\n$0\r\n" in connection.recv(256)  # snapshots off
    finally:
        redis.child.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", redis.port), timeout=2).close()


@pytest.fixture(scope="module")
def counter() -> ModelCounter:
    """Sentinel's gpt-4o counter (o200k_base), loaded once for these tests."""
    return PromptCounter(Encodings.load(("o200k_base",)), "o200k_base").for_model("gpt-4o")


def test_counting_bodies_are_varied_prose_of_about_the_size_asked(counter: ModelCounter) -> None:
    """Bodies land within 10% of the size asked, end with a user turn, and vary their words."""
    for tokens in (1_000, 32_000):
        body = chat_body(counter, tokens)
        assert abs(counter.count_chat(body) - tokens) < tokens // 10
        assert body["messages"][-1]["role"] == "user"
        words = " ".join(m["content"] for m in body["messages"]).split()
        assert len(set(words)) > len(words) // 20
        assert any(word[0].isdigit() for word in words)
    assert chat_body(counter, 1_000) == chat_body(counter, 1_000)  # seeded: comparable runs


def test_counting_cost_is_measured_per_size(counter: ModelCounter) -> None:
    """Each size yields the count the counter gives and a positive median."""
    costs = measure(counter, 2, sizes=(300,))
    [cost] = costs
    assert cost.tokens == counter.count_chat(chat_body(counter, 300))
    assert cost.runs == 2 and 0 < cost.min_us <= cost.median_us
    assert cost.tokens_per_s > 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_procstat_reads_this_process() -> None:
    """This process has used some CPU and holds some memory."""
    seconds = cpu_seconds(os.getpid())
    memory = rss_bytes(os.getpid())
    assert seconds is not None and seconds >= 0
    assert memory is not None and memory > 1 << 20


def test_cpu_plan_puts_the_proxy_alone_on_the_first_cpu() -> None:
    """One CPU: no pinning; two: proxy on one, the rest on the other; more: all apart."""
    assert CpuPlan.for_cpus({0}) == CpuPlan(None, None, None)
    two = CpuPlan.for_cpus({0, 1})
    assert (two.proxy, two.load, two.mock) == (frozenset({0}), frozenset({1}), frozenset({1}))
    four = CpuPlan.for_cpus({3, 2, 1, 0})
    assert (four.proxy, four.load, four.mock) == (frozenset({0}), frozenset({1}), frozenset({2, 3}))


def test_finishing_child_streams_its_lines_and_reports_failure() -> None:
    """Lines arrive as printed; a non-zero exit or an overrun raises ``ChildError``."""
    printing = [sys.executable, "-c", "print('one'); print('two')"]
    with Finishing(printing, None) as child:
        assert list(child.lines(30)) == ["one\n", "two\n"]
    failing = [sys.executable, "-c", "import sys; print('x'); sys.exit('boom')"]
    with Finishing(failing, None) as child, pytest.raises(ChildError, match="exited with 1: boom"):
        child.result(30)
    hanging = [sys.executable, "-c", "import threading; threading.Event().wait()"]  # never set
    with Finishing(hanging, None) as child, pytest.raises(ChildError, match="ran over"):
        child.result(0.2)


Answer = Callable[[bytes], bytes]


class StartServer(Protocol):
    """Starts a server answering each request with ``answer``; returns its port."""

    def __call__(self, answer: Answer, heads: list[bytes] | None = None) -> Awaitable[int]: ...


@pytest.fixture
async def server() -> AsyncIterator[StartServer]:
    """Starts a tiny keep-alive HTTP server that answers every request with ``answer`` and
    appends each request's head to ``heads`` when given."""
    servers: list[asyncio.Server] = []

    async def start(answer: Answer, heads: list[bytes] | None = None) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while head := await reader.readuntil(b"\r\n\r\n"):
                    if heads is not None:
                        heads.append(head)
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    response = answer(await reader.readexactly(length))
                    writer.write(response)
                    await writer.drain()
                    if b"Connection: close" in response:
                        break
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        started = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(started)
        port: int = started.sockets[0].getsockname()[1]
        return port

    yield start
    for started in servers:
        started.close()
        await started.wait_closed()


async def test_load_generator_measures_completed_requests(
    server: StartServer,
) -> None:
    """Against a healthy server every response counts and none is an error."""
    port = await server(lambda body: CHUNKED_RESPONSE)
    result = await run_load("127.0.0.1", port, "stream", 2, 0.05, 0.2)
    assert result.requests > 0 and result.errors == 0
    assert result.body_bytes == 27
    assert 0 < result.p50_us <= result.p99_us <= result.max_us


async def test_load_generator_counts_error_statuses(
    server: StartServer,
) -> None:
    """Every non-200 response is counted as an error."""
    error = b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"
    port = await server(lambda body: error)
    result = await run_load("127.0.0.1", port, "json", 1, 0.0, 0.1)
    assert result.requests > 0
    assert result.errors >= result.requests
    assert set(result.statuses) == {"503"}


async def test_load_generator_reconnects_when_the_server_closes(
    server: StartServer,
) -> None:
    """A server closing after each complete response costs a reconnect, not an error."""
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    port = await server(lambda body: closing)
    result = await run_load("127.0.0.1", port, "json", 1, 0.0, 0.2)
    assert result.requests > 1 and result.errors == 0


def test_each_connection_cycles_through_every_request_from_its_own_start() -> None:
    """Connection n of c starts n/c of the way into the requests and goes round them all."""
    requests = [b"a", b"b", b"c", b"d"]
    first = _cycle(requests, 0, 2)
    second = _cycle(requests, 1, 2)
    assert [next(first) for _ in range(5)] == [b"a", b"b", b"c", b"d", b"a"]
    assert [next(second) for _ in range(5)] == [b"c", b"d", b"a", b"b", b"c"]


async def test_load_generator_spreads_requests_over_the_keys(server: StartServer) -> None:
    """With several keys, each connection's requests carry them in turn: all are used."""
    heads: list[bytes] = []
    port = await server(lambda body: JSON_RESPONSE, heads)
    keys = client_keys(10)
    result = await run_load("127.0.0.1", port, "json", 2, 0.0, 0.2, keys=keys)
    assert result.requests >= 10 and result.errors == 0
    sent = [head.split(b"Authorization: Bearer ")[1].split(b"\r\n")[0].decode() for head in heads]
    assert set(sent) == set(keys)
    assert all(sent.count(key) >= len(sent) // 10 - 2 for key in keys)  # evenly, give or take


async def test_load_generator_counts_refused_connections() -> None:
    """A target that is not listening yields errors, not a hang."""
    result = await run_load("127.0.0.1", 1, "json", 2, 0.0, 0.1)
    assert result.requests == 0 and result.errors == 2


@pytest.mark.slow
def test_quick_benchmark_runs_every_target(tmp_path: Path) -> None:
    """``python -m bench --quick`` measures every target and the counting cost, with no errors."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--results-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    text = completed.stdout
    matrix = table(text, "| target |")
    assert [row[0] for row in matrix] == [mode for mode in MODES for _ in range(4)]
    assert all(
        row[8].endswith("%") for row in matrix if row[0] not in ("direct", "bare", "bare-uvicorn")
    ), text
    assert "own CPU per request at" in text and "uvicorn" in text.split("own CPU")[1]
    checks = [row[0] for row in table(text, "| check |")]
    assert "accounting req/s, share of sentinel" in checks
    assert "policy-keys req/s, share of policy" in checks
    assert checks[-1] == "policy p50 over bare, 1 connection"
    counting = table(text, "| prompt |")
    assert [row[0] for row in counting] == ["~1k", "~32k"]
    assert all(float(row[3]) > 0 and float(row[5].replace(",", "")) > 0 for row in counting)
    [saved] = list(tmp_path.glob("*.json"))
    document = json.loads(saved.read_text())
    scenarios = document["scenarios"]
    assert len(scenarios) == len(MODES) * 2 * 2
    for scenario in scenarios:
        assert scenario["failure"] is None, scenario
        assert scenario["requests"] > 0 and scenario["errors"] == 0, scenario
        assert scenario["statuses"].keys() == {"200"}, scenario
    for mode in ("accounting", "policy", "policy-keys", "budgets"):
        keeping = [s for s in scenarios if s["mode"] == mode]
        assert all(s["store_cpu_seconds"] is not None for s in keeping)
        assert document["usage"][mode]["records"] == document["usage"][mode]["responses"]
        assert document["usage"][mode]["responses"] == sum(s["statuses"]["200"] for s in keeping)
    assert document["usage"]["policy"]["keys"] == 1
    busiest = max(s["statuses"]["200"] for s in scenarios if s["mode"] == "policy-keys")
    assert 1 < min(busiest, MANY_KEYS) // 2 <= document["usage"]["policy-keys"]["keys"] <= MANY_KEYS
    assert [c["target_tokens"] for c in document["counting"]] == [1_000, 32_000]
    for cost, row in zip(document["counting"], counting, strict=True):
        assert cost["tokens"] > 0.9 * cost["target_tokens"] and row[1] == str(cost["tokens"])
        assert cost["median_us"] > 0 and cost["tokens_per_s"] > 0


def test_a_full_run_takes_the_best_of_three_rounds_and_quick_one() -> None:
    """``make bench`` runs the matrix three times (3 s each); ``--quick`` once; ``--rounds``
    outside 1-100 is refused like any bad argument."""
    full = _options(_parser().parse_args([]))
    assert (full.rounds, full.duration_s, full.warmup_s) == (3, 3.0, 1.0)
    assert _options(_parser().parse_args(["--quick"])).rounds == 1
    assert _options(_parser().parse_args(["--rounds", "5"])).rounds == 5
    for bad in ("0", "101", "two"):
        with pytest.raises(SystemExit) as refused:
            main(["--rounds", bad])
        assert refused.value.code == 2
