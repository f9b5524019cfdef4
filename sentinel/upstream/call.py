"""One call to an upstream: URL, headers, first-byte timeout and error mapping together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import quote

import aiohttp
from yarl import URL

from sentinel.deadline import Deadline
from sentinel.errors import UpstreamError
from sentinel.http.context import RequestContext
from sentinel.upstream.client import upstream_errors
from sentinel.upstream.routing import UpstreamTarget

__all__ = ["open_upstream", "upstream_url"]

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

    ``key_index`` picks the upstream key (``target.keys``) the call is made with.
    """
    headers.update(target.auth_headers)
    auth = target.keys.header(min(key_index, len(target.keys) - 1))
    if auth is not None:
        headers[auth[0]] = auth[1]
    if ctx.traceparent:  # tracing on: the upstream call belongs to this request's span
        headers["traceparent"] = ctx.traceparent
    started = time.perf_counter_ns()
    try:
        first_byte = asyncio.get_running_loop().time() + target.first_byte_s
        with upstream_errors(target.name), Deadline(first_byte):
            response = await session.request(
                method,
                url,
                headers=headers,
                data=data,
                timeout=target.timeout,
                allow_redirects=False,
            )
    finally:
        ctx.upstream_wait_ns += time.perf_counter_ns() - started
    ctx.upstream_status = response.status
    if response.status == 401:
        # The client authenticated with Sentinel; a 401 here means Sentinel's own upstream
        # key is wrong, which the client must not mistake for its key being refused.
        response.close()
        raise UpstreamError(
            "The upstream provider refused the gateway's credentials.",
            code="upstream_auth_failed",
            upstream=target.name,
        )
    return response
