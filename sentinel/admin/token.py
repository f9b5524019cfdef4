"""The admin token (``[admin] token``): what the admin API and ``/metrics`` require."""

from __future__ import annotations

import hmac

from sentinel.errors import AuthenticationFailed, NotFound

__all__ = ["require_admin"]


def require_admin(headers: list[tuple[bytes, bytes]], token: str | None, path: str) -> None:
    """Raise unless ``Authorization: Bearer <token>`` is present (compared in constant time);
    without a configured token the path does not exist (404)."""
    if not token:
        raise NotFound(f"Unknown request URL: GET {path[:200]}.")
    presented = b""
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            presented = value[7:].strip()
    if not hmac.compare_digest(presented, token.encode("utf-8")):
        raise AuthenticationFailed("A valid admin token is required.", code="invalid_admin_token")
