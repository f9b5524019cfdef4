"""Relaying an upstream body to the client as it arrives, and releasing it when anyone leaves.

Bytes are forwarded chunk by chunk with no re-buffering. The response start is sent with the
first chunk, so that until then an upstream failure is still an ordinary error status. After
it, a failure becomes an in-band SSE ``error`` event for event streams, or an aborted
connection for anything else — never a clean end that looks like success. A client
disconnect cancels the relay at once (a watcher starts the first time the relay waits for
the upstream; until then it only relays what has already arrived); the caller closes the
upstream response.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import aiohttp

from sentinel.deadline import LooseDeadline
from sentinel.errors import SentinelError, UpstreamError
from sentinel.http.asgi import Message, Receive, Send
from sentinel.http.body import ClientStalled
from sentinel.http.context import RequestContext
from sentinel.http.headers import relay_headers
from sentinel.upstream.client import upstream_errors

__all__ = ["DisconnectWatcher", "StreamTap", "relay"]


class StreamTap(Protocol):
    """What the relay feeds every chunk to (the stream accumulator)."""

    def feed(self, chunk: bytes) -> bytes: ...
    def finish(self) -> bytes: ...

    @property
    def is_complete(self) -> bool: ...


class DisconnectWatcher:
    """Watches ``receive`` for ``http.disconnect`` and cancels the relaying task when it comes."""

    def __init__(self, receive: Receive) -> None:
        self.disconnected = False
        self._relaying = asyncio.current_task()
        self._task = asyncio.create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            continue
        self.disconnected = True
        if self._relaying is not None:
            self._relaying.cancel()

    def close(self) -> None:
        """Stop watching (the relay is over)."""
        self._task.cancel()


def _body(chunk: bytes) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": True}


async def relay(
    response: aiohttp.ClientResponse,
    ctx: RequestContext,
    send: Send,
    receive: Receive,
    *,
    tap: StreamTap | None,
    keep_length: bool,
    after_disconnect: Callable[[], Awaitable[object]] | None = None,
    before_start: Callable[[bytes], Awaitable[object]] | None = None,
    write_timeout_s: float | None = None,
) -> None:
    """Forward ``response`` to the client; ``tap`` sees every chunk and may rewrite it.

    ``after_disconnect`` runs when the client left mid-relay (to drain the stream for usage);
    ``before_start`` sees the first chunk before the client gets anything (to claim the
    object it names); a write the client does not take within ``write_timeout_s`` ends the
    relay with ``ClientStalled``.
    """
    headers, ctx.dropped_headers = relay_headers(response.raw_headers, keep_length=keep_length)
    start = {"type": "http.response.start", "status": response.status, "headers": headers}
    watchers: list[DisconnectWatcher] = []  # started the first time the relay has to wait

    def watch() -> None:
        if not watchers:
            watchers.append(DisconnectWatcher(receive))

    try:
        await _pump(response, ctx, send, start, tap, watch, before_start, write_timeout_s)
    except asyncio.CancelledError:
        if not (watchers and watchers[0].disconnected):
            raise
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        ctx.outcome = "client_disconnected"
        if after_disconnect is not None:
            await after_disconnect()
    finally:
        if watchers:
            watchers[0].close()


async def _pump(
    response: aiohttp.ClientResponse,
    ctx: RequestContext,
    send: Send,
    start: Message,
    tap: StreamTap | None,
    watch: Callable[[], None],
    before_start: Callable[[bytes], Awaitable[object]] | None,
    write_timeout_s: float | None,
) -> None:
    content = response.content
    started = False
    try:
        with upstream_errors(ctx.upstream or "upstream", started=True):
            while True:
                # What has arrived is relayed at once; only a wait for more needs the
                # disconnect watcher (a short reply that came whole never starts one).
                chunk = content.read_nowait()
                if not chunk and not content.is_eof():
                    watch()
                    waited = time.perf_counter_ns()
                    try:
                        chunk = await content.readany()
                    finally:
                        ctx.upstream_wait_ns += time.perf_counter_ns() - waited
                if not chunk:
                    break
                out = tap.feed(chunk) if tap is not None else chunk
                if not started:
                    if before_start is not None:
                        await before_start(chunk)
                    await send(start)
                    started = True
                if out:
                    await _write(send, _body(out), write_timeout_s)
        if not started:
            await send(start)
            started = True
        if tap is not None:
            await _finish_tap(tap, send, ctx)
    except SentinelError:
        if started:
            ctx.outcome = "upstream_interrupted"
        raise  # before the start: an error status; after it: in-band SSE or an aborted body
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _write(send: Send, message: Message, timeout_s: float | None) -> None:
    """Send one body chunk; a client that does not take it in time has stopped reading."""
    if timeout_s is None:
        await send(message)
        return
    try:
        with LooseDeadline(asyncio.get_running_loop().time() + timeout_s):
            await send(message)
    except TimeoutError:
        raise ClientStalled() from None


async def _finish_tap(tap: StreamTap, send: Send, ctx: RequestContext) -> None:
    tail = tap.finish()
    if tail:
        await send(_body(tail))
    if not tap.is_complete:
        raise UpstreamError(
            "The upstream provider ended the stream before it was complete.",
            code="upstream_interrupted",
            upstream=ctx.upstream,
        )
