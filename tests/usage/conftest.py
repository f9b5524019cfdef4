"""Fixtures for the usage pipeline: a spool in a temporary directory and a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from sentinel.usage.spool import Spool
from tests.support.redis_server import start_redis_server


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    """Where this test's spool lives (not created yet)."""
    return tmp_path / "state" / "spool"


@pytest.fixture
def spool(spool_dir: Path) -> Spool:
    """A fresh spool."""
    return Spool(spool_dir)


@pytest.fixture(scope="session")
def redis_port() -> Iterator[int]:
    """A redis-server of the usage tests' own (they empty it), never persisted."""
    server = start_redis_server()
    try:
        yield server.port
    finally:
        server.stop()


@pytest.fixture
async def redis(redis_port: int) -> AsyncIterator[Redis]:
    """A client of the private redis-server, emptied before the test."""
    client = Redis(port=redis_port)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()
