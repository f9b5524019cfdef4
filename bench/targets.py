"""How each process of the benchmark is started: the mock upstream and the proxies under test.

``direct`` has no proxy: the load generator talks to the mock itself. ``bare`` is
``bench.passthrough`` on hypercorn, ``bare-uvicorn`` the same on uvicorn; ``sentinel`` is
``sentinel serve`` on a generated config with one upstream (the mock) and one client key,
logging as it would in production; ``uvicorn`` is the same on the uvicorn engine.
``accounting`` is Sentinel keeping every request's usage: records in a JSONL file and usage
counters in a ``redis-server`` the benchmark starts for it (never a Redis already running).
``budgets`` is policy plus a dollar budget on every window
(day, week, month, total; none reachable): every request priced, held and charged in the same
Lua call as its limits. ``keys`` is ``sentinel`` with its client key a runtime key (in the
state file) instead of a ``[[keys]]`` entry: what a runtime key's lookup costs. ``policy`` is
accounting plus limits in that Redis: the key's limits are far above anything a run reaches,
so every limit is checked and none refuses; ``policy-keys`` is policy with ``MANY_KEYS`` such
keys, each request sent with the next (so Redis holds that many sets of limit keys). Each
target keeping usage writes into a directory of its own under the benchmark's working
directory, named after it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from bench.children import Child, ChildError, CpuPlan, free_port, python_argv
from bench.scenarios import CLIENT_KEY, MANY_KEYS, client_keys

__all__ = [
    "GUARDRAILS",
    "POLICY_LIMITS",
    "UPSTREAM_KEY",
    "USAGE_FILE",
    "USAGE_MODES",
    "Target",
    "accounting_config",
    "many_keys_config",
    "policy_config",
    "routed_config",
    "sentinel_config",
    "start_mock",
    "start_proxy",
    "start_redis",
    "start_target",
    "usage_dir",
]

UPSTREAM_KEY = "sk-bench-upstream"
BENCH_ADMIN_TOKEN = "bench-admin-token-0123456789"
MOCK_CHUNKS = 20
USAGE_FILE = "usage.jsonl"
"""Where, in its own directory (``usage_dir``), a target keeping usage writes its records."""
USAGE_MODES = ("accounting", "policy", "policy-keys", "budgets")
"""The targets that keep usage records and counters, each with a Redis of its own."""


def _rules() -> str:
    """50 rules of the kinds deployments write: word lists, ids with digits, hosts; a third
    each block, redact and flag (none matches the bench prompts)."""
    actions = ("block", "redact", "flag")
    shapes = (
        r"(?i)\b(?:codename{i}|project-orion-{i}|nightjar{i})\b",
        r"\bTICKET-{i}\d{{4,8}}\b",
        r"(?i)\b[a-z0-9-]{{1,30}}\.corp{i}\.internal\b",
        r"(?i)confidential[ _-]?{i}",
        r"\b(?:acct|cust)_{i}[0-9a-f]{{8}}\b",
    )
    return "".join(
        f"[[rules]]\nname = \"rule-{i}\"\npattern = '{shapes[i % len(shapes)].format(i=i)}'\n"
        f'action = "{actions[i % 3]}"\n\n'
        for i in range(50)
    )


GUARDRAILS = (
    "\n" + _rules() + "[pii]\n"
    'redact = ["email", "phone", "credit_card", "iban", "us_ssn", "ip_address", "api_key"]\n'
)
"""The ``guardrails`` target's rules: 50 ``[[rules]]`` and every PII detector."""
POLICY_LIMITS = {
    "rpm": 100_000_000,
    "tpm": 10**12,
    "max_parallel": 10_000,
    "tokens_per_day": 10**15,
}
"""The ``policy`` key's limits: all enforced, none reachable in a benchmark run."""


