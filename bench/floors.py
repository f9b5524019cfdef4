"""``python -m bench.floors``: what the least a request must do costs, counted by callgrind.

Issue 18 asks for Sentinel's own CPU per request (its CPU less the bare pass-through's) to
stay within a quarter of the bare pass-through's. Part of that budget no change to Sentinel's
own code can give back: the calls into its libraries that its contracts require of every
request, whatever code makes them. This counts each such call, the way it is cheapest to
make, in a process of its own under ``valgrind --tool=callgrind``: the process running the
piece ``--runs`` times, less the same process running it zero times, per run (the hash seed
is fixed, so both runs of a process do the same work until the pieces start).

``python -m bench.proxy_cost --targets bare,bare-headers`` gives the other part: what the
engine alone charges for writing the headers a policy key's answer carries.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.children import REPO_ROOT
from bench.loops import loop_runner
from bench.scenarios import request_body

__all__ = ["PIECES", "Floor", "main", "render", "run_piece"]

_USAGE_CHUNK = (
    b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"gpt-4o-mini","choices":[],'
    b'"usage":{"prompt_tokens":9,"completion_tokens":20,"total_tokens":29}}'
)
_REPLY = orjson.dumps(
    {
        "id": "chatcmpl-mock0000000000000002",
        "object": "chat.completion",
        "created": 1796687699,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": " ".join(["gpt-4o-mini: Say hello"] * 7),
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": 20,
            "total_tokens": 25,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_mock",
    },
    option=orjson.OPT_INDENT_2,
)
"""The mock upstream's JSON answer to the bench's request (about 930 bytes)."""
_LOG_LINE = {
    "event": "request",
    "request_id": "req_" + "0" * 32,
    "key": "bench",
    "route": "/v1/chat/completions",
    "model": "gpt-4o-mini",
    "status": 200,
    "stream": True,
    "upstream": "mock",
    "prompt_tokens": 9,
    "completion_tokens": 20,
    "total_tokens": 29,
    "usage_source": "provider",
    "duration_ms": 1.234,
    "overhead_ms": 0.321,
    "ts": "2026-12-07T23:00:00.000000Z",
}
_CONTROL_S = 600.0  # a child under valgrind loads an encoding in a minute or so


def _request_id(runs: int) -> None:
    for _ in range(runs):
        "req_" + secrets.token_hex(16)


def _body(runs: int) -> None:
    body = request_body("json")
    for _ in range(runs):
        orjson.loads(body)


def _stream_body(runs: int) -> None:
    body = request_body("stream")
    for _ in range(runs):
        parsed = orjson.loads(body)
        parsed["stream_options"] = {"include_usage": True}
        orjson.dumps(parsed)


def _prompt(runs: int) -> None:
    from sentinel.tokens.encodings import Encodings

    encoding = Encodings.load(["o200k_base"]).get("o200k_base")
    for _ in range(runs):
        len(encoding.encode_ordinary("Say hello"))


def _usage_chunk(runs: int) -> None:
    for _ in range(runs):
        orjson.loads(_USAGE_CHUNK)


def _reply(runs: int) -> None:
    for _ in range(runs):
        orjson.loads(_REPLY)


def _log_line(runs: int) -> None:
    for _ in range(runs):
        orjson.dumps(_LOG_LINE)


def _locked_call(runs: int) -> None:
    lock = threading.Lock()

    def feed(chunk: bytes) -> bytes:
        with lock:
            return chunk

    for _ in range(runs):
        feed(b"data: {}\n\n")


def _future(runs: int) -> None:
    async def wait_each() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(runs):
            future = loop.create_future()
            loop.call_soon(future.set_result, None)
            await future

    with loop_runner() as runner:
        runner.run(wait_each())


def _clock(runs: int) -> None:
    for _ in range(runs):
        time.time_ns()
        time.perf_counter_ns()


def _loop(runs: int) -> None:
    for _ in range(runs):
        pass


PIECES: dict[str, tuple[Callable[[int], None], str]] = {
    "request_id": (_request_id, "the x-request-id every answer carries (`secrets.token_hex`)"),
    "body": (_body, "the request body parsed (`orjson.loads`): its model, stream, messages"),
    "stream_body": (
        _stream_body,
        "a stream's body parsed, `stream_options.include_usage` added, serialized again",
    ),
    "prompt": (_prompt, "the prompt counted with a loaded tiktoken encoding (o200k_base)"),
    "usage_chunk": (_usage_chunk, "the provider's usage chunk parsed (`orjson.loads`)"),
    "reply": (_reply, "a JSON answer (the mock's, about 930 bytes) parsed for its usage"),
    "log_line": (_log_line, "the one log line's 15 fields rendered (`orjson.dumps`)"),
    "locked_call": (
        _locked_call,
        "one Python call taking a `threading.Lock`: the accumulator reading one chunk",
    ),
    "future": (_future, "a future made, resolved by the loop and awaited: one Redis reply"),
    "clock": (_clock, "`time.time_ns()` and `time.perf_counter_ns()`"),
    "loop": (_loop, "an empty loop iteration (each count above includes one)"),
}
"""Each piece: what runs it ``runs`` times, and what it stands for."""


def run_piece(name: str, runs: int) -> None:
    """Run piece ``name`` ``runs`` times (what the child under callgrind does)."""
    PIECES[name][0](runs)


@dataclass(frozen=True)
class Floor:
    """One piece's count."""

    piece: str
    base: int
    """Instructions of the process running the piece zero times."""
    counted: int
    """Instructions of the process running it ``runs`` times."""
    runs: int

    @property
    def per_run(self) -> float:
        """Instructions of one run of the piece."""
        return (self.counted - self.base) / self.runs


