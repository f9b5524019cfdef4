"""A Redis Sentinel deployment for the tests: a primary, one replica and three sentinels.

Every process is a real ``redis-server`` on a free loopback port (the sentinels run it with
``--sentinel`` and a config file of their own in the test's directory). The sentinels agree
that the primary is down after 500 ms and need two of them to say so (``quorum 2``).
"""

from __future__ import annotations

import asyncio
import queue
import shutil
import subprocess
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from tests.support.processes import free_port
from tests.support.redis_server import RedisServer, start_redis_server

__all__ = ["MASTER_NAME", "RedisHA", "SentinelServer", "start_redis_ha"]

MASTER_NAME = "mymaster"


class SentinelServer:
    """One ``redis-server --sentinel`` child process, watching ``MASTER_NAME``."""

    def __init__(self, port: int, primary_port: int, workdir: Path) -> None:
        self.port = port
        self._config = workdir / f"sentinel-{port}.conf"
        self._config.write_text(  # the sentinel rewrites this file: it must be its own
            f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 500\n"
            f"sentinel failover-timeout {MASTER_NAME} 2000\n"
        )
        self._process: subprocess.Popen[bytes] | None = None
        self._log: queue.Queue[bytes] = queue.Queue()
        self.lines: list[bytes] = []
        """Every line it logged so far (``+sdown``, ``+switch-master``, ...)."""

    def start(self) -> None:
        """Start and return once it monitors the primary."""
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self._process = subprocess.Popen(
            [binary, str(self._config), "--sentinel"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._drain, daemon=True).start()
        while True:
            try:
                line = self._log.get(timeout=10)
            except queue.Empty:
                line = b""
            if not line:
                self.stop()
                raise RuntimeError(f"sentinel on port {self.port} did not start")
            if b"+monitor master" in line:
                return

    def stop(self) -> None:
        """Kill it."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def client(self) -> Redis:
        """A client of this sentinel (for ``SENTINEL ...`` commands)."""
        return Redis(
            host="127.0.0.1",
            port=self.port,
            socket_connect_timeout=1,
            socket_timeout=1,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )

    def _drain(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                self.lines.append(line)
                self._log.put(line)
        self._log.put(b"")


@dataclass
class RedisHA:
    """A primary, its replica and three sentinels; ``stop`` kills whatever still runs."""

    primary: RedisServer
    replica: RedisServer
    sentinels: list[SentinelServer]

    @property
    def addresses(self) -> tuple[str, ...]:
        """The sentinels as ``[redis] sentinels`` lists them."""
        return tuple(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)

    async def master_ports(self) -> set[int]:
        """The primary's port as each sentinel that answers names it now."""
        ports: set[int] = set()
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                command = cast(Callable[..., Awaitable[object]], client.execute_command)
                reply = await command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
                if isinstance(reply, list | tuple) and len(reply) == 2:
                    ports.add(int(reply[1]))
            except (OSError, RedisError):
                pass
            finally:
                await client.aclose()
        return ports

    async def wait_ready(self, timeout_s: float = 15) -> None:
        """Until every sentinel knows the other two and the replica, and the replica is in
        sync: only then can they agree on a failover."""
        async with asyncio.timeout(timeout_s):
            for sentinel in self.sentinels:
                client = sentinel.client()
                try:
                    while True:
                        command = cast(Callable[..., Awaitable[object]], client.execute_command)
                        state = await command("SENTINEL", "MASTER", MASTER_NAME)
                        fields = _fields(state)
                        if (
                            fields.get("num-other-sentinels") == "2"
                            and fields.get("num-slaves") == "1"
                        ):
                            break
                        await asyncio.sleep(0.05)
                finally:
                    await client.aclose()
            replica = self.replica.client(decode_responses=True)
            try:
                while (await replica.info("replication")).get("master_link_status") != "up":
                    await asyncio.sleep(0.05)
            finally:
                await replica.aclose()

    def stop(self) -> None:
        """Kill every process (those already stopped are left alone)."""
        for sentinel in self.sentinels:
            sentinel.stop()
        self.replica.stop()
        self.primary.stop()


def _fields(state: object) -> dict[str, str]:
    """``SENTINEL MASTER``'s reply (a dict, or a flat name/value list) as a dict."""
    if isinstance(state, dict):
        return {str(k): str(v) for k, v in state.items()}
    if isinstance(state, list):
        return {str(k): str(v) for k, v in zip(state[::2], state[1::2], strict=True)}
    return {}


def start_redis_ha(workdir: Path) -> RedisHA:
    """Start the primary, the replica and three sentinels; on any failure, stop them all."""
    started: list[RedisServer | SentinelServer] = []
    try:
        (workdir / "primary").mkdir(exist_ok=True)
        (workdir / "replica").mkdir(exist_ok=True)  # a replica keeps the synced RDB in its dir
        primary = start_redis_server(workdir=workdir / "primary")
        started.append(primary)
        replica = start_redis_server(
            "--replicaof", "127.0.0.1", str(primary.port), workdir=workdir / "replica"
        )
        started.append(replica)
        sentinels = []
        for _ in range(3):
            sentinel = _start_sentinel(primary.port, workdir)
            started.append(sentinel)
            sentinels.append(sentinel)
    except BaseException:
        for process in started:
            process.stop()
        raise
    return RedisHA(primary=primary, replica=replica, sentinels=sentinels)


def _start_sentinel(primary_port: int, workdir: Path) -> SentinelServer:
    for _ in range(5):  # another port if this one was taken meanwhile
        sentinel = SentinelServer(free_port(), primary_port, workdir)
        try:
            sentinel.start()
        except RuntimeError:
            continue
        return sentinel
    raise RuntimeError("could not start redis-server --sentinel")
