"""``sentinel serve`` refusing to start, run as a real process: one line per problem, exit 2."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import CLIENT_KEY
from tests.support.processes import ROOT, free_port

STARTUP_FAILED = 2
QUICK_S = 15  # a refusal takes an interpreter start and a config load, never a timeout


def _config(tmp_path: Path, port: int, extra: str = "") -> Path:
    digest = hashlib.sha256(CLIENT_KEY.encode()).hexdigest()
    path = tmp_path / "sentinel.toml"
    path.write_text(
        f'[server]\nbind = "127.0.0.1:{port}"\n'
        '[[upstreams]]\nname = "mock"\nbase_url = "http://127.0.0.1:9/v1"\n'
        f'[[keys]]\nname = "team-a"\nkey_sha256 = "sha256:{digest}"\n' + extra
    )
    return path


def _run(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``python -m sentinel ARGS`` to completion; the result and how long it took."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "sentinel", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "SENTINEL_CONFIG": ""},
        cwd=cwd,
        timeout=60,
    )
    return result, time.monotonic() - started


def _refused(result: subprocess.CompletedProcess[str], elapsed_s: float) -> list[str]:
    """The problem lines of a clean refusal, after checking what every refusal must be."""
    output = result.stdout + result.stderr
    assert result.returncode == STARTUP_FAILED, output
    assert "Traceback" not in output and "Unclosed" not in output, output
    assert elapsed_s < QUICK_S
    return [
        line
        for line in result.stderr.splitlines()
        if line.startswith("sentinel: ") and not line.startswith("sentinel: starting on ")
    ]


def test_bad_bind_option_is_one_line(tmp_path: Path) -> None:
    """A ``--bind`` the config check would reject is named in one line, exit 2."""
    config = _config(tmp_path, free_port())
    lines = _refused(*_run("serve", "--config", str(config), "--bind", "nonsense", cwd=tmp_path))
    assert lines == ["sentinel: --bind: expected HOST:PORT, got 'nonsense'"]


def test_config_file_problems_are_one_line_each(tmp_path: Path) -> None:
    """Each problem of the config file is its own line naming the file and the key."""
    config = _config(tmp_path, free_port(), "[limits]\nrpmm = 1\n[usage]\nflush_interval_ms = 0\n")
    lines = _refused(*_run("serve", "--config", str(config), cwd=tmp_path))
    assert len(lines) == 2, lines
    assert all(line.startswith(f"sentinel: {config}: ") for line in lines)
    assert any("limits.rpmm" in line for line in lines)
    assert any("usage.flush_interval_ms" in line for line in lines)


def test_spool_dir_that_cannot_be_created(tmp_path: Path) -> None:
    """A spool directory below a regular file is refused before anything opens."""
    (tmp_path / "afile").write_text("")
    extra = (
        f'[usage]\nspool_dir = "{tmp_path}/afile/spool"\njsonl_path = "{tmp_path}/usage.jsonl"\n'
    )
    config = _config(tmp_path, free_port(), extra)
    lines = _refused(*_run("serve", "--config", str(config), cwd=tmp_path))
    assert len(lines) == 1 and "usage.spool_dir" in lines[0], lines
    assert "not a directory" in lines[0]


def test_jsonl_directory_that_cannot_be_created(tmp_path: Path) -> None:
    """A JSONL file whose directory would have to sit below a regular file is refused."""
    (tmp_path / "afile").write_text("")
    extra = (
        f'[usage]\nspool_dir = "{tmp_path}/spool"\n'
        f'jsonl_path = "{tmp_path}/afile/logs/usage.jsonl"\n'
    )
    config = _config(tmp_path, free_port(), extra)
    lines = _refused(*_run("serve", "--config", str(config), cwd=tmp_path))
    assert len(lines) == 1 and "usage.jsonl_path" in lines[0], lines


def test_port_in_use(tmp_path: Path) -> None:
    """A port another socket listens on is one line naming the address, exit 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _config(tmp_path, port)
        lines = _refused(*_run("serve", "--config", str(config), cwd=tmp_path))
    assert lines == [
        f"sentinel: cannot start: server.bind: cannot listen on 127.0.0.1:{port}: "
        "Address already in use"
    ]


def test_lifespan_failure_after_the_session_opened(tmp_path: Path) -> None:
    """A spool that fails in the lifespan closes the open HTTP session: one line, no warning."""
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "poison").write_text("")  # the spool's own subdirectory, taken by a file
    extra = f'[usage]\nspool_dir = "{spool}"\njsonl_path = "{tmp_path}/usage.jsonl"\n'
    config = _config(tmp_path, free_port(), extra)
    lines = _refused(*_run("serve", "--config", str(config), cwd=tmp_path))
    assert len(lines) == 1 and lines[0].startswith("sentinel: cannot start: usage tracker: "), lines


def test_redis_url_the_client_rejects(tmp_path: Path) -> None:
    """A Redis URL that parses as a URL but not as Redis options stops the lifespan in one line."""
    extra = '[redis]\nurl = "redis://:hunter2-secret@127.0.0.1:6379/0?db=zero"\n'
    config = _config(tmp_path, free_port(), extra)
    result, elapsed_s = _run("serve", "--config", str(config), cwd=tmp_path)
    lines = _refused(result, elapsed_s)
    assert len(lines) == 1 and lines[0].startswith("sentinel: cannot start: redis: "), lines
    assert "hunter2-secret" not in result.stdout + result.stderr


def test_check_config_reports_unwritable_paths(tmp_path: Path) -> None:
    """``check-config`` names the spool and JSONL paths ``serve`` could not write, exit 1."""
    (tmp_path / "afile").write_text("")
    extra = (
        f'[usage]\nspool_dir = "{tmp_path}/afile/spool"\n'
        f'jsonl_path = "{tmp_path}/afile/usage.jsonl"\n'
    )
    config = _config(tmp_path, free_port(), extra)
    result, _ = _run("check-config", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "usage.spool_dir" in result.stderr and "usage.jsonl_path" in result.stderr
    assert "Traceback" not in result.stderr
