"""Fixtures for token counting: encodings loaded once per session with the network blocked.

``blocked_network`` makes every way tiktoken (or anything else) could reach the network raise
``NetworkAttempted``, a ``BaseException`` so that no ``except Exception`` can swallow it, and
records the attempt so the test fails even if something did.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import tiktoken.load

from sentinel.tokens import Encodings, ModelCounter, PromptCounter


class NetworkAttempted(BaseException):
    """Raised when code under test tries to reach the network."""


@contextmanager
def blocked_network() -> Iterator[list[str]]:
    """Block sockets and tiktoken's downloader; yields the list of attempts made."""
    attempts: list[str] = []

    def refuse(what: str) -> Any:
        def refused(*args: object, **kwargs: object) -> Any:
            attempts.append(f"{what}{args!r}")
            raise NetworkAttempted(what)

        return refused

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse("socket.connect"))
        mp.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
        mp.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
        mp.setattr(socket, "create_connection", refuse("create_connection"))
        mp.setattr(tiktoken.load, "read_file", refuse("tiktoken.load.read_file"))
        mp.setattr(tiktoken.load, "read_file_cached", refuse("tiktoken.load.read_file_cached"))
        yield attempts
    assert attempts == [], f"network attempted: {attempts}"


@pytest.fixture
def no_network() -> Iterator[list[str]]:
    """The network is blocked for this test."""
    with blocked_network() as attempts:
        yield attempts


@pytest.fixture(scope="session")
def encodings() -> Encodings:
    """cl100k_base and o200k_base, loaded once with the network blocked."""
    with blocked_network():
        return Encodings.load()


@pytest.fixture(scope="session")
def counter(encodings: Encodings) -> PromptCounter:
    """A prompt counter defaulting to o200k_base, as the config does."""
    return PromptCounter(encodings, "o200k_base")


@pytest.fixture(scope="session")
def gpt4(counter: PromptCounter) -> ModelCounter:
    """A cl100k model."""
    return counter.for_model("gpt-4")


@pytest.fixture(scope="session")
def gpt4o(counter: PromptCounter) -> ModelCounter:
    """An o200k model."""
    return counter.for_model("gpt-4o")
