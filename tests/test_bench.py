"""The benchmark: its HTTP/1.1 response parser, its load generator, and one whole quick run."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bench.children import REPO_ROOT, CpuPlan
from bench.http1 import ProtocolError, ResponseParser
from bench.load import run_load
from bench.measurement import Measurement, percentile
from bench.procstat import (
    cpu_seconds,
    parse_busy_ticks,
    parse_cpu_ticks,
    parse_rss_kib,
    rss_bytes,
)
from bench.report import render
from bench.runner import Options, Outcome
from bench.scenarios import MODES, Scenario, build_request, request_body

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


def test_report_compares_sentinel_with_bare_and_direct() -> None:
    """Sentinel's row shows its share of bare throughput and the p50 it adds over direct."""
    outcomes = [
        Outcome(Scenario("direct", "json", 1), measured(4000, 0.25)),
        Outcome(Scenario("bare", "json", 1), measured(1000, 1.0, cpu_s=0.5)),
        Outcome(Scenario("sentinel", "json", 1), measured(500, 2.0, cpu_s=0.4)),
        Outcome(Scenario("sentinel", "stream", 1), None, "failed to start: boom"),
    ]
    options = Options(("direct", "bare", "sentinel"), ("json",), (1,), 0.0, 1.0)
    text = render(outcomes, options, CpuPlan(None, None, None))
    sentinel_row = next(line for line in text.splitlines() if line.startswith("| sentinel | json"))
    cells = [cell.strip() for cell in sentinel_row.strip("|").split("|")]
    assert cells == [
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
    assert "Sentinel adds 1.75 ms; bare adds 0.75 ms; Sentinel over bare 1.00 ms" in text
    assert "**failed to start: boom**" in text
    assert "1 scenario(s) failed or had errors" in text


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


Answer = Callable[[bytes], bytes]


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Answer], Awaitable[int]]]:
    """Starts a tiny keep-alive HTTP server that answers every request with ``answer``."""
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while head := await reader.readuntil(b"\r\n\r\n"):
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
    server: Callable[[Answer], Awaitable[int]],
) -> None:
    """Against a healthy server every response counts and none is an error."""
    port = await server(lambda body: CHUNKED_RESPONSE)
    result = await run_load("127.0.0.1", port, "stream", 2, 0.05, 0.2)
    assert result.requests > 0 and result.errors == 0
    assert result.body_bytes == 27
    assert 0 < result.p50_us <= result.p99_us <= result.max_us


async def test_load_generator_counts_error_statuses(
    server: Callable[[Answer], Awaitable[int]],
) -> None:
    """Every non-200 response is counted as an error."""
    error = b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"
    port = await server(lambda body: error)
    result = await run_load("127.0.0.1", port, "json", 1, 0.0, 0.1)
    assert result.requests > 0
    assert result.errors >= result.requests
    assert set(result.statuses) == {"503"}


async def test_load_generator_reconnects_when_the_server_closes(
    server: Callable[[Answer], Awaitable[int]],
) -> None:
    """A server closing after each complete response costs a reconnect, not an error."""
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    port = await server(lambda body: closing)
    result = await run_load("127.0.0.1", port, "json", 1, 0.0, 0.2)
    assert result.requests > 1 and result.errors == 0


async def test_load_generator_counts_refused_connections() -> None:
    """A target that is not listening yields errors, not a hang."""
    result = await run_load("127.0.0.1", 1, "json", 2, 0.0, 0.1)
    assert result.requests == 0 and result.errors == 2


@pytest.mark.slow
def test_quick_benchmark_runs_every_target(tmp_path: Path) -> None:
    """``python -m bench --quick`` prints the table for all targets with no errors."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--results-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = [line for line in completed.stdout.splitlines() if line.startswith("| ")]
    assert {row.split("|")[1].strip() for row in rows[1:]} == set(MODES)
    [saved] = list(tmp_path.glob("*.json"))
    scenarios = json.loads(saved.read_text())["scenarios"]
    assert len(scenarios) == len(MODES) * 2 * 2
    for scenario in scenarios:
        assert scenario["failure"] is None, scenario
        assert scenario["requests"] > 0 and scenario["errors"] == 0, scenario
        assert scenario["statuses"].keys() == {"200"}, scenario
