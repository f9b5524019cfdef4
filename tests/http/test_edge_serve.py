"""``[cors]`` and gzip through a real ``sentinel serve`` process, configured from TOML."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import aiohttp
import orjson

from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, Upstream
from tests.support.processes import free_port, sentinel_process

APP = "https://app.example.com"


def _config(tmp_path: Path, upstream_url: str, port: int) -> Path:
    digest = hashlib.sha256(CLIENT_KEY.encode()).hexdigest()
    path = tmp_path / "sentinel.toml"
    path.write_text(
        f'[server]\nbind = "127.0.0.1:{port}"\nmax_body_bytes = 1048576\n'
        f'[[upstreams]]\nname = "mock"\nbase_url = "{upstream_url}"\napi_key = "env:UP_KEY"\n'
        f'[[keys]]\nname = "team-a"\nkey_sha256 = "sha256:{digest}"\n'
        f'[cors]\nallow_origins = ["{APP}"]\nallow_credentials = true\n'
        "[compression]\nmin_bytes = 512\n"
    )
    return path


async def test_serve_answers_browsers_and_gzip(upstream: Upstream, tmp_path: Path) -> None:
    """Preflights from the allowed and another origin, a gzip request body inflated for the
    upstream, a gzip reply, and a zip bomb refused, all on one ``sentinel serve``."""
    port = free_port()
    config = _config(tmp_path, upstream.url, port)
    base = f"http://127.0.0.1:{port}/v1"
    with (tmp_path / "serve.log").open("wb") as log:
        async with (
            sentinel_process(config, port, log, {"UP_KEY": UPSTREAM_KEY}),
            aiohttp.ClientSession(auto_decompress=False) as http,
        ):
            for origin, expected in ((APP, 204), ("https://other.example", 403)):
                asked = {"Origin": origin, "Access-Control-Request-Method": "POST"}
                async with http.options(f"{base}/embeddings", headers=asked) as response:
                    assert response.status == expected
                    allowed = response.headers.getall("Access-Control-Allow-Origin", [])
                    assert allowed == ([APP] if expected == 204 else [])

            body = {"model": "text-embedding-3-small", "input": "hi", "dimensions": 64}
            headers = {
                "Authorization": f"Bearer {CLIENT_KEY}",
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
                "Accept-Encoding": "gzip",
                "Origin": APP,
            }
            async with http.post(
                f"{base}/embeddings", data=gzip.compress(orjson.dumps(body)), headers=headers
            ) as response:
                assert response.status == 200
                assert response.headers["Content-Encoding"] == "gzip"
                assert response.headers["Access-Control-Allow-Origin"] == APP
                assert response.headers["Access-Control-Allow-Credentials"] == "true"
                reply = orjson.loads(gzip.decompress(await response.read()))
            assert len(reply["data"][0]["embedding"]) == 64
            assert "content-encoding" not in (await upstream.requests(1))[-1]["headers"]

            bomb = gzip.compress(b'{"input": "' + bytes(8 * 1024 * 1024))
            async with http.post(f"{base}/embeddings", data=bomb, headers=headers) as response:
                assert response.status == 413