class Target:
    """A running process the load generator can be pointed at."""

    def __init__(self, child: Child, port: int) -> None:
        self.child = child
        self.port = port

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (``.../v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def redis_url(self) -> str:
        """The ``redis://`` URL of this target, when it is a Redis server."""
        return f"redis://127.0.0.1:{self.port}/0"


def start_mock(workdir: Path, cpus: frozenset[int] | None) -> Target:
    """Start ``sentinel mock-upstream`` and wait until it serves ``/v1/models``."""
    port = free_port()
    argv = python_argv(
        "sentinel", "mock-upstream", "--bind", f"127.0.0.1:{port}", "--chunks", str(MOCK_CHUNKS)
    )
    child = Child("mock upstream", argv, workdir / "mock.log", cpus)
    _ready(child, port, "/v1/models")
    return Target(child, port)


def start_redis(workdir: Path, cpus: frozenset[int] | None, name: str = "redis") -> Target:
    """Start a private ``redis-server`` on a free port, persisting nothing; wait for PONG.

    It logs to ``<name>.log`` in ``workdir``."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ChildError("redis-server not found on PATH (the policy target needs it)")
    port = free_port()
    argv = [
        binary,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
    ]  # fmt: skip
    child = Child("redis-server", argv, workdir / f"{name}.log", cpus)
    try:
        child.wait_until(lambda: _pongs(port), port)
    except BaseException:
        child.stop()
        raise
    return Target(child, port)


def _pongs(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_proxy(
    mode: str,
    workdir: Path,
    upstream: str,
    cpus: frozenset[int] | None,
    redis: Target | None = None,
) -> Target:
    """Start the proxy of ``mode`` in front of ``upstream`` and wait until it is ready.

    ``accounting`` and ``policy`` need ``redis``, the server from ``start_redis``; they keep
    their usage in ``usage_dir(workdir, mode)``.
    """
    port = free_port()
    bind = f"127.0.0.1:{port}"
    if mode in ("bare", "bare-uvicorn"):
        engine = "uvicorn" if mode == "bare-uvicorn" else "hypercorn"
        argv = python_argv(
            "bench.passthrough", "--bind", bind, "--upstream", upstream, "--engine", engine
        )
    elif mode in ("sentinel", "uvicorn", "routed", "guardrails", "keys", *USAGE_MODES):
        config = workdir / f"{mode}.toml"
        if mode in USAGE_MODES:
            if redis is None:
                raise ValueError(f"the {mode} proxy needs a Redis server")
            keeping = {
                "accounting": accounting_config,
                "policy": policy_config,
                "policy-keys": many_keys_config,
                "budgets": budgets_config,
            }[mode]
            config.write_text(keeping(upstream, bind, redis.redis_url, usage_dir(workdir, mode)))
        elif mode == "routed":
            config.write_text(routed_config(upstream, bind))
        elif mode == "uvicorn":
            config.write_text(sentinel_config(upstream, bind, engine="uvicorn"))
        elif mode == "guardrails":
            config.write_text(sentinel_config(upstream, bind) + GUARDRAILS)
        elif mode == "keys":
            config.write_text(runtime_keys_config(upstream, bind, workdir / mode))
        else:
            config.write_text(sentinel_config(upstream, bind))
        argv = python_argv("sentinel", "serve", "--config", str(config), "--bind", bind)
    else:
        raise ValueError(f"no proxy for mode {mode!r}")
    child = Child(mode, argv, workdir / f"{mode}.log", cpus)
    _ready(child, port, "/healthz")
    if mode == "keys":
        _import_client_key(child, port)
    return Target(child, port)


def start_target(
    mode: str, workdir: Path, upstream: str, plan: CpuPlan, stack: ExitStack
) -> tuple[Target, Target | None]:
    """Start ``mode``'s proxy on the proxy's CPUs and, for a target keeping usage, its own
    Redis (named ``<mode>-redis``) on the mock's; ``stack`` stops them, the proxy first."""
    redis = None
    if mode in USAGE_MODES:
        redis = start_redis(workdir, plan.mock, f"{mode}-redis")
        stack.callback(redis.child.stop)
    proxy = start_proxy(mode, workdir, upstream, plan.proxy, redis)
    stack.callback(proxy.child.stop)
    return proxy, redis


def _ready(child: Child, port: int, path: str) -> None:
    try:
        child.wait_ready(port, path)
    except BaseException:
        child.stop()
        raise


def sentinel_config(upstream: str, bind: str, engine: str = "hypercorn") -> str:
    """The TOML config Sentinel runs on: the mock as its only upstream, one client key."""
    return (
        "[server]\n"
        f'bind = "{bind}"\n'
        f'engine = "{engine}"\n'
        "\n"
        "[[upstreams]]\n"
        'name = "mock"\n'
        f'base_url = "{upstream}"\n'
        f'api_key = "{UPSTREAM_KEY}"\n'
        "\n"
        "[[keys]]\n"
        'name = "bench"\n'
        f'key = "{CLIENT_KEY}"\n'
    )


def runtime_keys_config(upstream: str, bind: str, state_dir: Path) -> str:
    """``sentinel_config`` without its ``[[keys]]`` table: the client key is a runtime key,
    imported through the keys API once the gateway is up (``_import_client_key``)."""
    config = sentinel_config(upstream, bind).partition("[[keys]]")[0]
    return (
        config.replace("[server]\n", f"[server]\nstate_dir = {json.dumps(str(state_dir))}\n", 1)
        + f"[admin]\ntoken = {json.dumps(BENCH_ADMIN_TOKEN)}\n"
    )


def _import_client_key(child: Child, port: int) -> None:
    """Import ``CLIENT_KEY``'s digest as the runtime key ``bench`` (a rerun finds it there)."""
    body = {
        "name": "bench",
        "key_sha256": "sha256:" + hashlib.sha256(CLIENT_KEY.encode()).hexdigest(),
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/admin/v1/keys",
        data=json.dumps(body).encode(),
        headers={
            "authorization": f"Bearer {BENCH_ADMIN_TOKEN}",
            "content-type": "application/json",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10):
            pass
    except urllib.error.HTTPError as error:
        if error.code != 409:  # 409: imported by an earlier run into the same state file
            child.stop()
            raise ChildError(f"keys: importing the client key failed with {error.code}") from None


def routed_config(upstream: str, bind: str) -> str:
    """Sentinel choosing among three upstreams (all the mock): two weighted at the first
    priority, one backup; every request walks the candidates and their breakers."""
    tables = "".join(
        "[[upstreams]]\n"
        f'name = "{name}"\n'
        f'base_url = "{upstream}"\n'
        f'api_key = "{UPSTREAM_KEY}"\n'
        f"priority = {priority}\n"
        f"weight = {weight}\n\n"
        for name, priority, weight in (("primary", 0, 3), ("secondary", 0, 1), ("backup", 1, 1))
    )
    return f'[server]\nbind = "{bind}"\n\n{tables}[[keys]]\nname = "bench"\nkey = "{CLIENT_KEY}"\n'


def usage_dir(workdir: Path, mode: str) -> Path:
    """Where the target ``mode`` keeps its usage records and spool."""
    return workdir / mode


def accounting_config(upstream: str, bind: str, redis_url: str, directory: Path) -> str:
    """Sentinel's config with usage records (JSONL, in ``directory``) and Redis usage counters
    on, and no limits."""
    return (
        "[redis]\n"
        f"url = {json.dumps(redis_url)}\n"
        "\n"
        "[usage]\n"
        f"jsonl_path = {json.dumps(str(directory / USAGE_FILE))}\n"
        f"spool_dir = {json.dumps(str(directory / 'spool'))}\n"
        "redis_counters = true\n"
        "\n"
        f"{sentinel_config(upstream, bind)}"
    )


def policy_config(upstream: str, bind: str, redis_url: str, directory: Path) -> str:
    """The accounting config plus Redis limits on every dimension, none reachable."""
    limits = "".join(f"{name} = {value}\n" for name, value in POLICY_LIMITS.items())
    # The limits continue the [[keys]] table the config ends with.
    return accounting_config(upstream, bind, redis_url, directory) + limits


def many_keys_config(upstream: str, bind: str, redis_url: str, directory: Path) -> str:
    """The policy config with ``MANY_KEYS`` keys (``bench-0000`` ...), each with the policy
    limits, instead of its one."""
    config = accounting_config(upstream, bind, redis_url, directory).partition("[[keys]]")[0]
    limits = "".join(f"{name} = {value}\n" for name, value in POLICY_LIMITS.items())
    tables = "".join(
        f'[[keys]]\nname = "bench-{index:04d}"\nkey = "{key}"\n{limits}\n'
        for index, key in enumerate(client_keys(MANY_KEYS))
    )
    return config + tables


BUDGETS = {
    "usd_per_day": "100000",
    "usd_per_week": "200000",
    "usd_per_month": "400000",
    "usd_total": "1000000",
}
"""The ``budgets`` key's dollar budgets: every window enforced, none reachable in a run."""


def budgets_config(upstream: str, bind: str, redis_url: str, directory: Path) -> str:
    """The policy config plus a dollar budget on every window: each request is priced, holds
    and is charged in the same Lua call as its limits."""
    budgets = "".join(f"{name} = {json.dumps(value)}\n" for name, value in BUDGETS.items())
    return policy_config(upstream, bind, redis_url, directory) + budgets
