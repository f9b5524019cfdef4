"""``[cors]`` and ``[compression]``: what browsers may call, and how bodies are compressed.

``[cors]`` absent means no CORS at all (no layer is installed). Origins are exact
(``scheme://host[:port]``, written as browsers send them); ``"*"`` allows any origin only when
it is the one entry, and never with credentials. ``[compression]`` shapes the gzip of JSON
replies; gzip request bodies are always accepted on the endpoints that read JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from sentinel.config.table import TOKEN, URL_FORBIDDEN, Table, show

__all__ = ["CompressionConfig", "CorsConfig", "origin_problem", "read_compression", "read_cors"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class CorsConfig:
    """``[cors]``: the origins a browser may call Sentinel from, and what it may send and see."""

    allow_origins: tuple[str, ...] = ()  # exact origins; ("*",) allows any
    allow_credentials: bool = False  # cookies and client certificates; never with "*"
    max_age_s: int = 600  # how long a browser may cache a preflight's answer
    allow_headers: tuple[str, ...] = ()  # request headers allowed beyond the built-in set

    @property
    def allows_any_origin(self) -> bool:
        return self.allow_origins == ("*",)


@dataclass(frozen=True, slots=True)
class CompressionConfig:
    """``[compression]``: gzip of JSON replies for clients that accept it."""

    responses: bool = True  # false: replies are never compressed by Sentinel
    min_bytes: int = 1400  # smaller replies fit one packet: compressing them gains nothing
    level: int = 1  # zlib level, 1 (fastest) to 9 (smallest)


def read_cors(t: Table) -> CorsConfig:
    """``[cors]``; every malformed origin and the ``"*"``-with-credentials mistake reported."""
    d = CorsConfig()
    cors = CorsConfig(
        allow_origins=_origins(t),
        allow_credentials=t.boolean("allow_credentials", d.allow_credentials),
        max_age_s=t.integer("max_age_s", d.max_age_s, minimum=0),
        allow_headers=_header_names(t),
    )
    if cors.allow_credentials and cors.allows_any_origin:
        t.problem(
            "allow_credentials",
            'cannot be true with allow_origins = ["*"]; list the origins that may send credentials',
        )
    t.finish()
    return cors


def read_compression(t: Table) -> CompressionConfig:
    """``[compression]``."""
    d = CompressionConfig()
    compression = CompressionConfig(
        responses=t.boolean("responses", d.responses),
        min_bytes=t.integer("min_bytes", d.min_bytes, minimum=0),
        level=t.integer("level", d.level, minimum=1),
    )
    if compression.level > 9:
        t.problem("level", f"must be at most 9, got {compression.level}")
    t.finish()
    return compression


def _origins(t: Table) -> tuple[str, ...]:
    origins = t.string_list("allow_origins", ())
    if not t.has("allow_origins"):
        t.problem("allow_origins", 'is required (exact origins, or ["*"] for any)')
    if "*" in origins and len(origins) > 1:
        t.problem("allow_origins", '"*" allows every origin; list no others with it')
        return ()
    problems = [(i, origin_problem(origin)) for i, origin in enumerate(origins)]
    for i, problem in problems:
        if problem is not None:
            t.problem(f"allow_origins[{i}]", problem)
    return () if any(problem for _, problem in problems) else origins


def origin_problem(origin: str) -> str | None:
    """Why ``origin`` is not an origin exactly as a browser sends it, or None."""
    if origin == "*":
        return None
    if origin == "null":
        return "the 'null' origin (sandboxed frames, file: pages) cannot be allowed"
    bad = f"expected an origin such as 'https://app.example.com', got {show(origin)}"
    if URL_FORBIDDEN.search(origin) or "*" in origin:
        return bad + " (exact origins only: list each one)" if "*" in origin else bad
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return bad
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return bad
    if parts.username is not None or parts.query or parts.fragment:
        return bad
    if not parts.hostname.isascii():
        return f"write the host in its punycode (xn--) form, as browsers send it: {show(origin)}"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    shown_port = f":{port}" if port is not None and port != _DEFAULT_PORTS[parts.scheme] else ""
    canonical = f"{parts.scheme}://{host}{shown_port}"
    if canonical != origin:
        return f"browsers send this origin as {canonical!r}; write it so (got {show(origin)})"
    return None


def _header_names(t: Table) -> tuple[str, ...]:
    names = t.string_list("allow_headers", ())
    for i, name in enumerate(names):
        if not TOKEN.fullmatch(name):
            t.problem(f"allow_headers[{i}]", f"{show(name)} is not a valid HTTP header name")
    return tuple(name.lower() for name in names if TOKEN.fullmatch(name))
