"""Sentinel as a real child process (``python -m sentinel serve``), for tests that need one."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import aiohttp

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["ROOT", "free_port", "sentinel_process", "wait_healthy"]


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_healthy(
    url: str, child: asyncio.subprocess.Process | None = None, timeout_s: float = 20
) -> None:
    """Poll ``url`` until it answers 200; fail at once if ``child`` exits meanwhile."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if child is not None and child.returncode is not None:
                raise AssertionError(f"sentinel exited with {child.returncode} while starting")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.02)
    raise AssertionError(f"{url} never became healthy")


@asynccontextmanager
async def sentinel_process(
    config: Path, port: int, log: IO[bytes] | IO[str], env: dict[str, str]
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``sentinel serve --config`` as a child, healthy on ``port``; SIGTERMed if still running.

    Its output goes to ``log`` (a file: a pipe nobody reads would block it).
    """
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sentinel",
        "serve",
        "--config",
        str(config),
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        cwd=config.parent,
        stdout=log,
        stderr=log,
    )
    try:
        await wait_healthy(f"http://127.0.0.1:{port}/healthz", child)
        yield child
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
            await asyncio.wait_for(child.wait(), 30)
