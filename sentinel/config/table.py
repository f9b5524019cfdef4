"""Reading one TOML table: typed getters that record problems with their paths."""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

# --- reading one table -----------------------------------------------------------------------

Choice = TypeVar("Choice", bound=str)
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
HEADER_VALUE_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # tab is allowed
URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
DIGEST = re.compile(r"sha256:[0-9a-fA-F]{64}")
MAX_KEY_BYTES = 512  # sentinel.auth rejects longer presented keys


class Table:
    """One TOML table being read: typed getters that report problems, then unknown keys."""

    def __init__(
        self, raw: dict[str, Any], path: str, problems: list[str], env: Mapping[str, str]
    ) -> None:
        self.path = path
        self.problems = problems
        self.env = env
        self._raw = raw
        self._seen: set[str] = set()

    def where(self, key: str | None = None) -> str:
        """The dotted path of ``key`` in this table (of the table itself for None)."""
        if key is None:
            return self.path
        return f"{self.path}.{key}" if self.path else key

    def problem(self, key: str | None, message: str) -> None:
        self.problems.append(f"{self.where(key)}: {message}")

    def has(self, key: str) -> bool:
        return key in self._raw

    def keys(self) -> list[str]:
        """The keys present, for tables whose keys are names (``[models]``)."""
        return list(self._raw)

    def take(self, key: str) -> Any:
        """The raw value of ``key`` (None when absent), marking it as known."""
        self._seen.add(key)
        return self._raw.get(key)

    def finish(self) -> None:
        """Report every key that no getter asked for."""
        known = sorted(self._seen)
        for key in self._raw:
            if key not in self._seen:
                close = difflib.get_close_matches(key, known, n=1)
                self.problem(
                    key, "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
                )

    def string(
        self, key: str, default: str = "", *, required: bool = False, check: _Check | None = None
    ) -> str:
        value = self.take(key)
        if value is None:
            if required:
                self.problem(key, "is required")
            return default
        if not isinstance(value, str):
            self.problem(key, f"expected a string, got {show(value)}")
            return default
        message = check(value) if check else None
        if message:
            self.problem(key, message)
            return default
        return value

    def integer(self, key: str, default: int, *, minimum: int) -> int:
        value = self.optional_integer(key, minimum=minimum)
        return default if value is None else value

    def optional_integer(self, key: str, *, minimum: int) -> int | None:
        value = self.take(key)
        if value is None:
            return None
        # bool is a subclass of int in Python; "workers = true" is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(key, f"expected an integer, got {show(value)}")
            return None
        if value < minimum:
            self.problem(key, f"must be at least {minimum}, got {value}")
            return None
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.take(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(key, f"expected true or false, got {show(value)}")
            return default
        return value

    def choice(self, key: str, choices: tuple[Choice, ...], default: Choice) -> Choice:
        value = self.take(key)
        for option in choices:
            if value == option:
                return option
        if value is not None:
            expected = ", ".join(repr(option) for option in choices)
            self.problem(key, f"expected one of {expected}, got {show(value)}")
        return default

    def string_list(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.take(key)
        if value is None:
            return default
        if not isinstance(value, list) or not value:
            self.problem(key, f"expected a non-empty array of strings, got {show(value)}")
            return default
        bad = [(i, item) for i, item in enumerate(value) if not isinstance(item, str) or not item]
        for i, item in bad:
            self.problem(f"{key}[{i}]", f"expected a non-empty string, got {show(item)}")
        return default if bad else tuple(value)

    def secret(self, key: str, *, min_length: int = 1) -> str | None:
        """A secret, literal or ``"env:NAME"``; problems never show its value."""
        value = self.take(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem(key, f"expected a string, got {kind(value)}")
            return None
        origin = ""
        if value.startswith("env:"):
            name = value.removeprefix("env:")
            if not ENV_NAME.fullmatch(name):
                self.problem(key, f"expected env:NAME with a variable name, got {show(value)}")
                return None
            value = self.env.get(name, "")
            if not value:
                self.problem(key, f"environment variable {name} is not set or empty")
                return None
            origin = f" (from environment variable {name})"
        message = secret_problem(value, min_length)
        if message:
            self.problem(key, message + origin)
            return None
        return value

    def table(self, key: str) -> Table:
        value = self.take(key)
        if value is not None and not isinstance(value, dict):
            self.problem(key, f"expected a table ([{key}]), got {show(value)}")
        raw = value if isinstance(value, dict) else {}
        return Table(raw, self.where(key), self.problems, self.env)

    def tables(self, key: str, *, required: bool = False) -> list[Table]:
        value = self.take(key)
        if value is None or value == []:
            if required:
                self.problem(key, f"at least one [[{key}]] entry is required")
            return []
        if not isinstance(value, list):
            self.problem(key, f"expected an array of tables ([[{key}]]), got {show(value)}")
            return []
        found = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                found.append(Table(item, f"{self.where(key)}[{i}]", self.problems, self.env))
            else:
                self.problem(f"{key}[{i}]", f"expected a table, got {show(item)}")
        return found


_Check = Callable[[str], str | None]


def kind(value: object) -> str:
    kinds: tuple[tuple[type, str], ...] = (
        (bool, "a boolean"),
        (str, "a string"),
        (int, "an integer"),
        (float, "a float"),
        (list, "an array"),
        (dict, "a table"),
    )
    return next((name for cls, name in kinds if isinstance(value, cls)), "a date/time")


def show(value: object) -> str:
    """``value`` as a problem message shows it: TOML spelling, long strings shortened."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, int | float):
        return repr(value)
    return kind(value)


def secret_problem(value: str, min_length: int) -> str | None:
    if len(value) < min_length:
        return (
            "must not be empty" if min_length == 1 else f"must be at least {min_length} characters"
        )
    if CONTROL.search(value):
        return "must not contain control characters"
    return None


# --- checks of single values -----------------------------------------------------------------


def name_problem(name: str) -> str | None:
    if NAME.fullmatch(name):
        return None
    return f"expected 1 to 64 of A-Z a-z 0-9 _ . -, got {show(name)}"


def bind_problem(bind: str) -> str | None:
    host, colon, port = bind.rpartition(":")
    if not colon or not host:
        return f"expected HOST:PORT, got {show(bind)}"
    if host.startswith("[") and host.endswith("]"):
        if not is_ipv6(host[1:-1]):
            return f"expected an IPv6 address inside [ ], got {show(bind)}"
    elif ":" in host:
        return f"write an IPv6 host in brackets, as in '[::1]:8080', got {show(bind)}"
    elif not re.fullmatch(r"[A-Za-z0-9.-]+", host):
        return f"expected a host name or IP address before the port, got {show(bind)}"
    if not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        return f"expected a port from 0 to 65535, got {show(bind)}"
    return None


def is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def http_url_problem(url: str) -> str | None:
    bad = f"expected an http(s) URL, got {show(url)}"
    if URL_FORBIDDEN.search(url):
        return bad
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        return bad
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return bad
    if parts.query or parts.fragment:
        return f"must not have a query or fragment (paths are appended), got {show(url)}"
    return None


def redis_url_problem(url: str) -> str | None:
    # The URL may carry a password, so problems describe it without echoing it.
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        return "expected a redis://, rediss:// or unix:// URL; this one does not parse"
    if parts.scheme not in ("redis", "rediss", "unix"):
        return f"expected a redis://, rediss:// or unix:// URL, got scheme {parts.scheme!r}"
    if parts.scheme == "unix" and not parts.path:
        return "a unix:// URL needs a socket path, as in unix:///run/redis.sock"
    if parts.scheme != "unix" and not parts.hostname:
        return "expected a host, as in redis://127.0.0.1:6379/0"
    return None


def digest_problem(text: str) -> str | None:
    if DIGEST.fullmatch(text):
        return None
    return f"expected 'sha256:' and 64 hex digits (see 'sentinel keys hash'), got {show(text)}"


# --- sections --------------------------------------------------------------------------------


def unknown_choice(name: str, known: Iterable[str]) -> str:
    """Why ``name`` is not one of ``known``, with the closest if one is close."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {name!r}{hint}; expected one of {', '.join(sorted(known))}"
