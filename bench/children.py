"""The benchmark's subprocesses: started pinned to CPUs, polled until ready, always killed.

Every child runs in its own session (so a Ctrl-C in the terminal reaches only the benchmark,
which then stops them all) with stdout and stderr in a log file, and is stopped with SIGTERM to
its whole process group, then SIGKILL if it lingers.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from bench.scenarios import CLIENT_KEY

__all__ = [
    "REPO_ROOT",
    "Child",
    "ChildError",
    "CpuPlan",
    "Finishing",
    "free_port",
    "python_argv",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
_STOP_WAIT_S = 5.0
_POLL_S = 0.05


class ChildError(RuntimeError):
    """A child failed to start, to become ready, or to finish cleanly."""


@dataclass(frozen=True)
class CpuPlan:
    """Which CPUs each side runs on; None everywhere when there is only one CPU to use."""

    proxy: frozenset[int] | None
    load: frozenset[int] | None
    mock: frozenset[int] | None

    @classmethod
    def for_cpus(cls, cpus: Collection[int]) -> CpuPlan:
        """The proxy alone on the first CPU; the load generator and the mock on the others."""
        ordered = sorted(cpus)
        if len(ordered) < 2:
            return cls(None, None, None)
        proxy = frozenset(ordered[:1])
        if len(ordered) == 2:
            rest = frozenset(ordered[1:])
            return cls(proxy, rest, rest)
        return cls(proxy, frozenset(ordered[1:2]), frozenset(ordered[2:]))

    def describe(self) -> dict[str, list[int] | None]:
        """A JSON-ready view."""
        return {
            name: None if cpus is None else sorted(cpus)
            for name, cpus in (("proxy", self.proxy), ("load", self.load), ("mock", self.mock))
        }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _pinning(cpus: frozenset[int] | None) -> Callable[[], None] | None:
    if cpus is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin


def python_argv(module: str, *args: str) -> list[str]:
    """``python -m module args...`` with the interpreter running the benchmark."""
    return [sys.executable, "-m", module, *args]


class Child:
    """One long-running subprocess (the mock, or a proxy under test)."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, cpus: frozenset[int] | None
    ) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("wb") as log:
            self._process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                start_new_session=True,
                preexec_fn=_pinning(cpus),
            )

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._process.pid

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def wait_ready(self, port: int, path: str, timeout_s: float = 60.0) -> None:
        """Poll ``GET path`` until it answers 200; raise ``ChildError`` on exit or timeout."""
        self.wait_until(lambda: _answers(port, path), port, timeout_s)

    def wait_until(self, is_ready: Callable[[], bool], port: int, timeout_s: float = 60.0) -> None:
        """Poll ``is_ready`` until it holds; raise ``ChildError`` on exit or timeout."""
        deadline = time.monotonic() + timeout_s
        for _ in range(int(timeout_s / _POLL_S) + 1):
            if self._process.poll() is not None:
                raise ChildError(f"{self.name} exited with {self._process.returncode}")
            if is_ready():
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(_POLL_S)
        raise ChildError(f"{self.name} not ready on port {port} after {timeout_s:.0f} s")

    def stop(self) -> None:
        """SIGTERM the child's process group, then SIGKILL it if it does not exit in time."""
        if self._process.poll() is None:
            _signal_group(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(_STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(self._process.pid, signal.SIGKILL)  # stray grandchildren, if any
        if self._process.poll() is None:
            self._process.wait(_STOP_WAIT_S)

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the child's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # the child leads its own session, so its group id is its pid
    except (ProcessLookupError, PermissionError):
        pass


def _answers(port: int, path: str) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {CLIENT_KEY}"})
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


class Finishing:
    """A short-lived child running to its end; ``result`` waits for it and returns its stdout."""

    def __init__(self, argv: Sequence[str], cpus: frozenset[int] | None) -> None:
        self._argv = list(argv)
        self._process = subprocess.Popen(
            self._argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO_ROOT,
            start_new_session=True,
            preexec_fn=_pinning(cpus),
        )

    def __enter__(self) -> Finishing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def lines(self, timeout_s: float) -> Iterator[str]:
        """Its stdout, line by line as it comes; then ``ChildError`` if it failed or ran over."""
        name = self._argv[2]
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            self.stop()

        watchdog = threading.Timer(timeout_s, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            assert self._process.stdout is not None
            for line in self._process.stdout:
                yield line.decode()
            _, stderr = self._process.communicate()
        finally:
            watchdog.cancel()
            self.stop()
        if expired.is_set():
            raise ChildError(f"{name} ran over {timeout_s:.0f} s")
        if self._process.returncode != 0:
            tail = stderr.decode(errors="replace").strip().splitlines()[-5:]
            raise ChildError(f"{name} exited with {self._process.returncode}: {' | '.join(tail)}")

    def result(self, timeout_s: float) -> str:
        """All its stdout once it exits 0; ``ChildError`` if it fails or runs over (then killed)."""
        return "".join(self.lines(timeout_s))

    def stop(self) -> None:
        """Kill it if it still runs."""
        if self._process.poll() is None:
            _signal_group(self._process.pid, signal.SIGKILL)
            self._process.wait(_STOP_WAIT_S)
