"""Fixtures for the limits: a fake clock, real redis-servers, and every store to contract-test.

``redis_server`` is one private ``redis-server`` for the session (never the one on 6379,
never persisted); fault tests take ``private_redis``, a server of their own that they may
stop and restart on the same port; ``redis_cluster`` is a 3-node cluster. Servers are waited
for by reading their log until they report that they are ready, not by sleeping.
"""

from __future__ import annotations

import queue
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from sentinel.limits import LimitStore, MemoryStore, RedisStore, Timing

T0 = 1_710_000_000_000
"""2024-03-09 16:00:00 UTC, a Saturday, on a whole minute."""
TIMING = Timing()


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now_ms: int = T0) -> None:
        self._now_ms = now_ms

    def now_ms(self) -> int:
        return self._now_ms

    def advance(self, ms: int) -> int:
        """Move forward by ``ms`` and return the new time."""
        self._now_ms += ms
        return self._now_ms

    def set(self, now_ms: int) -> None:
        self._now_ms = now_ms


class RedisServer:
    """A ``redis-server`` child process on a fixed loopback port that can stop and restart.

    A thread drains its log into a queue, so the server never blocks on a full pipe and the
    tests can wait for a log line instead of sleeping.
    """

    def __init__(self, port: int, *options: str, workdir: Path | None = None) -> None:
        self.port = port
        self._options = options
        self._workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None
        self._log: queue.Queue[bytes] = queue.Queue()

    def start(self) -> None:
        """Start (again) on this server's port and return once it accepts connections."""
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self._log = queue.Queue()
        self._process = subprocess.Popen(
            [
                binary,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
                *("--enable-debug-command", "local", "--loglevel", "notice"),
                *self._options,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self._workdir,
        )
        threading.Thread(target=_drain, args=(self._process, self._log), daemon=True).start()
        if not self.wait_for_log(b"Ready to accept connections"):
            self.stop()
            raise RuntimeError(f"redis-server on port {self.port} did not start")

    def wait_for_log(self, text: bytes, timeout_s: float = 10) -> bool:
        """Block until the server logs ``text``; False if it exits or stays silent first."""
        while True:
            try:
                line = self._log.get(timeout=timeout_s)
            except queue.Empty:
                return False
            if not line:
                return False
            if text in line:
                return True

    def stop(self) -> None:
        """Kill the server (no persistence: everything it held is gone)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def client(self, **options: object) -> Redis:
        """A new client with its own connection pool and no retries of its own."""
        settings: dict[str, object] = {
            "socket_connect_timeout": 2,
            "socket_timeout": 2,
            "retry": Retry(NoBackoff(), 0),
        }
        settings.update(options)
        return Redis(host="127.0.0.1", port=self.port, **settings)  # type: ignore[arg-type]


def _drain(process: subprocess.Popen[bytes], log: queue.Queue[bytes]) -> None:
    assert process.stdout is not None
    with process.stdout:
        for line in process.stdout:
            log.put(line)
    log.put(b"")  # end of log: the process exited


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis_server(*options: str, workdir: Path | None = None) -> RedisServer:
    """A started server on a free port (another port is tried if this one was taken)."""
    for _ in range(5):
        server = RedisServer(_free_port(), *options, workdir=workdir)
        try:
            server.start()
        except RuntimeError:
            continue
        return server
    raise RuntimeError("could not start redis-server")


def start_redis_cluster(workdir: Path) -> list[RedisServer]:
    """Three masters sharing the 16384 slots, returned once every node reports state ok."""
    nodes = []
    for n in range(3):
        (workdir / str(n)).mkdir()
        nodes.append(start_redis_server("--cluster-enabled", "yes", workdir=workdir / str(n)))
    binary = shutil.which("redis-cli") or "/usr/bin/redis-cli"
    addresses = [f"127.0.0.1:{node.port}" for node in nodes]
    subprocess.run(
        [binary, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    for node in nodes:
        if not node.wait_for_log(b"Cluster state changed: ok"):
            raise RuntimeError(f"cluster node {node.port} did not reach state ok")
    return nodes


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server shared by the session; tests keep apart by key prefix."""
    server = start_redis_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, free to stop, restart or pause."""
    server = start_redis_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client of the shared server."""
    client = redis_server.client()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at ``T0``."""
    return FakeClock()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    """A 3-node Redis Cluster (no replicas) for the session, started on first use."""
    nodes = start_redis_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture(params=["memory", "redis", "cluster"])
async def store(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[LimitStore]:
    """Each store in turn: the contract tests run unchanged against all of them."""
    if request.param == "memory":
        yield MemoryStore(TIMING)
        return
    client: Redis | RedisCluster
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        client = server.client()
    else:
        nodes: list[RedisServer] = request.getfixturevalue("redis_cluster")
        client = RedisCluster(host="127.0.0.1", port=nodes[0].port, socket_timeout=2)
    try:
        yield RedisStore(client, 2_000, timing=TIMING, prefix=prefix)
    finally:
        await client.aclose()
