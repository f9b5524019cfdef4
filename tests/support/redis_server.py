"""Real ``redis-server`` processes for the tests: private ports, stoppable, restartable.

Never the instance on 6379, never persisted. Servers are waited for by reading their log
until they report that they are ready, not by sleeping.
"""

from __future__ import annotations

import queue
import shutil
import socket
import subprocess
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = ["RedisServer", "debug_sleep", "start_redis_cluster", "start_redis_server"]


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

    def client(self, **options: Any) -> Redis:
        """A new client with its own connection pool and no retries of its own."""
        settings: dict[str, Any] = {
            "socket_connect_timeout": 2,
            "socket_timeout": 2,
            "retry": Retry(NoBackoff(), 0),
        }
        settings.update(options)
        return Redis(host="127.0.0.1", port=self.port, **settings)


async def debug_sleep(client: Redis, seconds: float) -> None:
    """Keep the server behind ``client`` busy for ``seconds`` (``DEBUG SLEEP``): it answers no
    client meanwhile."""
    # redis-py leaves execute_command unannotated; the reply of DEBUG SLEEP is OK.
    command = cast(Callable[..., Awaitable[object]], client.execute_command)
    await command("DEBUG", "SLEEP", str(seconds))


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
