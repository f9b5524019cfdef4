"""Header rewriting in both directions, safe against hostile values.

Requests: the client's credential, cookies, hop-by-hop headers and headers that only make
sense between the client and Sentinel are dropped; everything else (User-Agent, X-Stainless-*,
OpenAI-Beta, Idempotency-Key, traceparent, …) is forwarded. A value with control bytes or
invalid UTF-8 is refused with a 400 naming the header. Responses: hop-by-hop headers, cookies,
headers the server sets itself and headers that describe the provider account every key
shares (``openai-organization``, ``openai-project``, its ``x-ratelimit-*``, Azure's deployment
names) are dropped, and so are its ``access-control-*`` (CORS is Sentinel's own, ``[cors]``)
and any value that cannot be relayed (logged by the caller); timing such as
``openai-processing-ms`` is kept; the upstream's ``x-request-id`` is kept as
``x-upstream-request-id``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sentinel.errors import InvalidRequest

__all__ = ["RequestHeaders", "relay_headers", "scan_request_headers"]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Set by Sentinel or aiohttp for the upstream hop, or belonging to the client's account only.
_NOT_FORWARDED = HOP_BY_HOP | {
    b"cookie",
    b"set-cookie",
    b"authorization",
    b"api-key",
    b"host",
    b"content-length",
    b"accept-encoding",
    b"expect",
    b"openai-organization",
    b"openai-project",
    b"x-request-id",
}
# Set by hypercorn or by Sentinel itself on the way back, or naming the provider account that
# every key shares (its organization, project, deployment and its own rate limits: Sentinel
# answers with the key's).
_NOT_RELAYED = HOP_BY_HOP | {
    b"set-cookie",
    b"cookie",
    b"content-length",
    b"date",
    b"server",
    b"alt-svc",
    b"x-request-id",
    b"openai-organization",
    b"openai-project",
    b"x-ms-deployment-name",
    b"azureml-model-deployment",
    b"apim-request-id",
}
_PROVIDER_LIMITS = b"x-ratelimit-"
_UPSTREAM_CORS = b"access-control-"  # Sentinel's own [cors] decides what browsers may do
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_UPSTREAM_REQUEST_ID = b"x-upstream-request-id"


@dataclass(slots=True)
class RequestHeaders:
    """What Sentinel needs from a request's headers, found in one pass."""

    authorization: bytes | None = None
    api_key: bytes | None = None
    content_type: bytes | None = None
    content_length: int | None = None
    content_encoding: bytes | None = None
    accept_encoding: str | None = None
    forward: dict[str, str] = field(default_factory=dict)


def scan_request_headers(raw: list[tuple[bytes, bytes]]) -> RequestHeaders:
    """Split the ASGI headers into the ones Sentinel reads and the ones it forwards."""
    found = RequestHeaders()
    connection_listed: list[bytes] = []
    for name, value in raw:
        if name == b"authorization":
            found.authorization = value
        elif name == b"api-key":
            found.api_key = value
        elif name == b"content-type":
            found.content_type = value
        elif name == b"content-length":
            found.content_length = _content_length(value)
        elif name == b"content-encoding":
            found.content_encoding = value
        elif name == b"accept-encoding":
            found.accept_encoding = _forwardable(name, value)
        elif name == b"connection":
            connection_listed.extend(t.strip().lower() for t in value.split(b","))
        if name not in _NOT_FORWARDED:
            found.forward[name.decode("latin-1")] = _forwardable(name, value)
    for listed in connection_listed:
        found.forward.pop(listed.decode("latin-1"), None)
    return found


def _content_length(value: bytes) -> int:
    if not value.isdigit():
        raise InvalidRequest(
            "Invalid Content-Length header.", code="invalid_header", param="content-length"
        )
    return int(value)


def _forwardable(name: bytes, value: bytes) -> str:
    if _CONTROL.search(value) is None:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    header = name.decode("latin-1")
    raise InvalidRequest(
        f"The value of header '{header}' contains bytes that cannot be forwarded.",
        code="invalid_header",
        param=header,
    )


def relay_headers(
    raw: tuple[tuple[bytes, bytes], ...], *, keep_length: bool
) -> tuple[list[tuple[bytes, bytes]], list[str]]:
    """Upstream response headers fit to relay, and the names of the ones dropped as invalid."""
    relayed: list[tuple[bytes, bytes]] = []
    dropped: list[str] = []
    for name, value in raw:
        if _CONTROL.search(value) is not None or _CONTROL.search(name) is not None:
            dropped.append(name.decode("latin-1"))
            continue
        lowered = name.lower()
        if lowered.startswith((_PROVIDER_LIMITS, _UPSTREAM_CORS)):
            continue
        if lowered in _NOT_RELAYED:
            if lowered == b"x-request-id":
                relayed.append((_UPSTREAM_REQUEST_ID, value))
            elif keep_length and lowered == b"content-length":
                relayed.append((lowered, value))
            continue
        relayed.append((lowered, value))
    return relayed, dropped
