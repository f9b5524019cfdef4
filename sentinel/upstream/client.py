"""The one outbound aiohttp session, the mapping of its exceptions onto Sentinel's, and the
bounded read of a body from a service Sentinel asks (identity, JWKS, the credits ledger).

Foreign exceptions are translated once, here, so the proxy code handles only
``SentinelError``: connection failures become 502 ``upstream_unreachable``, timeouts 504
``upstream_timeout``, a connection lost mid-body 502 ``upstream_interrupted``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp

from sentinel.errors import SentinelError, UpstreamError, UpstreamTimeout

__all__ = ["open_session", "read_capped", "upstream_errors"]


def open_session() -> aiohttp.ClientSession:
    """The process's single client session: pooled, cookie-less, bytes relayed undecoded.

    The connector sets no limit of its own: each upstream's ``max_connections`` bounds its
    calls (``UpstreamTarget.slots``), so upstreams on one host keep their own pools.
    """
    connector = aiohttp.TCPConnector(
        limit=0,
        limit_per_host=0,
        ttl_dns_cache=300,
        keepalive_timeout=30,
    )
    return aiohttp.ClientSession(
        connector=connector,
        # A shared jar would hand one tenant's upstream cookies to another.
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        trust_env=False,
        timeout=aiohttp.ClientTimeout(total=None),
    )


@contextmanager
def upstream_errors(upstream: str, *, started: bool = False) -> Iterator[None]:
    """Translate aiohttp and timeout exceptions from a call to ``upstream``."""
    try:
        yield
    except SentinelError:
        raise
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout(upstream=upstream, detail=repr(exc)) from None
    except aiohttp.ClientPayloadError as exc:
        raise UpstreamError(
            "The upstream provider broke off its response.",
            code="upstream_interrupted",
            upstream=upstream,
            detail=repr(exc),
        ) from None
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamError(
            "The upstream provider could not be reached.",
            code="upstream_unreachable",
            upstream=upstream,
            detail=repr(exc),
        ) from None
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        code = "upstream_interrupted" if started else "upstream_disconnected"
        raise UpstreamError(
            "The upstream provider closed the connection.",
            code=code,
            upstream=upstream,
            detail=repr(exc),
        ) from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(
            "The upstream provider sent an invalid response.",
            code="upstream_protocol_error",
            upstream=upstream,
            detail=repr(exc),
        ) from None


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit`` bytes (read no further than that)."""
    if (response.content_length or 0) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
