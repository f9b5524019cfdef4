"""Model → ordered upstream candidates: lowest ``priority`` first, weighted random within one.

A model's candidates are the upstreams whose ``models`` globs match it, or, for a ``[models]``
alias, the alias's entries (each naming the model as that upstream knows it). The grouping by
priority is computed once per model name and cached; the weighted shuffle within a priority is
drawn per request from an injectable ``random.Random``. Breaker state is not consulted here:
``sentinel.upstream.failover`` skips open upstreams.
"""

from __future__ import annotations

import fnmatch
import itertools
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp

from sentinel.config import ModelAlias, UpstreamConfig
from sentinel.errors import NotFound
from sentinel.upstream.credentials import KeyRotation
from sentinel.upstream.slots import ConnectionSlots

__all__ = ["Candidate", "Router", "UpstreamTarget", "weighted_order"]

_CACHE_LIMIT = 4096
_SHOWN_MODEL_CHARS = 100


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """An upstream ready for calls: its config plus what each call would otherwise rebuild."""

    config: UpstreamConfig
    name: str
    base_url: str
    auth_headers: tuple[tuple[str, str], ...]  # the configured extra headers (keys: ``keys``)
    keys: KeyRotation
    timeout: aiohttp.ClientTimeout
    first_byte_s: float
    total_s: float
    matches: Callable[[str], bool]
    is_azure: bool
    deployments: dict[str, str]
    slots: ConnectionSlots  # this upstream's own connection pool: max_connections calls

    @classmethod
    def build(cls, config: UpstreamConfig) -> UpstreamTarget:
        """Precompute headers, timeouts and the compiled model globs of one upstream."""
        pattern = "|".join(f"(?:{fnmatch.translate(glob)})" for glob in config.models)
        compiled = re.compile(pattern, re.DOTALL)
        is_azure = config.kind == "azure"
        return cls(
            config=config,
            name=config.name,
            base_url=config.base_url,
            auth_headers=tuple(config.headers),
            keys=KeyRotation(config.keys, header="api-key" if is_azure else "Authorization"),
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=config.connect_timeout_ms / 1000,
                sock_read=config.idle_timeout_ms / 1000,
            ),
            first_byte_s=config.first_byte_timeout_ms / 1000,
            total_s=config.timeout_ms / 1000,
            matches=lambda model: compiled.match(model) is not None,
            is_azure=is_azure,
            deployments=dict(config.deployments),
            slots=ConnectionSlots(config.max_connections),
        )


@dataclass(frozen=True, slots=True)
class Candidate:
    """One upstream to try for a request, and the model name to ask it for."""

    target: UpstreamTarget
    model: str | None  # as this upstream knows it; None for requests that name no model

    @property
    def name(self) -> str:
        """The upstream's name."""
        return self.target.name


def weighted_order(items: Sequence[Candidate], rng: random.Random) -> list[Candidate]:
    """``items`` shuffled so that each comes first with probability weight / total weight.

    Efraimidis-Spirakis: sort by ``u ** (1 / weight)``, largest first — one draw per item.
    """
    if len(items) < 2:
        return list(items)
    keyed = [(rng.random() ** (1 / c.target.config.weight), i) for i, c in enumerate(items)]
    keyed.sort(reverse=True)
    return [items[i] for _, i in keyed]


class Router:
    """Turns a model name into the upstream candidates to try, in order."""

    def __init__(
        self,
        upstreams: tuple[UpstreamConfig, ...],
        aliases: tuple[ModelAlias, ...] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.targets = tuple(UpstreamTarget.build(u) for u in upstreams)
        self._by_name = {t.name: t for t in self.targets}
        self._aliases = {
            a.name: tuple(Candidate(self._by_name[u], m) for u, m in a.targets) for a in aliases
        }
        self._rng = rng or random.Random()  # load spreading, not security
        self._cache: dict[str, tuple[tuple[Candidate, ...], ...]] = {}
        by_priority = sorted(self.targets, key=lambda t: t.config.priority)
        self._default: tuple[Candidate, ...] = (
            (Candidate(by_priority[0], None),) if by_priority else ()
        )

    @property
    def aliases(self) -> tuple[str, ...]:
        """The public names of the ``[models]`` aliases."""
        return tuple(self._aliases)

    @property
    def default(self) -> UpstreamTarget:
        """The upstream for requests that name no model (files, uploads): the first by priority."""
        return self._default[0].target

    def default_candidates(self) -> list[Candidate]:
        """Requests that name no model go to one upstream (files live on one provider)."""
        return list(self._default)

    def candidates(self, model: str | None) -> list[Candidate]:
        """Every upstream that may serve ``model``, in the order to try them; 404 if none."""
        if not model:
            return self.default_candidates()
        groups = self._groups(model)
        if not groups:
            shown = model[:_SHOWN_MODEL_CHARS]
            raise NotFound(
                f"The model '{shown}' does not exist or you do not have access to it.",
                code="model_not_found",
                param="model",
            )
        if len(groups) == 1 and len(groups[0]) == 1:
            return [groups[0][0]]  # the common case: one upstream, no draw
        return [c for group in groups for c in weighted_order(group, self._rng)]

    def route(self, model: str) -> UpstreamTarget:
        """The first upstream serving ``model``; 404 ``model_not_found`` if none does."""
        return self.candidates(model)[0].target

    def _groups(self, model: str) -> tuple[tuple[Candidate, ...], ...]:
        try:
            return self._cache[model]
        except KeyError:
            pass
        found = self._aliases.get(model)
        if found is None:
            found = tuple(Candidate(t, model) for t in self.targets if t.matches(model))
        ordered = sorted(found, key=lambda c: c.target.config.priority)
        groups = tuple(
            tuple(group)
            for _, group in itertools.groupby(ordered, key=lambda c: c.target.config.priority)
        )
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()  # client-chosen names must not grow memory without bound
        self._cache[model] = groups
        return groups
