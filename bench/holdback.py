"""``python -m bench.holdback``: what the stream hold-back of response rules adds to the time
to the first content a client sees.

The mock upstream streams one word per event with a pause between events (like a model
generating tokens); Sentinel relays it with no response rules, then with rule sets whose
longest match differs. A screened stream releases text only once more than the hold-back
has arrived (or the reply ends), so the first visible content comes later by about the time
the model takes to produce that many characters. Prints the median time to the first
non-empty content delta for each.

python -m bench.holdback [--requests N] [--chunk-delay-ms MS] [--chunks N]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import socket
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
from hypercorn.config import Sockets

from sentinel.config import Config, KeyConfig, ServerConfig, UpstreamConfig, hash_key
from sentinel.config.load import load_config
from sentinel.mock import MockSettings, serve
from sentinel.server import serve_app
from sentinel.tokens import Encodings

__all__ = ["main"]

_KEY = "sk-bench-holdback-key"
_RULE_SETS = {
    "none": "",
    "one rule (11 chars)": (
        "[[rules]]\nname = 'codename'\npattern = 'Falcon-\\d{1,4}'\n"
        "action = 'redact'\ndirection = 'response'\n"
    ),
    "pii email+phone (345 chars)": '[pii]\nredact = ["email", "phone"]\nresponses = true\n',
    "pii all (4550 chars)": (
        '[pii]\nredact = ["email", "phone", "credit_card", "iban", "us_ssn", "ip_address", '
        '"api_key"]\nresponses = true\n'
    ),
}


def _config(upstream: str, rules: str, workdir: Path) -> Config:
    path = workdir / "holdback.toml"
    path.write_text(
        f'[[upstreams]]\nname = "mock"\nbase_url = "{upstream}"\napi_key = "sk-up"\n' + rules
    )
    loaded = load_config(path)
    return dataclasses.replace(
        loaded,
        upstreams=(UpstreamConfig(name="mock", base_url=upstream, api_key="sk-up"),),
        keys=(KeyConfig(name="bench", key_sha256=hash_key(_KEY)),),
        server=ServerConfig(bind="127.0.0.1:0", state_dir=workdir / "state"),
    )


async def _first_content_ms(http: aiohttp.ClientSession, url: str) -> float:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    started = time.perf_counter()
    headers = {"authorization": f"Bearer {_KEY}"}
    async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
        first: float | None = None
        async for line in r.content:
            if first is None and line.startswith(b"data: {"):
                choices = orjson.loads(line[6:]).get("choices") or [{}]
                if (choices[0].get("delta") or {}).get("content"):
                    first = time.perf_counter()
        return ((first or time.perf_counter()) - started) * 1000


async def _measure(config: Config, encodings: Encodings, requests: int) -> float:
    """Serve ``config`` on a free port; the median ms to the first content of ``requests``."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    sockets = Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[])
    config = dataclasses.replace(
        config, server=dataclasses.replace(config.server, bind=f"127.0.0.1:{port}")
    )
    stop = asyncio.Event()

    async def stopped() -> None:
        await stop.wait()

    task = asyncio.create_task(
        serve_app(config, sockets, stopped, encodings, io.TextIOWrapper(io.BytesIO()))
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await _wait_ready(http, url)
            await _first_content_ms(http, url)  # warm-up
            times = [await _first_content_ms(http, url) for _ in range(requests)]
    finally:
        stop.set()
        await task
    return statistics.median(times)


async def _wait_ready(http: aiohttp.ClientSession, url: str) -> None:
    for _ in range(200):
        try:
            async with http.get(f"{url}/healthz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("Sentinel did not start")


async def _run(args: argparse.Namespace) -> None:
    settings = MockSettings(chunks=args.chunks, chunk_delay_ms=args.chunk_delay_ms)
    runner, port = await serve("127.0.0.1", 0, settings)
    encodings = Encodings.load()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            baseline = None
            for name, rules in _RULE_SETS.items():
                config = _config(f"http://127.0.0.1:{port}/v1", rules, Path(tmp))
                ms = await _measure(config, encodings, args.requests)
                baseline = ms if baseline is None else baseline
                print(f"{name:30} first content after {ms:7.1f} ms (+{ms - baseline:.1f} ms)")
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.holdback", description=__doc__)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--chunk-delay-ms", type=float, default=20.0)
    parser.add_argument("--chunks", type=int, default=400)
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
