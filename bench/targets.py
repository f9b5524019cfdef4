"""How each process of the benchmark is started: the mock upstream and the proxies under test.

``direct`` has no proxy: the load generator talks to the mock itself. ``bare`` is
``bench.passthrough``; ``sentinel`` is ``sentinel serve`` on a generated config with one
upstream (the mock) and one client key, logging as it would in production.
"""

from __future__ import annotations

from pathlib import Path

from bench.children import Child, free_port, python_argv
from bench.scenarios import CLIENT_KEY

__all__ = ["UPSTREAM_KEY", "Target", "sentinel_config", "start_mock", "start_proxy"]

UPSTREAM_KEY = "sk-bench-upstream"
MOCK_CHUNKS = 20


class Target:
    """A running process the load generator can be pointed at."""

    def __init__(self, child: Child, port: int) -> None:
        self.child = child
        self.port = port

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (``.../v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"


def start_mock(workdir: Path, cpus: frozenset[int] | None) -> Target:
    """Start ``sentinel mock-upstream`` and wait until it serves ``/v1/models``."""
    port = free_port()
    argv = python_argv(
        "sentinel", "mock-upstream", "--bind", f"127.0.0.1:{port}", "--chunks", str(MOCK_CHUNKS)
    )
    child = Child("mock upstream", argv, workdir / "mock.log", cpus)
    _ready(child, port, "/v1/models")
    return Target(child, port)


def start_proxy(mode: str, workdir: Path, upstream: str, cpus: frozenset[int] | None) -> Target:
    """Start the ``bare`` or ``sentinel`` proxy in front of ``upstream`` and wait until ready."""
    port = free_port()
    bind = f"127.0.0.1:{port}"
    if mode == "bare":
        argv = python_argv("bench.passthrough", "--bind", bind, "--upstream", upstream)
    elif mode == "sentinel":
        config = workdir / "sentinel.toml"
        config.write_text(sentinel_config(upstream, bind))
        argv = python_argv("sentinel", "serve", "--config", str(config), "--bind", bind)
    else:
        raise ValueError(f"no proxy for mode {mode!r}")
    child = Child(mode, argv, workdir / f"{mode}.log", cpus)
    _ready(child, port, "/healthz")
    return Target(child, port)


def _ready(child: Child, port: int, path: str) -> None:
    try:
        child.wait_ready(port, path)
    except BaseException:
        child.stop()
        raise


def sentinel_config(upstream: str, bind: str) -> str:
    """The TOML config Sentinel runs on: the mock as its only upstream, one client key."""
    return (
        "[server]\n"
        f'bind = "{bind}"\n'
        "\n"
        "[[upstreams]]\n"
        'name = "mock"\n'
        f'base_url = "{upstream}"\n'
        f'api_key = "{UPSTREAM_KEY}"\n'
        "\n"
        "[[keys]]\n"
        'name = "bench"\n'
        f'key = "{CLIENT_KEY}"\n'
    )
