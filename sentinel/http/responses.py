"""Answers Sentinel writes itself (lists, health, admin views): one JSON body, sent whole."""

from __future__ import annotations

import orjson

from sentinel.http.asgi import Send

__all__ = ["send_json"]


async def send_json(send: Send, payload: object, *, status: int = 200, store: bool = True) -> None:
    """Send ``payload`` as a whole JSON response; ``store=False`` adds ``cache-control:
    no-store`` (health and admin views change from one request to the next)."""
    body = orjson.dumps(payload)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    if not store:
        headers.append((b"cache-control", b"no-store"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
