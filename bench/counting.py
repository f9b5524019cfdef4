"""The cost of counting a prompt: Sentinel's own counter on chat requests of realistic text.

Every request Sentinel admits is counted before it is forwarded (the token limits need the
number), so counting is on the latency path. This measures it in one process, with no network:
``Encodings.load`` once, then ``PromptCounter(...).for_model(MODEL).count_prompt("chat", body)``
over and over on a body of about 1k and one of about 32k tokens, reporting the median.

The text is varied on purpose: a seeded mix of common and technical words, capitals, commas,
numbers, versions and percentages. One repeated word would be merged by the BPE into a few
long tokens and count unrealistically fast.

Run as ``python -m bench.counting --runs N``: prints one JSON ``CountCost`` per line.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.loops import loop_runner
from bench.measurement import CountCost
from sentinel.tokens import Encodings, ModelCounter, PromptCounter

__all__ = ["ENCODING", "MODEL", "SIZES", "chat_body", "main", "measure"]

MODEL = "gpt-4o"
ENCODING = "o200k_base"
SIZES = (1_000, 32_000)
"""The prompt sizes measured, in tokens (the bodies come out a little above each)."""

_SEED = 20240501
_MESSAGE_TOKENS = 2_000  # a long prompt arrives as several turns, not one giant string
_SYSTEM = "You are a careful assistant for an operations team. Answer briefly and cite numbers."
_WORDS = tuple(
    """
    the of and to in is that for it as with was on be by this are from at or an have not which
    but can all their more one has its will also about other into than only time new some these
    may such like used when two first there would most over each through where after between
    many both those work system data process model during under request response server client
    latency throughput gateway upstream token limit budget quota window replica cluster cache
    configuration deployment rollback incident alert dashboard metric histogram percentile
    failover timeout retry backoff circuit breaker stream chunk buffer socket connection header
    payload schema version release migration database index query transaction partition shard
    team customer invoice billing account region zone storage network bandwidth memory
    processor thread queue worker scheduler kernel container Kubernetes Redis Postgres Python
    engineer manager review proposal estimate forecast quarter revenue growth risk mitigation
    because however although therefore meanwhile instead usually rarely quickly carefully
    measured observed expected reported increased decreased improved reduced doubled stable
    """.split()
)


def _number(rng: random.Random) -> str:
    shape = rng.randrange(6)
    if shape == 0:
        return str(rng.randrange(2, 10_000))
    if shape == 1:
        return f"{rng.uniform(0, 100):.{rng.randrange(1, 4)}f}"
    if shape == 2:
        return f"{rng.randrange(1, 100)}%"
    if shape == 3:
        return f"v{rng.randrange(1, 5)}.{rng.randrange(0, 20)}.{rng.randrange(0, 10)}"
    if shape == 4:
        return f"{rng.randrange(2015, 2027)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
    return f"{rng.randrange(1, 64) * 128} MB"


def _sentence(rng: random.Random) -> str:
    words: list[str] = []
    for index in range(rng.randrange(6, 24)):
        word = _number(rng) if rng.random() < 0.08 else rng.choice(_WORDS)
        if index and rng.random() < 0.07:
            words[-1] += rng.choice((",", ",", ";", ":"))
        words.append(word)
    words[0] = words[0][:1].upper() + words[0][1:]
    if rng.random() < 0.1:
        words.insert(rng.randrange(1, len(words)), f"({rng.choice(_WORDS)} {_number(rng)})")
    return " ".join(words) + rng.choice((".", ".", ".", ".", "?", "!"))


def _paragraph(rng: random.Random) -> str:
    return " ".join(_sentence(rng) for _ in range(rng.randrange(3, 8)))


def chat_body(counter: ModelCounter, tokens: int, seed: int = _SEED) -> dict[str, Any]:
    """A Chat Completions body of about ``tokens`` prompt tokens of prose, in alternating turns."""
    rng = random.Random(seed)
    messages: list[dict[str, str]] = [{"role": "system", "content": _SYSTEM}]
    total = counter.count_text(_SYSTEM)
    turn: list[str] = []
    turn_tokens = 0
    while total < tokens:
        paragraph = _paragraph(rng)
        size = counter.count_text(paragraph) + 1  # the blank line that joins paragraphs
        turn.append(paragraph)
        turn_tokens += size
        total += size
        if turn_tokens >= _MESSAGE_TOKENS or total >= tokens:
            role = "user" if len(messages) % 2 else "assistant"
            messages.append({"role": role, "content": "\n\n".join(turn)})
            turn, turn_tokens = [], 0
    if messages[-1]["role"] != "user":
        messages.append({"role": "user", "content": "Summarise the above in three bullets."})
    return {"model": MODEL, "messages": messages, "max_tokens": 512, "stream": False}


async def _timed(counter: ModelCounter, body: object, size: int, runs: int) -> list[int]:
    await counter.count_prompt("chat", body, size_hint=size)  # warm the code paths once
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        await counter.count_prompt("chat", body, size_hint=size)
        samples.append(time.perf_counter_ns() - start)
    return samples


def measure(counter: ModelCounter, runs: int, sizes: Sequence[int] = SIZES) -> list[CountCost]:
    """Count a body of each size ``runs`` times, each count as a request would (``count_prompt``).

    Bodies above ``sentinel.tokens.prompts.INLINE_LIMIT`` bytes are counted in a worker
    thread, exactly as in a request, so the thread hop is part of their cost.
    """
    costs = []
    with loop_runner() as runner:
        for target in sizes:
            body = chat_body(counter, target)
            size = len(json.dumps(body, separators=(",", ":")).encode())
            tokens = runner.run(counter.count_prompt("chat", body, size_hint=size))
            samples = runner.run(_timed(counter, body, size, runs))
            costs.append(
                CountCost(
                    model=MODEL,
                    encoding=counter.encoding_name,
                    target_tokens=target,
                    tokens=tokens,
                    body_bytes=size,
                    runs=runs,
                    median_us=round(statistics.median(samples) / 1000, 1),
                    min_us=round(min(samples) / 1000, 1),
                )
            )
    return costs


def main(argv: Sequence[str] | None = None) -> int:
    """Load the encoding, measure every size, print one JSON ``CountCost`` per line."""
    parser = argparse.ArgumentParser(prog="python -m bench.counting", description=__doc__)
    parser.add_argument("--runs", type=int, default=100, help="counts timed per size")
    args = parser.parse_args(argv)
    counter = PromptCounter(Encodings.load((ENCODING,)), ENCODING).for_model(MODEL)
    for cost in measure(counter, max(args.runs, 1)):
        print(json.dumps(cost.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
