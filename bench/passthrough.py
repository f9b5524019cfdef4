"""The bare pass-through: Sentinel's stack with nothing of Sentinel in it, the floor to beat.

hypercorn on uvloop, a Starlette app, one shared aiohttp ``ClientSession`` opened in the
lifespan, and one route that forwards ``POST /v1/chat/completions`` with the client's headers
and relays the upstream's status, content type, length and body chunks as they arrive: no
auth, no parsing, no policy, no logging. ``GET /healthz`` answers when it is serving.

    python -m bench.passthrough --bind 127.0.0.1:8081 --upstream http://127.0.0.1:9000/v1
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypedDict

import aiohttp
import uvicorn
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bench.loops import loop_runner

__all__ = ["POLICY_HEADERS", "create_app", "main"]

# Hop-by-hop and framing headers: aiohttp writes its own.
_SKIPPED_REQUEST_HEADERS = frozenset(
    {b"host", b"content-length", b"connection", b"transfer-encoding"}
)
_RELAYED_RESPONSE_HEADERS = ("Content-Type", "Content-Length")
POLICY_HEADERS = (
    (b"x-upstream-request-id", b"req_00000000000000000000000000000004"),
    (b"x-request-id", b"req_dd49a1a9fb5386209420d70cb5855e4c"),
    (b"x-ratelimit-limit-requests", b"100000000"),
    (b"x-ratelimit-remaining-requests", b"99999999"),
    (b"x-ratelimit-reset-requests", b"1m0.932s"),
    (b"x-ratelimit-limit-tokens", b"1000000000000"),
    (b"x-ratelimit-remaining-tokens", b"999999995895"),
    (b"x-ratelimit-reset-tokens", b"1m0.932s"),
)
"""With ``--policy-headers``: the headers Sentinel adds to a policy key's answer (its request
ids and OpenAI's six rate-limit headers), fixed values of the same lengths. What the engine
alone charges for writing them is the difference to the plain pass-through."""


class _State(TypedDict):
    session: aiohttp.ClientSession


class _Forward:
    """The one proxying endpoint, as a plain ASGI app (Starlette's cheapest kind of route)."""

    def __init__(self, upstream: str, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
        self._url = upstream.rstrip("/") + "/chat/completions"
        self._extra = list(extra)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session: aiohttp.ClientSession = scope["state"]["session"]
        body = await _read_body(receive)
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in scope["headers"]
            if name not in _SKIPPED_REQUEST_HEADERS
        ]
        async with session.post(self._url, data=body, headers=headers) as response:
            relayed = [
                (name.lower().encode("latin-1"), response.headers[name].encode("latin-1"))
                for name in _RELAYED_RESPONSE_HEADERS
                if name in response.headers
            ]
            relayed += self._extra
            await send(
                {"type": "http.response.start", "status": response.status, "headers": relayed}
            )
            read = response.content.readany
            while chunk := await read():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)


async def _healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def create_app(upstream: str, extra: Sequence[tuple[bytes, bytes]] = ()) -> Starlette:
    """The pass-through app forwarding to ``upstream`` (a base URL ending in ``/v1``), adding
    the ``extra`` headers to every answer."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[_State]:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        ) as session:
            yield {"session": session}

    routes = [
        Route("/v1/chat/completions", _Forward(upstream, extra), methods=["POST"]),
        Route("/healthz", _healthz),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _hypercorn_config(bind: str) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [bind]
    config.worker_class = "uvloop"
    config.accesslog = None
    config.errorlog = "-"
    config.keep_alive_timeout = 75
    return config


def _uvicorn_server(app: Any, bind: str) -> uvicorn.Server:
    host, _, port = bind.rpartition(":")
    config = uvicorn.Config(
        app,
        host=host,
        port=int(port),
        loop="none",  # the running uvloop
        http="httptools",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=75,
    )
    return uvicorn.Server(config)


async def _serve(
    bind: str, upstream: str, engine: str, extra: Sequence[tuple[bytes, bytes]]
) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    app: Any = create_app(upstream, extra)  # Starlette's ASGI types are looser than the engines'
    if engine == "hypercorn":
        await serve(app, _hypercorn_config(bind), shutdown_trigger=stopping.wait)
        return
    server = _uvicorn_server(app, bind)
    serving = asyncio.create_task(server.serve())
    await stopping.wait()
    server.should_exit = True
    await serving


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m bench.passthrough", description=__doc__)
    parser.add_argument("--bind", default="127.0.0.1:8081", help="HOST:PORT to listen on")
    parser.add_argument("--upstream", required=True, help="upstream base URL ending in /v1")
    parser.add_argument(
        "--engine", choices=("hypercorn", "uvicorn"), default="hypercorn", help="ASGI server"
    )
    parser.add_argument(
        "--policy-headers",
        action="store_true",
        help="add the headers Sentinel adds to a policy key's answer (fixed values)",
    )
    args = parser.parse_args(argv)
    extra = POLICY_HEADERS if args.policy_headers else ()
    with loop_runner() as runner:
        runner.run(_serve(args.bind, args.upstream, args.engine, extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
