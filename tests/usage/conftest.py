"""Fixtures for the usage pipeline: a spool in a temporary directory and a real redis-server."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis as redis_sync
from redis.asyncio import Redis

from sentinel.usage.spool import Spool
from tests.usage.fakes import free_port


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    """Where this test's spool lives (not created yet)."""
    return tmp_path / "state" / "spool"


@pytest.fixture
def spool(spool_dir: Path) -> Spool:
    """A fresh spool."""
    return Spool(spool_dir)


def _start_redis() -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    for _ in range(5):
        port = free_port()
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis_sync.Redis(port=port)
        for _ in range(500):
            if process.poll() is not None:
                break  # port taken meanwhile: try another
            try:
                client.ping()
            except redis_sync.ConnectionError:
                time.sleep(0.01)
                continue
            client.close()
            return process, port
        client.close()
        process.kill()
        process.wait()
    raise RuntimeError("could not start redis-server")


@pytest.fixture(scope="session")
def redis_port() -> Iterator[int]:
    """A private redis-server on a free port, never persisted, for the whole session."""
    process, port = _start_redis()
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
async def redis(redis_port: int) -> AsyncIterator[Redis]:
    """A client of the private redis-server, emptied before the test."""
    client = Redis(port=redis_port)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()
