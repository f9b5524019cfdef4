"""``python -m bench.passthrough``: the bare pass-through, with and without the headers a
policy key's answer carries."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bench.children import Child, free_port, python_argv
from bench.http1 import ResponseParser
from bench.passthrough import POLICY_HEADERS
from bench.scenarios import build_request
from bench.targets import start_mock


def _answer(port: int, kind: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(build_request(kind, "127.0.0.1", port))
        parser = ResponseParser()
        received = b""
        while not parser.feed(chunk := connection.recv(65536)):
            received += chunk
        return parser.status, received + chunk


@pytest.mark.parametrize("engine", ["hypercorn", "uvicorn"])
@pytest.mark.parametrize("policy_headers", [False, True])
def test_relays_the_answer_adding_only_what_it_was_told(
    tmp_path: Path, engine: str, policy_headers: bool
) -> None:
    mock = start_mock(tmp_path, None)
    port = free_port()
    argv = python_argv(
        "bench.passthrough",
        "--bind",
        f"127.0.0.1:{port}",
        "--upstream",
        mock.base_url,
        "--engine",
        engine,
        *(["--policy-headers"] if policy_headers else []),
    )
    with mock.child, Child("bare", argv, tmp_path / "bare.log", None) as bare:
        bare.wait_ready(port, "/healthz")
        for kind in ("json", "stream"):
            status, received = _answer(port, kind)
            head = received.partition(b"\r\n\r\n")[0].lower()
            assert status == 200
            for name, value in POLICY_HEADERS:
                assert (b"\r\n" + name + b": " + value + b"\r\n" in head + b"\r\n") is (
                    policy_headers
                )
