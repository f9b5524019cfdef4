"""One call to an upstream: URL, headers, first-byte timeout and error mapping together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import quote

import aiohttp
from yarl import URL

from sentinel.deadline import Deadline, deadline_at
from sentinel.errors import ServiceUnavailable, UpstreamError
from sentinel.http.context import RequestContext
from sentinel.upstream.client import upstream_errors
from sentinel.upstream.routing import UpstreamTarget

__all__ = ["UPSTREAM_BUSY", "open_upstream", "upstream_url"]

UPSTREAM_BUSY = "upstream_busy"
"""The code of a call that found its upstream's connection pool full."""

_API_PREFIX = "/v1"


def upstream_url(target: UpstreamTarget, path: str, query: bytes, model: str | None = None) -> URL:
    """The upstream URL for a client path under ``/v1`` (the base URL already ends in it).

    Azure's layout is ``{base}/openai/deployments/{deployment}/{path}?api-version=...`` for a
    model's calls and ``{base}/openai/{path}?api-version=...`` for the rest.
    """
    tail = path[len(_API_PREFIX) :] if path.startswith(_API_PREFIX) else path
    if target.is_azure:
        version = f"api-version={target.config.api_version}"
        query = query + b"&" + version.encode() if query else version.encode()
        if model is not None and not tail.startswith("/models"):
            deployment = quote(target.deployments.get(model, model), safe="")
            tail = f"/openai/deployments/{deployment}{tail}"
        else:
            tail = "/openai" + tail
    url = target.base_url + tail
    if query:
        url += "?" + query.decode("latin-1")
    return URL(url, encoded=True)


async def _take_slot(target: UpstreamTarget, deadline: float) -> None:
    """One of the upstream's connection slots, waiting at most until ``deadline``; an
    upstream whose pool stays full is Sentinel's own saturation, not the upstream failing:
    503 ``upstream_busy``, which no breaker counts."""
    if target.slots.try_take():
        return  # free: no wait, no timer
    try:
        with Deadline(deadline):
            await target.slots.wait()
    except TimeoutError:
        raise ServiceUnavailable(
            "Every connection to the upstream provider is in use; try again shortly.",
            code=UPSTREAM_BUSY,
            headers={"retry-after": "1"},
            upstream=target.name,
        ) from None


async def open_upstream(
    session: aiohttp.ClientSession,
    target: UpstreamTarget,
    ctx: RequestContext,
    method: str,
    url: URL,
    headers: dict[str, str],
    data: bytes | AsyncIterator[bytes] | None,
    key_index: int = 0,
) -> aiohttp.ClientResponse:
    """Send the request and wait for the response headers, within the first-byte timeout.

    ``key_index`` picks the upstream key (``target.keys``) the call is made with. The call
    takes one of the upstream's ``max_connections`` slots (waiting for one counts against the
    first-byte timeout); the caller gives it back (``release_slot``) once the response is
    closed, and on any failure here it is given back already.
    """
    headers.update(target.auth_headers)
    auth = target.keys.header(min(key_index, len(target.keys) - 1))
    if auth is not None:
        headers[auth[0]] = auth[1]
    if ctx.traceparent:  # tracing on: the upstream call belongs to this request's span
        headers["traceparent"] = ctx.traceparent
    started = time.perf_counter_ns()
    first_byte = asyncio.get_running_loop().time() + target.first_byte_s
    await _take_slot(target, first_byte)
    try:
        with upstream_errors(target.name), deadline_at(first_byte):
            response = await session.request(
                method,
                url,
                headers=headers,
                data=data,
                timeout=target.timeout,
                allow_redirects=False,
            )
    except BaseException:
        target.slots.give()
        raise
    finally:
        ctx.upstream_wait_ns += time.perf_counter_ns() - started
    ctx.upstream_status = response.status
    if response.status == 401:
        # The client authenticated with Sentinel; a 401 here means Sentinel's own upstream
        # key is wrong, which the client must not mistake for its key being refused.
        response.close()
        target.slots.give()
        raise UpstreamError(
            "The upstream provider refused the gateway's credentials.",
            code="upstream_auth_failed",
            upstream=target.name,
        )
    return response
