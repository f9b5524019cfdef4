"""The load generator: closed-loop HTTP/1.1 keep-alive clients on raw asyncio transports.

Each connection sends pre-encoded requests, feeds what arrives to a ``ResponseParser`` and
sends the next request from inside ``data_received`` the moment a response ends: no
coroutine, future or task per request, so the client costs a small fraction of what the
proxies under test do. Latency is measured to the last byte of each response. With more
than one client key (``--keys N``), each request carries the next key of the connection's
own cycle through all of them, the connections starting spread over the keys.

Run as ``python -m bench.load --port P --scenario json/1 --scenario json/16 ...``: for each
scenario (a request kind over a number of connections), in order, it warms up, measures a fixed
window (reading the watched proxy's CPU time at both ends of it), and prints one JSON
``Measurement`` line on stdout. One process serves all the scenarios of a target, so starting
the interpreter is paid once per target, not once per scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast

from bench.http1 import ProtocolError, ResponseParser
from bench.loops import loop_runner
from bench.measurement import Measurement, percentile
from bench.scenarios import ALL_KINDS, CLIENT_KEY, build_request, client_keys
from bench.window import Watched, Window

__all__ = ["Recorder", "main", "run_load"]

_MAX_FAILURES = 100
_RECONNECT_PAUSE_S = 0.01
_MAX_KEYS = 10_000  # client_keys numbers them with four digits


@dataclass
class Recorder:
    """Shared by all connections of a run: what completed when, and what went wrong."""

    ends_ns: list[int] = field(default_factory=list)
    latencies_ns: list[int] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    body_bytes: int = 0
    is_stopping: bool = False

    def record(self, end_ns: int, latency_ns: int, status: int, body_bytes: int) -> None:
        """One completed response."""
        self.ends_ns.append(end_ns)
        self.latencies_ns.append(latency_ns)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.body_bytes = body_bytes
        if status != 200:
            self.errors += 1

    def window(self, start_ns: int, end_ns: int) -> list[int]:
        """Sorted latencies of the responses that completed within [start_ns, end_ns]."""
        pairs = zip(self.ends_ns, self.latencies_ns, strict=True)
        return sorted(latency for end, latency in pairs if start_ns <= end <= end_ns)


class _Connection(asyncio.Protocol):
    """One keep-alive connection running requests back to back until the recorder stops."""

    def __init__(
        self, requests: Iterator[bytes], recorder: Recorder, done: asyncio.Future[str]
    ) -> None:
        self._requests = requests
        self._recorder = recorder
        self._done = done
        self._parser = ResponseParser()
        self._transport: asyncio.Transport | None = None
        self._sent_ns = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        self._sent_ns = time.perf_counter_ns()
        self._transport.write(next(self._requests))

    def data_received(self, data: bytes) -> None:
        try:
            is_complete = self._parser.feed(data)
        except ProtocolError:
            self._finish("protocol-error")
            return
        if is_complete:
            self._completed()

    def _completed(self) -> None:
        now = time.perf_counter_ns()
        parser = self._parser
        self._recorder.record(now, now - self._sent_ns, parser.status, parser.body_bytes)
        if not parser.is_keep_alive or parser.has_leftover:
            self._finish("closed" if not parser.is_keep_alive else "protocol-error")
        elif self._recorder.is_stopping:
            self._finish("finished")
        else:
            parser.reset()
            self._send()

    def eof_received(self) -> bool | None:
        if self._parser.feed_eof():
            self._completed()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish("lost")

    def _finish(self, outcome: str) -> None:
        if not self._done.done():
            self._done.set_result(outcome)
        if self._transport is not None:
            self._transport.close()


async def _drive(
    host: str, port: int, requests: Iterator[bytes], recorder: Recorder, deadline: float
) -> None:
    """Keep one connection busy until the recorder stops; reconnect after a close or a failure.

    Bounded by the deadline and by the number of failures, never by luck. ``requests`` never
    ends; a reconnected connection carries on where the closed one stopped.
    """
    loop = asyncio.get_running_loop()
    failures = 0
    while not recorder.is_stopping and failures < _MAX_FAILURES and loop.time() < deadline:
        done: asyncio.Future[str] = loop.create_future()
        transport: asyncio.Transport | None = None
        connection = functools.partial(_Connection, requests, recorder, done)
        try:
            async with asyncio.timeout_at(deadline):
                transport, _ = await loop.create_connection(connection, host, port)
                outcome = await done
        except (OSError, TimeoutError):
            recorder.errors += 1  # refused, reset while connecting, or a response that hung
            if transport is not None:
                transport.abort()
            return
        if outcome == "finished":
            return
        if outcome != "closed":  # a server closing after a complete response is legal
            recorder.errors += 1
            failures += 1
            await asyncio.sleep(_RECONNECT_PAUSE_S)


async def run_load(
    host: str,
    port: int,
    kind: str,
    connections: int,
    warmup_s: float,
    duration_s: float,
    *,
    watched: Watched | None = None,
    grace_s: float = 10.0,
    keys: Sequence[str] = (CLIENT_KEY,),
) -> Measurement:
    """Run one scenario and measure the window after the warm-up; requests carry ``keys`` in
    turn."""
    loop = asyncio.get_running_loop()
    recorder = Recorder()
    window = Window(watched or Watched())

    def close_window() -> None:
        recorder.is_stopping = True
        window.close()

    opening = loop.call_later(warmup_s, window.open)
    closing = loop.call_later(warmup_s + duration_s, close_window)
    deadline = loop.time() + warmup_s + duration_s + grace_s
    requests = [build_request(kind, host, port, key) for key in keys]
    await asyncio.gather(
        *(
            _drive(host, port, _cycle(requests, number, connections), recorder, deadline)
            for number in range(connections)
        )
    )
    if window.end is None:  # every connection gave up before the window closed
        opening.cancel()
        closing.cancel()
        close_window()
    return _summarize(recorder, window)


def _cycle(requests: Sequence[bytes], number: int, connections: int) -> Iterator[bytes]:
    """Connection ``number``'s endless cycle through every request, starting its share of the
    way in, so that the connections do not send the same key at the same time."""
    start = number * len(requests) // connections
    return itertools.cycle([*requests[start:], *requests[:start]])


def _summarize(recorder: Recorder, window: Window) -> Measurement:
    start_ns, end_ns = window.bounds_ns
    latencies = recorder.window(start_ns, end_ns)
    return Measurement(
        requests=len(latencies),
        errors=recorder.errors,
        seconds=(end_ns - start_ns) / 1e9,
        p50_us=percentile(latencies, 0.50) // 1000,
        p90_us=percentile(latencies, 0.90) // 1000,
        p99_us=percentile(latencies, 0.99) // 1000,
        max_us=(latencies[-1] if latencies else 0) // 1000,
        mean_us=round(sum(latencies) / len(latencies) / 1000, 1) if latencies else 0.0,
        body_bytes=recorder.body_bytes,
        statuses={str(status): count for status, count in sorted(recorder.statuses.items())},
        cpu_seconds=window.proxy_cpu,
        rss_bytes=window.proxy_rss,
        mock_cpu_seconds=window.mock_cpu,
        store_cpu_seconds=window.store_cpu,
        load_cpu_seconds=window.own_cpu,
        background_cpu_seconds=window.background_cpu,
    )


def _scenario(text: str) -> tuple[str, int]:
    kind, _, count = text.partition("/")
    if kind not in ALL_KINDS or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"expected KIND/CONNECTIONS with KIND in {ALL_KINDS}")
    return kind, int(count)


def _key_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= _MAX_KEYS:
        raise argparse.ArgumentTypeError(f"expected 1-{_MAX_KEYS} keys")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--scenario", type=_scenario, action="append", required=True, help="e.g. json/16"
    )
    parser.add_argument(
        "--keys", type=_key_count, default=1, help="client keys to spread requests over (1)"
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured")
    parser.add_argument("--proxy-pid", type=int, help="proxy process to read CPU and RSS of")
    parser.add_argument("--mock-pid", type=int, help="upstream process to read CPU of")
    parser.add_argument("--store-pid", type=int, help="the proxy's Redis server to read CPU of")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run each scenario in turn; print each ``Measurement`` as one line of JSON."""
    args = _parser().parse_args(argv)
    watched = Watched(args.proxy_pid, args.mock_pid, args.store_pid)
    keys = client_keys(args.keys)
    for kind, connections in args.scenario:
        with loop_runner() as runner:  # a fresh loop: nothing carries over between scenarios
            measurement = runner.run(
                run_load(
                    args.host,
                    args.port,
                    kind,
                    connections,
                    args.warmup,
                    args.duration,
                    watched=watched,
                    keys=keys,
                )
            )
        sys.stdout.write(json.dumps(measurement.to_dict()) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
