"""Graceful shutdown: SIGTERM stops accepting, lets live streams finish, drains, exits 0."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp

from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, Upstream
from tests.support.processes import free_port, wait_healthy
from tests.test_cli import _write_config, process

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}


async def test_sigterm_lets_live_streams_finish_and_exits_zero(
    upstream: Upstream, tmp_path: Path
) -> None:
    port = free_port()
    config = _write_config(tmp_path, upstream.url, port)
    url = f"http://127.0.0.1:{port}"
    headers = {
        "Authorization": f"Bearer {CLIENT_KEY}",
        "x-mock-chunks": "20",
        "x-mock-chunk-delay-ms": "40",  # each stream lasts about 0.8 s
    }
    async with process(
        "serve", "--config", str(config), env={"UP_KEY": UPSTREAM_KEY}, cwd=tmp_path
    ) as child:
        await wait_healthy(f"{url}/healthz")
        async with aiohttp.ClientSession() as http:
            started = asyncio.Event()
            count = 0

            async def stream() -> bytes:
                nonlocal count
                async with http.post(f"{url}/v1/chat/completions", json=CHAT, headers=headers) as r:
                    assert r.status == 200
                    first = await r.content.readline()
                    count += 1
                    if count == 3:
                        started.set()
                    return first + await r.content.read()

            streams = [asyncio.create_task(stream()) for _ in range(3)]
            await asyncio.wait_for(started.wait(), 10)
            child.send_signal(signal.SIGTERM)
            bodies = await asyncio.wait_for(asyncio.gather(*streams), 20)
            assert await asyncio.wait_for(child.wait(), 30) == 0
        for body in bodies:
            assert body.rstrip().endswith(b"data: [DONE]"), body[-200:]
            assert b'"error"' not in body
        # Once it has exited, nothing listens any more.
        async with aiohttp.ClientSession() as http:
            try:
                async with http.get(f"{url}/healthz") as r:
                    raise AssertionError(f"still answering: {r.status}")
            except aiohttp.ClientConnectionError:
                pass
