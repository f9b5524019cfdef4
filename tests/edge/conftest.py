"""Fixtures for edge and security tests: a lenient upstream and a raw-socket HTTP client.

aiohttp's and httpx's clients normalise URLs before sending, so hostile targets
(``/v1//x``, ``/v1/../x``, ``%2e%2e``) go out through ``raw_request``, byte for byte.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sentinel.config import AdminConfig, Config, KeyConfig, ServerConfig, UpstreamConfig, hash_key
from tests.conftest import SECRETS, UPSTREAM_KEY, Gateway, StartGateway
from tests.support.lenient_upstream import LenientUpstream, start_lenient


@pytest.fixture
async def lenient() -> AsyncIterator[LenientUpstream]:
    """A lenient upstream that answers every path; ``lenient.url`` ends in ``/v1``."""
    upstream = await start_lenient()
    try:
        yield upstream
    finally:
        await upstream.aclose()


async def raw_request(
    port: int,
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes = b"",
    *,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """Send one HTTP/1.1 request to ``127.0.0.1:port`` with the target exactly as given.

    ``Host`` (unless given) and ``Connection: close`` are added, and ``Content-Length`` when
    there is a body and neither it nor ``Transfer-Encoding`` was given. Returns the final
    status (1xx answers are skipped), the headers with lower-cased names (repeats joined by
    ``", "``) and the de-chunked body. A connection closed before a full answer raises
    ``asyncio.IncompleteReadError``.
    """
    lowered = {name.lower() for name in headers}
    lines = [f"{method} {target} HTTP/1.1"]
    if "host" not in lowered:
        lines.append(f"Host: 127.0.0.1:{port}")
    lines += [f"{name}: {value}" for name, value in headers.items() if name.lower() != "connection"]
    lines.append("Connection: close")
    if body and not lowered & {"content-length", "transfer-encoding"}:
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(head + body)
            await writer.drain()
            return await _read_response(reader, method)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass


async def _read_response(
    reader: asyncio.StreamReader, method: str
) -> tuple[int, dict[str, str], bytes]:
    status, headers = await _read_head(reader)
    while 100 <= status < 200 and status != 101:  # interim answers, e.g. 100 Continue
        status, headers = await _read_head(reader)
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return status, headers, b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return status, headers, await _read_chunked(reader)
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    return status, headers, await reader.read()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = raw.decode("latin-1").split("\r\n")[:-2]
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        key, value = name.strip().lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return int(status_line.split(" ", 2)[1]), headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)  # chunk extensions follow ';'
        if size == 0:
            break
        body += await reader.readexactly(size)
        await reader.readexactly(2)  # the CRLF after each chunk
    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailer fields, then a blank line
        pass
    return bytes(body)


# --- a gateway in front of the lenient upstream -----------------------------------------------

LIMITED_KEY = "sk-edge-limited-key-0123456789"
"""tpm = 1000, models = ["gpt-4o-mini"]: the key whose limits the attacks try to walk around."""
TENANT_A = "sk-edge-tenant-a-key-0123456789"
TENANT_B = "sk-edge-tenant-b-key-0123456789"
ADMIN_KEY = "sk-edge-admin-key-0123456789"
SPENDER_KEY = "sk-edge-spender-key-0123456789"
"""tpm = 100000, allowed the images family despite its token limits."""
METRICS_TOKEN = "edge-admin-token-0123456789"


def edge_config(upstream_url: str) -> Config:
    """One upstream (the lenient one) and the edge tests' keys."""
    return Config(
        upstreams=(UpstreamConfig(name="lenient", base_url=upstream_url, api_key=UPSTREAM_KEY),),
        keys=(
            KeyConfig(
                name="limited",
                key_sha256=hash_key(LIMITED_KEY),
                tpm=1000,
                models=("gpt-4o-mini",),
            ),
            KeyConfig(name="tenant-a", key_sha256=hash_key(TENANT_A)),
            KeyConfig(name="tenant-b", key_sha256=hash_key(TENANT_B)),
            KeyConfig(name="admin", key_sha256=hash_key(ADMIN_KEY), admin=True),
            KeyConfig(
                name="spender",
                key_sha256=hash_key(SPENDER_KEY),
                tpm=100_000,
                passthrough=("images",),
            ),
        ),
        admin=AdminConfig(token=METRICS_TOKEN),
        server=ServerConfig(bind="127.0.0.1:0"),
    )


@pytest.fixture
async def edge(lenient: LenientUpstream, start_gateway: StartGateway) -> Gateway:
    """Sentinel in front of the lenient upstream, with the edge tests' keys."""
    return await start_gateway(edge_config(lenient.url))


def bearer(key: str) -> dict[str, str]:
    """The headers that present ``key``."""
    return {"Authorization": f"Bearer {key}"}


SECRETS.update({LIMITED_KEY, TENANT_A, TENANT_B, ADMIN_KEY, SPENDER_KEY, METRICS_TOKEN})
