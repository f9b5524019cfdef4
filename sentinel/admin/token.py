"""The admin tokens (``[admin] token`` and ``[[admin.tokens]]``): what the admin API and
``/metrics`` require, and whose name the audit records."""

from __future__ import annotations

import hmac

from sentinel.config import AdminConfig
from sentinel.errors import AuthenticationFailed, NotFound

__all__ = ["require_admin"]


def require_admin(headers: list[tuple[bytes, bytes]], admin: AdminConfig, path: str) -> str:
    """The name of the admin token presented as ``Authorization: Bearer <token>``.

    Every configured token is compared, in constant time and without stopping at a match, so
    the timing tells nothing about which token (or how much of one) matched. A missing or wrong
    token is a 401; without any configured token the path does not exist (404).
    """
    tokens = admin.named_tokens()
    if not tokens:
        raise NotFound(f"Unknown request URL: GET {path[:200]}.")
    presented = b""
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            presented = value[7:].strip()
    found: str | None = None
    for token in tokens:
        if hmac.compare_digest(presented, token.token.encode("utf-8")) and found is None:
            found = token.name
    if found is None or not presented:
        raise AuthenticationFailed("A valid admin token is required.", code="invalid_admin_token")
    return found
