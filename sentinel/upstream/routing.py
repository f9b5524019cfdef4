"""Model → upstream routing by each upstream's ``models`` globs, in configuration order."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from sentinel.config import UpstreamConfig
from sentinel.errors import NotFound

__all__ = ["Router", "UpstreamTarget"]

_CACHE_LIMIT = 4096
_SHOWN_MODEL_CHARS = 100


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """An upstream ready for calls: its config plus what each call would otherwise rebuild."""

    config: UpstreamConfig
    name: str
    base_url: str
    auth_headers: tuple[tuple[str, str], ...]
    timeout: aiohttp.ClientTimeout
    first_byte_s: float
    total_s: float
    matches: Callable[[str], bool]

    @classmethod
    def build(cls, config: UpstreamConfig) -> UpstreamTarget:
        """Precompute headers, timeouts and the compiled model globs of one upstream."""
        headers = list(config.headers)
        if config.api_key:
            headers.append(("Authorization", f"Bearer {config.api_key}"))
        pattern = "|".join(f"(?:{fnmatch.translate(glob)})" for glob in config.models)
        compiled = re.compile(pattern, re.DOTALL)
        return cls(
            config=config,
            name=config.name,
            base_url=config.base_url,
            auth_headers=tuple(headers),
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=config.connect_timeout_ms / 1000,
                sock_read=config.idle_timeout_ms / 1000,
            ),
            first_byte_s=config.first_byte_timeout_ms / 1000,
            total_s=config.timeout_ms / 1000,
            matches=lambda model: compiled.match(model) is not None,
        )


class Router:
    """Chooses the upstream for a model: the first whose globs match it."""

    def __init__(self, upstreams: tuple[UpstreamConfig, ...]) -> None:
        self.targets = tuple(UpstreamTarget.build(u) for u in upstreams)
        self._cache: dict[str, UpstreamTarget | None] = {}

    @property
    def default(self) -> UpstreamTarget:
        """The upstream for requests that name no model (files, uploads): the first one."""
        return self.targets[0]

    def route(self, model: str) -> UpstreamTarget:
        """The upstream serving ``model``; 404 ``model_not_found`` if none does."""
        try:
            target = self._cache[model]
        except KeyError:
            target = next((t for t in self.targets if t.matches(model)), None)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()  # client-chosen names must not grow memory without bound
            self._cache[model] = target
        if target is None:
            shown = model[:_SHOWN_MODEL_CHARS]
            raise NotFound(
                f"The model '{shown}' does not exist or you do not have access to it.",
                code="model_not_found",
                param="model",
            )
        return target
