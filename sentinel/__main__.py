"""The ``sentinel`` command line; the only module that prints to the terminal or exits.

sentinel serve [--config PATH] [--bind HOST:PORT] [--workers N]
sentinel check-config [--config PATH]
sentinel mock-upstream [--bind HOST:PORT] [--chunks N] [--chunk-delay-ms MS] ...
sentinel keys hash            (key on stdin → sha256:<hex>)
sentinel keys create|list|show|revoke|rotate   (over the admin API; see sentinel.keys.cli)

``serve`` prints one line per problem that stops it starting and exits 2; ``check-config``
lists its problems and exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from sentinel.config import (
    AdminConfig,
    Config,
    ConfigError,
    embedded_config,
    format_key_hash,
    hash_key,
    load_config,
    resolve_config_path,
)
from sentinel.config.environment import environment_problems
from sentinel.config.table import bind_problem
from sentinel.keys.cli import KeyCommandError, add_key_commands, run_key_command
from sentinel.tokens import TokenizerError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sentinel", description="Sentinel LLM gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="TOML file (default: $SENTINEL_CONFIG, ./sentinel.toml)")
    serve.add_argument("--bind", help="HOST:PORT to listen on (overrides server.bind)")
    serve.add_argument("--workers", type=int, help="worker processes (overrides server.workers)")
    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("--config", help="TOML file (default: $SENTINEL_CONFIG, ./sentinel.toml)")
    mock = commands.add_parser("mock-upstream", help="run the built-in OpenAI-compatible mock")
    mock.add_argument("--bind", default="127.0.0.1:9000", help="HOST:PORT (default %(default)s)")
    mock.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    mock.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between chunks")
    mock.add_argument("--latency-ms", type=float, default=0.0, help="delay before the headers")
    mock.add_argument("--fault", help="inject a fault into every reply (see README)")
    keys = commands.add_parser("keys", help="key utilities")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    key_commands.add_parser("hash", help="read a key on stdin, print its sha256:<hex> form")
    add_key_commands(key_commands)
    return parser


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def _load(cli_path: str | None) -> tuple[Config, str | None]:
    """The config to run, and the development key to announce when running on defaults."""
    path = resolve_config_path(cli_path)
    if path is not None:
        return load_config(path), None
    dev_key = "sk-sentinel-dev-" + secrets.token_urlsafe(24)
    admin = AdminConfig(token="sentinel-admin-dev-" + secrets.token_urlsafe(24))
    return dataclasses.replace(embedded_config(None, dev_key), admin=admin), dev_key


_STARTUP_FAILED = 2  # serve's exit status for a config or environment that stops it starting


def _refuse(problems: Sequence[str]) -> int:
    for problem in problems:
        print(f"sentinel: {problem}", file=sys.stderr)
    return _STARTUP_FAILED


def _serve(args: argparse.Namespace) -> int:
    from sentinel.server import StartupError, serve

    problems = _option_problems(args)
    try:
        config, dev_key = _load(args.config)
    except ConfigError as error:
        path = resolve_config_path(args.config)
        return _refuse(problems + [_in_file(path, p) for p in error.problems])
    if args.workers is not None and args.workers > 1 and config.redis is None:
        problems.append("--workers: more than one worker needs [redis]")
    problems += [_in_file(config.source, p) for p in environment_problems(config)]
    if problems:
        return _refuse(problems)
    server = dataclasses.replace(
        config.server,
        bind=args.bind or config.server.bind,
        workers=config.server.workers if args.workers is None else args.workers,
    )
    config = dataclasses.replace(config, server=server)
    if dev_key is not None:
        print(
            "sentinel: no config file; running on embedded defaults.\n"
            f"sentinel: development key (valid until exit): {dev_key}\n"
            f"sentinel: development admin token (valid until exit): {config.admin.token}",
            file=sys.stderr,
        )
    print(f"sentinel: starting on http://{server.bind}", file=sys.stderr)
    try:
        serve(config)
    except StartupError as error:
        return _refuse([f"cannot start: {error}"])
    return 0


def _option_problems(args: argparse.Namespace) -> list[str]:
    """Problems with ``serve``'s command-line options, checked as the config checks its own."""
    problems: list[str] = []
    if args.bind is not None and (problem := bind_problem(args.bind)) is not None:
        problems.append(f"--bind: {problem}")
    if args.workers is not None and args.workers < 1:
        problems.append(f"--workers: must be at least 1, got {args.workers}")
    return problems


def _in_file(path: Path | None, problem: str) -> str:
    """``problem`` prefixed with the config file it is about, unless it names the file already."""
    if path is None or problem.startswith(f"{path}:"):
        return problem
    return f"{path}: {problem}"


def _check(args: argparse.Namespace) -> int:
    path = resolve_config_path(args.config)
    if path is None:
        return _fail("no config file: pass --config, set SENTINEL_CONFIG or add ./sentinel.toml")
    problems = environment_problems(load_config(path))
    if problems:
        raise ConfigError(problems)
    print(f"{path}: ok")
    return 0


def _mock(args: argparse.Namespace) -> int:
    from sentinel.mock import MockSettings, run

    try:
        settings = MockSettings(
            chunks=args.chunks,
            chunk_delay_ms=args.chunk_delay_ms,
            latency_ms=args.latency_ms,
            fault=args.fault,
        )
        print(f"sentinel mock-upstream: serving on http://{args.bind}/v1", file=sys.stderr)
        run(args.bind, settings)
    except ValueError as error:
        return _fail(f"mock-upstream: {error}")
    return 0


def _keys(args: argparse.Namespace) -> int:
    if args.keys_command != "hash":
        try:
            print(run_key_command(args))
        except KeyCommandError as error:
            return _fail(str(error))
        return 0
    key = sys.stdin.readline().rstrip("\r\n")
    if not key:
        return _fail("keys hash: expected a key on standard input")
    print(format_key_hash(hash_key(key)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit status."""
    args = _parser().parse_args(argv)
    handlers = {"serve": _serve, "check-config": _check, "mock-upstream": _mock, "keys": _keys}
    try:
        return handlers[args.command](args)
    except ConfigError as error:
        source = f"{args.config}: " if getattr(args, "config", None) else ""
        return _fail(f"{source}invalid configuration:\n{error}")
    except TokenizerError as error:
        return _fail(f"sentinel: cannot start: {error}")
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
