"""Shared fixtures: a real mock upstream and a real Sentinel on loopback sockets.

Everything runs in the test's own event loop: the upstream is the built-in aiohttp mock, the
gateway is ``create_app`` served by hypercorn or uvicorn (``start_gateway`` runs each test on
both) on a socket bound to a free port, and clients talk to both over TCP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import io
import json
import socket
import sys
import types
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import aiohttp
import pytest
from hypercorn.config import Sockets

from sentinel.config import Config, KeyConfig, ServerConfig, UpstreamConfig, hash_key
from sentinel.mock import MockSettings, serve
from sentinel.server import serve_app
from sentinel.tokens import Encodings
from tests.support.redis_server import RedisServer, start_redis_cluster, start_redis_server

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

CLIENT_KEY = "sk-test-client-key-0123456789"
UPSTREAM_KEY = "sk-upstream-secret-key-9876543210"

# --- no secret in any log line of the whole run ----------------------------------------------

SECRETS: set[str] = {CLIENT_KEY, UPSTREAM_KEY}
"""Every secret a test hands Sentinel; ``running_gateway`` adds each config's secrets."""
_leaks: list[str] = []


# --- unit or end-to-end ------------------------------------------------------------------------

E2E_FIXTURES = frozenset(
    {"gateway", "start_gateway", "upstream", "lenient", "edge"}
    | {"redis_server", "private_redis", "redis_cluster"}
)
"""The fixtures that start a server: a test that uses one, even indirectly, is ``e2e``."""

STARTS_SERVER = frozenset(
    {"subprocess", "create_subprocess_exec", "Popen"}  # a process
    | {"serve", "serve_app", "running_gateway", "TCPSite", "start_server"}  # a listening socket
)
"""Names whose use, in a test, a fixture or any test helper they call, makes a test ``e2e``."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts a server or a process as ``e2e``: ``make check`` runs the
    others. Parameters that start one (a store ``on redis``) carry the mark themselves."""
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        if E2E_FIXTURES.intersection(item.fixturenames) or _starts_server(item):
            item.add_marker(pytest.mark.e2e)


def _starts_server(item: pytest.Function) -> bool:
    """Whether the test, or a fixture of the suite's it uses, reaches a name of STARTS_SERVER
    through the functions and classes of ``tests`` it calls."""
    defs = item._fixtureinfo.name2fixturedefs
    fixtures = [d.func for name in item.fixturenames for d in defs.get(name, ())]
    seen: set[int] = set()
    return any(_reaches_server(f, seen) for f in [item.function, *fixtures])


def _reaches_server(target: object, seen: set[int]) -> bool:
    target = inspect.unwrap(target) if callable(target) else target
    module = getattr(target, "__module__", None) or ""
    if id(target) in seen or not (module == "tests" or module.startswith("tests.")):
        return False
    seen.add(id(target))
    if inspect.isclass(target):
        return any(_reaches_server(member, seen) for member in vars(target).values())
    if not inspect.isfunction(target):
        return False
    names = _names(target.__code__)
    if names & STARTS_SERVER:
        return True
    scope = target.__globals__
    return any(_reaches_server(scope[name], seen) for name in names if name in scope)


