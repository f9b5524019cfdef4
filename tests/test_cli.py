"""The ``sentinel`` command line, run as a real process."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, Upstream
from tests.support.processes import ROOT, free_port, wait_healthy


def sentinel(
    *args: str, stdin: str = "", env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sentinel ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "sentinel", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=60,
    )


def test_keys_hash_prints_sha256_form() -> None:
    """``keys hash`` reads a key on stdin and prints its sha256:<hex> form."""
    result = sentinel("keys", "hash", stdin="sk-team-a-secret\n")
    assert result.returncode == 0
    assert result.stdout.strip() == "sha256:" + hashlib.sha256(b"sk-team-a-secret").hexdigest()


def test_check_config_accepts_the_example() -> None:
    """The shipped example configuration is valid."""
    env = {"OPENAI_API_KEY": "sk-x", "SENTINEL_KEY_TEAM_A": "sk-team-a-0123456789"}
    result = sentinel("check-config", "--config", "deploy/sentinel.example.toml", env=env)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_check_config_reports_every_problem(tmp_path: Path) -> None:
    """A bad file lists every problem with its path, exits 1, and prints no traceback."""
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[server]\nbindd = "x"\nworkers = "two"\n[[upstreams]]\nname = "a"\nbase_url = "ftp://x"\n'
    )
    result = sentinel("check-config", "--config", str(bad))
    assert result.returncode == 1
    assert "server.bindd" in result.stderr and "server.workers" in result.stderr
    assert "upstreams[0].base_url" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def _write_config(tmp_path: Path, upstream_url: str, port: int) -> Path:
    digest = hashlib.sha256(CLIENT_KEY.encode()).hexdigest()
    path = tmp_path / "sentinel.toml"
    path.write_text(
        f'[server]\nbind = "127.0.0.1:{port}"\n'
        f'[[upstreams]]\nname = "mock"\nbase_url = "{upstream_url}"\napi_key = "env:UP_KEY"\n'
        f'[[keys]]\nname = "team-a"\nkey_sha256 = "sha256:{digest}"\n'
    )
    return path


@asynccontextmanager
async def process(
    *args: str, env: dict[str, str], cwd: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A ``python -m sentinel`` child, stopped with SIGTERM at the end."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sentinel",
        *args,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield child
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
            await asyncio.wait_for(child.wait(), 30)


async def test_serve_proxies_and_stops_cleanly_on_sigterm(
    upstream: Upstream, tmp_path: Path
) -> None:
    """``sentinel serve`` proxies a request on a real socket and exits 0 on SIGTERM."""
    port = free_port()
    config = _write_config(tmp_path, upstream.url, port)
    env = {"UP_KEY": UPSTREAM_KEY}
    async with process("serve", "--config", str(config), env=env, cwd=tmp_path) as child:
        await wait_healthy(f"http://127.0.0.1:{port}/healthz")
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"http://127.0.0.1:{port}/v1/embeddings",
                json={"model": "text-embedding-3-small", "input": "hi"},
                headers={"Authorization": f"Bearer {CLIENT_KEY}"},
            ) as response:
                assert response.status == 200
        child.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(child.wait(), 30) == 0
        assert child.stdout is not None
        lines = (await child.stdout.read()).decode()
    assert '"event":"request_finished"' in lines
    assert UPSTREAM_KEY not in lines and CLIENT_KEY not in lines


async def test_serve_without_config_prints_a_dev_key(tmp_path: Path) -> None:
    """With no config file at all, serve runs on defaults and announces a development key and
    a development admin token."""
    port = free_port()
    env = {"SENTINEL_CONFIG": "", "OPENAI_API_KEY": "sk-none"}
    env_without = {k: v for k, v in env.items() if v}
    env_without["XDG_STATE_HOME"] = str(tmp_path / "state")  # its keys' state file goes here
    async with process(
        "serve", "--bind", f"127.0.0.1:{port}", env=env_without, cwd=tmp_path
    ) as child:
        await wait_healthy(f"http://127.0.0.1:{port}/healthz")
        child.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(child.wait(), 30) == 0
        assert child.stderr is not None
        err = (await child.stderr.read()).decode()
    assert "development key" in err and "sk-sentinel-dev-" in err
    assert "development admin token" in err and "sentinel-admin-dev-" in err


async def test_mock_upstream_command_serves_models(tmp_path: Path) -> None:
    """``sentinel mock-upstream`` serves an OpenAI-compatible model list."""
    port = free_port()
    async with process("mock-upstream", "--bind", f"127.0.0.1:{port}", env={}, cwd=tmp_path):
        await wait_healthy(f"http://127.0.0.1:{port}/v1/models")


def test_mock_upstream_rejects_a_bad_fault() -> None:
    """A bad knob is a one-line error and exit 1, not a traceback."""
    result = sentinel("mock-upstream", "--fault", "explode", "--bind", "127.0.0.1:0")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "mock-upstream:" in result.stderr
