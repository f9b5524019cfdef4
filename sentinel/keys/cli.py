"""``sentinel keys create|list|show|revoke|rotate``: the keys API from a terminal.

Each command is one admin API call (urllib, no event loop needed) to ``--admin-url`` or
``$SENTINEL_ADMIN_URL`` with ``--admin-token`` or ``$SENTINEL_ADMIN_TOKEN``. A secret appears
in the output of ``create`` and ``rotate`` only, once. This module builds the parser and the
output; ``sentinel.__main__`` prints it and exits.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from sentinel.config.admin import admin_client_env
from sentinel.config.budgets import BUDGET_FIELDS
from sentinel.config.limits import LIMIT_FIELDS

__all__ = ["KeyCommandError", "add_key_commands", "run_key_command"]

_TIMEOUT_S = 30
_DEFAULT_URL = "http://127.0.0.1:8080"


class KeyCommandError(Exception):
    """A command that could not be done: the message says why (never a secret)."""


def add_key_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``create``, ``list``, ``show``, ``revoke`` and ``rotate`` to ``sentinel keys``."""
    create = commands.add_parser("create", help="create a key; prints its secret once")
    create.add_argument("--name", required=True)
    create.add_argument("--team")
    for name in LIMIT_FIELDS:
        create.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int)
    for name in BUDGET_FIELDS:
        create.add_argument(f"--{name.replace('_', '-')}", dest=name, help="USD, e.g. 5.00")
    create.add_argument("--models", help="comma-separated model globs")
    create.add_argument("--expires-at", type=int, help="Unix seconds")
    create.add_argument("--metadata", help="a JSON object")
    create.add_argument("--idempotency-key")
    listing = commands.add_parser("list", help="list keys (config and runtime)")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--after")
    listing.add_argument("--json", action="store_true", help="print the API's JSON")
    for verb, text in (("show", "show one key"), ("revoke", "revoke a key on every replica")):
        command = commands.add_parser(verb, help=text)
        command.add_argument("key_id")
    rotate = commands.add_parser("rotate", help="a new secret; prints it once")
    rotate.add_argument("key_id")
    rotate.add_argument("--grace-s", type=int, default=0, help="seconds the old secret works")
    for command in commands.choices.values():
        if command.prog.endswith(" hash"):
            continue
        command.add_argument("--admin-url", help="default: $SENTINEL_ADMIN_URL")
        command.add_argument("--admin-token", help="default: $SENTINEL_ADMIN_TOKEN")


def run_key_command(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> str:
    """Do one key command; the text to print. ``KeyCommandError`` says what went wrong."""
    env_url, env_token = admin_client_env(env)
    url = (args.admin_url or env_url or _DEFAULT_URL).rstrip("/")
    token = args.admin_token or env_token
    if not token:
        raise KeyCommandError(
            "keys: an admin token is required (--admin-token or SENTINEL_ADMIN_TOKEN)"
        )
    api = _Api(url, token)
    command = args.keys_command
    if command == "create":
        reply = api.call("POST", "/admin/v1/keys", _create_body(args), args.idempotency_key)
        return _with_secret(reply)
    if command == "list":
        query = {"limit": args.limit, **({"after": args.after} if args.after else {})}
        reply = api.call("GET", "/admin/v1/keys?" + urlencode(query))
        return _shown(reply) if args.json else _table(reply)
    path = "/admin/v1/keys/" + quote(args.key_id.replace("cfg:", "cfg.", 1), safe="")
    if command == "show":
        return _shown(api.call("GET", path))
    if command == "revoke":
        return _shown(api.call("POST", path + "/revoke"))
    return _with_secret(api.call("POST", path + "/rotate", {"grace_s": args.grace_s}))


def _create_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"name": args.name}
    for name in ("team", "expires_at", *LIMIT_FIELDS, *BUDGET_FIELDS):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if args.models is not None:
        body["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.metadata is not None:
        try:
            body["metadata"] = json.loads(args.metadata)
        except json.JSONDecodeError as error:
            raise KeyCommandError(f"keys create: --metadata is not JSON ({error.msg})") from None
    return body


def _shown(reply: Mapping[str, Any]) -> str:
    return json.dumps(reply, indent=2, ensure_ascii=False)


def _with_secret(reply: Mapping[str, Any]) -> str:
    shown = _shown({k: v for k, v in reply.items() if k != "key"})
    secret = reply.get("key")
    if not secret:
        return shown
    return f"{shown}\n\nsecret (shown once, store it now):\n{secret}"


def _table(reply: Mapping[str, Any]) -> str:
    rows: list[tuple[str, ...]] = [("ID", "NAME", "TEAM", "STATUS", "SOURCE", "PREFIX")]
    for key in reply.get("data", []):
        rows.append(
            tuple(
                str(key.get(f) or "-")
                for f in ("id", "name", "team", "status", "source", "key_prefix")
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    if reply.get("has_more"):
        lines.append(f"(more: --after {reply.get('last_id')})")
    return "\n".join(line.rstrip() for line in lines)


class _Api:
    """One admin API endpoint and its token."""

    def __init__(self, url: str, token: str) -> None:
        if not url.startswith(("http://", "https://")):
            raise KeyCommandError(f"keys: the admin URL must be http(s), got {url[:80]!r}")
        self._url = url
        self._token = token

    def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {self._token}", "accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["content-type"] = "application/json"
        if idempotency_key:
            headers["idempotency-key"] = idempotency_key
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
            self._url + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:  # noqa: S310
                reply: dict[str, Any] = json.loads(response.read())
                return reply
        except urllib.error.HTTPError as error:
            raise KeyCommandError(_error_text(error)) from None
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            reason = getattr(error, "reason", error)
            raise KeyCommandError(f"keys: cannot reach {self._url}: {reason}") from None
        except json.JSONDecodeError:
            raise KeyCommandError(f"keys: {self._url} did not answer JSON") from None


def _error_text(error: urllib.error.HTTPError) -> str:
    try:
        detail = json.loads(error.read())["error"]
        message = detail.get("message") or ""
        code = detail.get("code")
    except (json.JSONDecodeError, KeyError, TypeError, OSError):
        message, code = error.reason, None
    return f"keys: HTTP {error.code}" + (f" {code}" if code else "") + f": {message}"
