"""What the benchmark measures: the targets, the request kinds, and the matrix of both.

A scenario is one request kind sent over a fixed number of keep-alive connections to one
target. The request bytes are built here once and sent unchanged by the load generator.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

__all__ = [
    "ALL_KINDS",
    "CLIENT_KEY",
    "KINDS",
    "MANY_KEYS",
    "MODEL",
    "MODES",
    "Scenario",
    "build_request",
    "client_keys",
    "keys_of",
    "matrix",
    "request_body",
]

CLIENT_KEY = "sk-bench-client-key"
MODEL = "gpt-4o-mini"
PATH = "/v1/chat/completions"

MODES = (
    "direct",
    "bare",
    "bare-uvicorn",
    "sentinel",
    "uvicorn",
    "routed",
    "accounting",
    "policy",
    "policy-keys",
    "budgets",
    "guardrails",
    "keys",
)
"""direct: the mock itself; bare: the pass-through floor (on hypercorn); bare-uvicorn: the same
pass-through on uvicorn; sentinel: the gateway; uvicorn: the gateway on the uvicorn engine
(measured against bare-uvicorn); routed: the gateway choosing among three upstreams
(priorities, weights, breakers); accounting: the gateway with usage records and Redis usage
counters on (no limits); policy: accounting plus Redis limits on every dimension;
policy-keys: policy over ``MANY_KEYS`` keys, each request sent with the next one (Redis sees
that many sets of limit keys), measured against policy; budgets: policy plus a dollar budget
on every window (measured against policy); guardrails: the gateway with 50 ``[[rules]]`` and
every ``[pii]`` detector (``bench.targets.GUARDRAILS``), measured against sentinel; keys: the
gateway with its client key a runtime key (the keys API) instead of a config key, measured
against sentinel."""

MANY_KEYS = 1000
"""How many keys ``policy-keys`` spreads its requests over."""

KINDS = ("json", "stream")
"""json: a non-streaming chat completion; stream: a chat completion as an SSE stream."""
ALL_KINDS = (*KINDS, "prompt1k")
"""With, on request only: prompt1k, a non-streaming chat completion with a 1 KB prompt (what
the guardrails screen)."""

_PROMPT_1K = (
    "Please summarise the following meeting notes for the weekly report. The team reviewed "
    "the quarterly roadmap, agreed to move the billing migration to the next sprint, and "
    "discussed how the new onboarding flow performed in the pilot with three customers. "
    "Latency on the search endpoint improved after the cache change, but the error budget "
    "for the export job was exceeded twice, so the on-call rotation will add a runbook step. "
    "Design asked for feedback on the settings page before Thursday; marketing wants the "
    "release notes by Friday morning. Open questions: whether to deprecate the legacy "
    "webhooks this quarter, who owns the data retention review, and how to staff the "
    "holiday freeze. Action items were assigned to each lead, with a follow-up meeting "
    "planned for next Tuesday afternoon to confirm the dates and the budget for the new "
    "hires. Keep the summary short, neutral, and in bullet points, one per topic, please."
)


@dataclass(frozen=True)
class Scenario:
    """One cell of the matrix: a target, a request kind and a number of connections."""

    mode: str
    kind: str
    connections: int

    @property
    def label(self) -> str:
        """A short name, e.g. ``sentinel/stream/16``."""
        return f"{self.mode}/{self.kind}/{self.connections}"


def matrix(
    modes: tuple[str, ...], kinds: tuple[str, ...], connections: tuple[int, ...]
) -> list[Scenario]:
    """Every combination, grouped by mode so each target is started once."""
    return [
        Scenario(mode, kind, count)
        for mode, kind, count in itertools.product(modes, kinds, connections)
    ]


def client_keys(count: int) -> tuple[str, ...]:
    """The client keys of a target with ``count`` keys: ``CLIENT_KEY`` alone for one,
    numbered ``CLIENT_KEY-0000`` ... for more."""
    if count == 1:
        return (CLIENT_KEY,)
    return tuple(f"{CLIENT_KEY}-{index:04d}" for index in range(count))


def keys_of(mode: str) -> tuple[str, ...]:
    """The client keys the load generator spreads ``mode``'s requests over."""
    return client_keys(MANY_KEYS if mode == "policy-keys" else 1)


def request_body(kind: str) -> bytes:
    """The JSON body of a ``kind`` request (compact, ≈100 bytes; ≈1 KB for prompt1k)."""
    stream = "true" if kind == "stream" else "false"
    prompt = _PROMPT_1K if kind == "prompt1k" else "Say hello"
    return (
        f'{{"model":"{MODEL}","messages":[{{"role":"user","content":"{prompt}"}}],'
        f'"stream":{stream}}}'
    ).encode("ascii")


def build_request(kind: str, host: str, port: int, key: str = CLIENT_KEY) -> bytes:
    """The complete HTTP/1.1 request, head and body, for one ``kind`` request with ``key``."""
    body = request_body(kind)
    head = (
        f"POST {PATH} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        f"Authorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body