def _names(code: types.CodeType) -> set[str]:
    """The global and attribute names a code object and the functions nested in it use."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Scan everything a test phase printed or logged (Sentinel logs to stdout) for secrets."""
    captured = report.capstdout + report.capstderr + report.caplog
    for secret in SECRETS:
        if secret in captured:
            _leaks.append(f"{report.nodeid} ({report.when}): a secret ending in {secret[-4:]!r}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when any captured output held a secret."""
    if _leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("SECRETS FOUND IN LOG OUTPUT:", red=True, bold=True)
            for leak in _leaks:
                reporter.write_line(f"  {leak}", red=True)


@dataclass
class Upstream:
    """A running mock upstream."""

    port: int
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def stats(self) -> dict[str, Any]:
        async with self.session.get(f"http://127.0.0.1:{self.port}/mock/stats") as r:
            result: dict[str, Any] = await r.json()
            return result

    async def requests(self, limit: int = 50) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/mock/requests?limit={limit}"
        async with self.session.get(url) as r:
            result: list[dict[str, Any]] = await r.json()
            return result


@dataclass
class Gateway:
    """A running Sentinel."""

    port: int
    config: Config
    key: str = CLIENT_KEY

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


def make_config(upstream_url: str, **server: Any) -> Config:
    """A config with one key and one upstream serving every model."""
    return Config(
        upstreams=(UpstreamConfig(name="mock", base_url=upstream_url, api_key=UPSTREAM_KEY),),
        keys=(KeyConfig(name="team-a", key_sha256=hash_key(CLIENT_KEY)),),
        server=ServerConfig(bind="127.0.0.1:0", **server),
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp client session for raw HTTP."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def upstream(http: aiohttp.ClientSession) -> AsyncIterator[Upstream]:
    """The built-in mock upstream on a free port."""
    runner, port = await serve("127.0.0.1", 0, MockSettings(chunks=5))
    try:
        yield Upstream(port=port, session=http)
    finally:
        await runner.cleanup()


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    sock.setblocking(False)
    return sock


StartGateway = Callable[[Config], Awaitable[Gateway]]


@functools.cache
def encodings() -> Encodings:
    """The tiktoken encodings, loaded once for the whole test run (≈0.5 s, ≈110 MB)."""
    return Encodings.load()


@asynccontextmanager
async def running_gateway(config: Config) -> AsyncIterator[Gateway]:
    """Sentinel served on a free loopback port, in the running loop, by the engine its config
    names (``serve_app``: hypercorn's ``worker_serve`` or uvicorn's ``Server.serve``, on the
    socket bound here, stopped by the trigger)."""
    SECRETS.update(config.secrets())
    sock = _listening_socket()
    port = sock.getsockname()[1]
    config = dataclasses.replace(
        config, server=dataclasses.replace(config.server, bind=f"127.0.0.1:{port}")
    )
    stop = asyncio.Event()

    async def stopped() -> None:
        await stop.wait()

    sockets = Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[])
    log_stream = io.TextIOWrapper(_TeeBuffer(), encoding="utf-8")
    task = asyncio.create_task(
        serve_app(config, sockets, stopped, encodings(), log_stream=log_stream)
    )
    try:
        await _wait_ready(port, task)
        yield Gateway(port=port, config=config)
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)


ENGINES = ("hypercorn", "uvicorn")
"""The HTTP servers every end-to-end test runs on (``[server] engine``)."""


@pytest.fixture(params=ENGINES, ids=ENGINES)
async def start_gateway(request: pytest.FixtureRequest) -> AsyncIterator[StartGateway]:
    """Start Sentinel for a given config, on the engine of this test's run (the config's
    ``server.engine`` replaced); every one started is stopped at teardown."""
    engine: Literal["hypercorn", "uvicorn"] = request.param
    async with AsyncExitStack() as stack:

        async def start(config: Config) -> Gateway:
            server = dataclasses.replace(config.server, engine=engine)
            config = dataclasses.replace(config, server=server)
            return await stack.enter_async_context(running_gateway(config))

        yield start


async def _wait_ready(port: int, task: asyncio.Task[None]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            if task.done():
                task.result()
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.01)
    raise RuntimeError("gateway did not become ready")


@pytest.fixture
async def gateway(upstream: Upstream, start_gateway: StartGateway) -> Gateway:
    """Sentinel in front of the mock upstream, with one client key."""
    return await start_gateway(make_config(upstream.url))


# --- real redis-servers (see tests/support/redis_server.py) ---------------------------------------


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


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    """A 3-node Redis Cluster (no replicas) for the session, started on first use."""
    nodes = start_redis_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


# --- the request lines Sentinel wrote ---------------------------------------------------------


_WRITTEN: list[bytes] = []
"""What the gateways wrote to their log stream since the current test began."""


class _TeeBuffer(io.BufferedIOBase):
    """A gateway's binary log stream: kept for ``request_lines``, and written to the stdout
    of the moment the gateway started (pytest's capture, which the secret scan reads)."""

    def __init__(self) -> None:
        super().__init__()
        self._out: BinaryIO = sys.stdout.buffer

    @property
    def name(self) -> str:
        return "<gateway log>"

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        written = bytes(data)
        _WRITTEN.append(written)
        return self._out.write(written)

    def flush(self) -> None:
        self._out.flush()


class RequestLines:
    """The ``request_finished`` lines the gateways of a test wrote, health probes aside."""

    def __init__(self) -> None:
        _WRITTEN.clear()

    def read(self) -> list[dict[str, Any]]:
        """Every request line so far."""
        lines = [json.loads(text) for text in b"".join(_WRITTEN).splitlines() if text[:1] == b"{"]
        return [
            line
            for line in lines
            if line.get("event") == "request_finished" and line.get("route") != "/healthz"
        ]

    async def wait(self, count: int = 1, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """The request lines, once there are at least ``count`` of them."""
        async with asyncio.timeout(timeout_s):
            while len(lines := self.read()) < count:
                await asyncio.sleep(0.01)
        return lines


@pytest.fixture
def request_lines() -> RequestLines:
    """The request lines the test's gateways write."""
    return RequestLines()