def _instructions(piece: str, runs: int, work: Path) -> int:
    out = work / f"callgrind.{piece}.{runs}"
    argv = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-B",  # both processes import alike: the first must not write bytecode the second reads
        "-m",
        "bench.floors",
        "--child",
        piece,
        str(runs),
    ]
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run(
        argv,
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        timeout=_CONTROL_S,
        check=True,
    )
    found = re.search(rb"^summary: (\d+)", out.read_bytes(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no summary in {out}")
    return int(found.group(1))


def measure(piece: str, runs: int) -> Floor:
    """Count ``piece``: its process at zero runs and at ``runs``."""
    with tempfile.TemporaryDirectory(prefix="sentinel-floors-") as name:
        work = Path(name)
        return Floor(piece, _instructions(piece, 0, work), _instructions(piece, runs, work), runs)


def render(floors: Sequence[Floor]) -> str:
    """A markdown table: instructions per run of each piece, and what it stands for."""
    lines = ["| piece | instructions per run | what it stands for |", "|---|---|---|"]
    lines += [f"| {f.piece} | {f.per_run:,.0f} | {PIECES[f.piece][1]} |" for f in floors]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floors", description=__doc__)
    parser.add_argument("--pieces", default=",".join(PIECES), help="PIECE,... (all of them)")
    parser.add_argument("--runs", type=int, default=2000, help="runs of each piece counted")
    parser.add_argument("--child", nargs=2, metavar=("PIECE", "RUNS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        piece, runs = args.child
        if piece not in PIECES or not runs.isdigit():
            parser.error(f"--child takes a piece and a count, not {piece!r} {runs!r}")
        run_piece(piece, int(runs))
        return 0
    pieces = args.pieces.split(",")
    unknown = [p for p in pieces if p not in PIECES]
    if unknown:
        parser.error(f"unknown pieces {unknown}: choose from {', '.join(PIECES)}")
    if not 1 <= args.runs <= 1_000_000:
        parser.error("--runs from 1 to 1000000")
    if shutil.which("valgrind") is None:
        print("bench.floors: not found on PATH: valgrind", file=sys.stderr)
        return 1
    print(render([measure(piece, args.runs) for piece in pieces]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
