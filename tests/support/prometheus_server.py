"""A real ``prometheus`` process for the tests: Debian's package, installed when missing.

It runs on a free loopback port with a throw-away storage directory and a generated config;
the Debian service is never started. Readiness is polled on ``/-/ready``, not slept for.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.processes import free_port

__all__ = [
    "PrometheusServer",
    "PrometheusUnavailable",
    "find_or_install_prometheus",
    "running_prometheus",
    "scrape_config",
]

_DEBIAN_BINARY = "/usr/bin/prometheus"


class PrometheusUnavailable(Exception):
    """No prometheus binary, and no way to install one here (the reason says why)."""


def find_or_install_prometheus() -> str:
    """The ``prometheus`` binary's path; installs Debian's package when running as root.

    Raises ``PrometheusUnavailable`` if it is missing and this user cannot install it; a
    failed installation as root raises ``CalledProcessError`` (that is a broken machine).
    """
    found = shutil.which("prometheus") or (
        _DEBIAN_BINARY if os.access(_DEBIAN_BINARY, os.X_OK) else None
    )
    if found:
        return found
    if os.geteuid() != 0:
        raise PrometheusUnavailable(
            "prometheus is not installed and installing it needs root: "
            "run `apt-get install -y prometheus` (or put a prometheus binary on PATH)"
        )
    if shutil.which("apt-get") is None:
        raise PrometheusUnavailable("prometheus is not installed and there is no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    return shutil.which("prometheus") or _DEBIAN_BINARY


class PrometheusServer:
    """A running Prometheus and a client for its HTTP query API."""

    def __init__(self, port: int, session: aiohttp.ClientSession, log: Path) -> None:
        self.port = port
        self.log = log
        self._session = session

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """``/api/v1/query`` at the current time: the result vector (raises on an error)."""
        async with self._session.get(f"{self.url}/api/v1/query", params={"query": expr}) as r:
            body = await r.json()
        if body.get("status") != "success":
            raise AssertionError(f"query failed: {expr}\n{json.dumps(body)}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def log_tail(self, lines: int = 30) -> str:
        """The end of Prometheus' own log, for failure messages."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def scrape_config(target: str, interval_s: int, bearer: str | None) -> dict[str, Any]:
    """A prometheus.yml (as a dict; YAML is a superset of JSON) scraping one target."""
    job: dict[str, Any] = {
        "job_name": "sentinel",
        "scrape_interval": f"{interval_s}s",
        "scrape_timeout": f"{interval_s}s",
        "metrics_path": "/metrics",
        "static_configs": [{"targets": [target]}],
    }
    if bearer is not None:
        job["authorization"] = {"type": "Bearer", "credentials": bearer}
    return {"global": {"scrape_interval": f"{interval_s}s"}, "scrape_configs": [job]}


@asynccontextmanager
async def running_prometheus(
    binary: str, workdir: Path, config: dict[str, Any], timeout_s: float = 20
) -> AsyncIterator[PrometheusServer]:
    """Prometheus on a free loopback port with ``config``; killed on exit."""
    config_path = workdir / "prometheus.yml"
    config_path.write_text(json.dumps(config, indent=2))
    log = workdir / "prometheus.log"
    port = free_port()
    with log.open("wb") as log_file:
        child = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            stdout=log_file,
            stderr=log_file,
            cwd=workdir,
        )
    try:
        async with aiohttp.ClientSession() as session:
            server = PrometheusServer(port, session, log)
            await _wait_ready(server, child, timeout_s)
            yield server
    finally:
        if child.returncode is None:
            child.terminate()
            try:
                await asyncio.wait_for(child.wait(), 10)
            except TimeoutError:
                child.kill()
                await child.wait()


async def _wait_ready(
    server: PrometheusServer, child: asyncio.subprocess.Process, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if child.returncode is not None:
                raise AssertionError(f"prometheus exited early:\n{server.log_tail()}")
            try:
                async with session.get(f"{server.url}/-/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"prometheus never became ready:\n{server.log_tail()}")
