"""The two engines, hypercorn and uvicorn, behave alike where the app cannot see it: requests
that are not HTTP, heads too large or too slow, workers sharing a socket, a graceful SIGTERM
and a startup that fails in one line."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from sentinel.config import ConfigError, load_config
from sentinel.engines import MAX_HEAD_BYTES
from tests.conftest import (
    CLIENT_KEY,
    UPSTREAM_KEY,
    Gateway,
    StartGateway,
    Upstream,
    make_config,
)
from tests.support.processes import ROOT, free_port, sentinel_process
from tests.support.redis_server import RedisServer

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
STREAM = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}
_INSTANCE = re.compile(r'service_instance_id="([^"]+)"')


async def _exchange(gateway: Gateway, data: bytes) -> bytes:
    """Send ``data`` on a new connection; everything the gateway answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


def _status_and_headers(answer: bytes) -> tuple[int, dict[bytes, bytes]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    assert body == b""
    headers = dict(line.lower().split(b": ", 1) for line in lines)
    return int(status_line.split()[1]), headers


async def test_a_malformed_request_line_is_a_plain_400(gateway: Gateway) -> None:
    """A request line that is not HTTP gets the engine's 400: no body, connection closed."""
    status, headers = _status_and_headers(await _exchange(gateway, b"HELLO THERE\r\n\r\n"))
    assert status == 400
    assert headers[b"content-length"] == b"0" and headers[b"connection"] == b"close"
    assert b"date" in headers and b"server" not in headers


async def test_a_head_over_the_cap_is_a_431(gateway: Gateway) -> None:
    """A request head larger than MAX_HEAD_BYTES gets 431 and the connection is closed,
    the answer readable although the client sent more than the engine read."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (4 * MAX_HEAD_BYTES)
    status, headers = _status_and_headers(await _exchange(gateway, head))
    assert status == 431
    assert headers[b"content-length"] == b"0" and headers[b"connection"] == b"close"


async def test_a_large_body_in_one_write_is_not_a_large_head(gateway: Gateway) -> None:
    """A request whose small head and large body arrive in one write is served: only a head
    counts toward the cap."""
    body = json.dumps({"model": "text-embedding-3-small", "input": "a" * 300_000}).encode()
    answer = await _exchange(
        gateway,
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {CLIENT_KEY}\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body,
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


async def test_an_idle_connection_is_closed_at_the_header_timeout(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    """A connection that never sends a byte is closed at header_timeout_ms, as is one that
    stays idle after a response."""
    gateway = await start_gateway(make_config(upstream.url, header_timeout_ms=300))
    started = time.monotonic()
    assert await _exchange(gateway, b"") == b""
    assert time.monotonic() - started < 3
    answer = await _exchange(gateway, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"status":"ok"}')


def _config(
    tmp_path: Path, port: int, redis: RedisServer, upstream_url: str, *, workers: int
) -> Path:
    digest = hashlib.sha256(CLIENT_KEY.encode()).hexdigest()
    path = tmp_path / "sentinel.toml"
    path.write_text(
        f'[server]\nbind = "127.0.0.1:{port}"\nengine = "uvicorn"\nworkers = {workers}\n'
        "shutdown_grace_s = 5\n"
        f'[redis]\nurl = "redis://127.0.0.1:{redis.port}/0"\n'
        "[telemetry]\nmetrics_public = true\n"
        f'[[upstreams]]\nname = "mock"\nbase_url = "{upstream_url}"\napi_key = "env:UP_KEY"\n'
        f'[[keys]]\nname = "team-a"\nkey_sha256 = "sha256:{digest}"\n'
        f'[usage]\nspool_dir = "{tmp_path}/spool"\njsonl_path = "{tmp_path}/usage.jsonl"\n'
    )
    return path


async def _instances_answering(url: str, within_s: float = 30.0) -> set[str]:
    """The worker instance ids that answered ``/metrics`` over fresh connections, scraping
    16 at a time until two did or ``within_s`` passed (the port answers as soon as the
    first worker is up; on a busy machine the second may take seconds more)."""
    seen: set[str] = set()
    deadline = time.monotonic() + within_s
    connector = aiohttp.TCPConnector(force_close=True, limit=16)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def scrape() -> None:
            async with http.get(f"{url}/metrics") as r:
                assert r.status == 200
                seen.update(_INSTANCE.findall(await r.text()))

        while len(seen) < 2 and time.monotonic() < deadline:
            await asyncio.gather(*(scrape() for _ in range(16)))
    return seen


@pytest.mark.slow
async def test_uvicorn_workers_share_the_socket_and_stop_gracefully(
    upstream: Upstream, private_redis: RedisServer, tmp_path: Path
) -> None:
    """``sentinel serve`` on uvicorn with two workers answers from both on one port, and at
    SIGTERM lets a live stream finish and exits 0 within shutdown_grace_s."""
    port = free_port()
    config = _config(tmp_path, port, private_redis, upstream.url, workers=2)
    url = f"http://127.0.0.1:{port}"
    headers = {**AUTH, "x-mock-chunks": "20", "x-mock-chunk-delay-ms": "50"}  # about 1 s
    with (tmp_path / "sentinel.log").open("wb") as log:
        async with sentinel_process(config, port, log, {"UP_KEY": UPSTREAM_KEY}) as child:
            assert len(await _instances_answering(url)) == 2
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"{url}/v1/chat/completions", json=STREAM, headers=headers
                ) as r:
                    assert r.status == 200
                    first = await r.content.readline()
                    child.send_signal(signal.SIGTERM)
                    signalled = time.monotonic()
                    body = first + await r.content.read()
                assert await asyncio.wait_for(child.wait(), 10) == 0
                assert time.monotonic() - signalled < 5
    assert body.rstrip().endswith(b"data: [DONE]"), body[-200:]
    output = (tmp_path / "sentinel.log").read_bytes()
    assert b"Traceback" not in output and UPSTREAM_KEY.encode() not in output


def _refusal(tmp_path: Path, extra: str, port: int) -> tuple[int, list[str], str]:
    """Run ``sentinel serve`` on uvicorn for a config that cannot start: its exit status,
    its ``sentinel:`` lines, and all it wrote."""
    digest = hashlib.sha256(CLIENT_KEY.encode()).hexdigest()
    path = tmp_path / "sentinel.toml"
    path.write_text(
        f'[server]\nbind = "127.0.0.1:{port}"\nengine = "uvicorn"\n'
        '[[upstreams]]\nname = "mock"\nbase_url = "http://127.0.0.1:9/v1"\n'
        f'[[keys]]\nname = "team-a"\nkey_sha256 = "sha256:{digest}"\n' + extra
    )
    result = subprocess.run(
        [sys.executable, "-m", "sentinel", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "SENTINEL_CONFIG": ""},
        cwd=tmp_path,
        timeout=60,
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith("sentinel: cannot")]
    return result.returncode, lines, result.stdout + result.stderr


def test_uvicorn_lifespan_failure_is_one_line(tmp_path: Path) -> None:
    """A lifespan step that fails on uvicorn is one line naming the step, exit 2, with no
    traceback and no secret, as on hypercorn."""
    extra = '[redis]\nurl = "redis://:hunter2-secret@127.0.0.1:6379/0?db=zero"\n'
    status, lines, output = _refusal(tmp_path, extra, free_port())
    assert status == 2, output
    assert len(lines) == 1 and lines[0].startswith("sentinel: cannot start: redis: "), output
    assert "Traceback" not in output and "hunter2-secret" not in output


def test_uvicorn_port_in_use_is_one_line(tmp_path: Path) -> None:
    """A port taken by another socket stops uvicorn before anything opens, in one line."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, lines, output = _refusal(tmp_path, "", port)
    assert status == 2, output
    assert lines == [
        f"sentinel: cannot start: server.bind: cannot listen on 127.0.0.1:{port}: "
        "Address already in use"
    ]


def test_engine_is_checked_with_the_config(tmp_path: Path) -> None:
    """``[server] engine`` takes hypercorn (the default) or uvicorn; anything else is a
    problem with its path."""
    path = tmp_path / "sentinel.toml"
    base = '[[upstreams]]\nname = "a"\nbase_url = "http://127.0.0.1:9/v1"\n'
    path.write_text(base)
    assert load_config(path, env={}).server.engine == "hypercorn"
    path.write_text('[server]\nengine = "uvicorn"\n' + base)
    assert load_config(path, env={}).server.engine == "uvicorn"
    path.write_text('[server]\nengine = "gunicorn"\n' + base)
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    assert "server.engine" in str(raised.value) and "'uvicorn'" in str(raised.value)
