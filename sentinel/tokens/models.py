"""What Sentinel needs to know about a model name: its encoding and how it prices images.

Resolution order for the encoding: tiktoken's own tables (``encoding_name_for_model``) on the name
as sent, lower-cased, and with any provider prefix removed (``openai/gpt-4o``, ``azure/…``); then
Sentinel's family rules, which also catch dated or future variants and Azure deployment names
that contain a known family (``my-gpt4o-deployment``, ``gpt-35-turbo``); then the caller's
default. An encoding that is not loaded falls back to the default as well. Nothing here raises.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection
from dataclasses import dataclass

from tiktoken.model import encoding_name_for_model

from sentinel.tokens.images import PatchPricing, TilePricing

__all__ = ["ModelProfile", "ModelResolver", "family_encoding", "image_pricing", "normalize"]

_O200K = "o200k_base"
_CL100K = "cl100k_base"
_SEP = r"[-_. ]?"
# Encodings whose ordinary (non-special) tokens are another loaded encoding's.
_SAME_RANKS = {"o200k_harmony": _O200K}
_MAX_CACHED_NAME = 200  # longer names are resolved every time, so the cache stays small

_FAMILY_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), encoding)
    for pattern, encoding in (
        (rf"gpt{_SEP}4{_SEP}o", _O200K),  # gpt-4o, my-gpt4o-deployment
        (rf"gpt{_SEP}4{_SEP}[15](?![0-9])", _O200K),  # gpt-4.1, gpt-4.5, gpt41
        (r"(?<![a-z0-9])o[1-9](?![0-9])", _O200K),  # o1, o3-pro, o4-mini-high
        (r"(?<![a-z0-9])4o(?![a-z0-9])", _O200K),  # Azure "4o-mini"
        (rf"chatgpt|gpt-oss|gpt{_SEP}image|omni|codex|computer-use", _O200K),
        (rf"gpt{_SEP}3{_SEP}5|gpt{_SEP}35", _CL100K),  # gpt-3.5-turbo, gpt-35-turbo
        (rf"gpt{_SEP}4(?![0-9o])", _CL100K),  # gpt-4, gpt-4-turbo, gpt4-32k
        (r"text-embedding|ada-002|davinci-002|babbage-002", _CL100K),
        (rf"gpt{_SEP}(?:[5-9]|[1-9][0-9])", _O200K),  # gpt-5 and every later generation
    )
)

_IMAGE_RULES: tuple[tuple[re.Pattern[str], TilePricing | PatchPricing], ...] = tuple(
    (re.compile(pattern), pricing)
    for pattern, pricing in (
        (rf"gpt{_SEP}4{_SEP}o{_SEP}mini|(?<![a-z0-9])4o-mini", TilePricing(2833, 5667)),
        (rf"gpt{_SEP}(?:4{_SEP}1|5){_SEP}mini", PatchPricing(1620)),
        (rf"gpt{_SEP}(?:4{_SEP}1|5){_SEP}nano", PatchPricing(2460)),
        (r"(?<![a-z0-9])o4-mini", PatchPricing(1720)),
    )
)
_DEFAULT_IMAGE_PRICING = TilePricing(85, 170)


def normalize(model: str) -> str:
    """The model name lower-cased, trimmed, and without provider prefixes (``openai/``)."""
    return model.strip().lower().rsplit("/", 1)[-1].strip()


def family_encoding(model: str) -> str | None:
    """The encoding name tiktoken or Sentinel's family rules give ``model``, else ``None``."""
    bare = normalize(model)
    for candidate in dict.fromkeys((model, model.strip().lower(), bare)):
        try:
            return encoding_name_for_model(candidate)
        except KeyError:
            continue
    for pattern, encoding in _FAMILY_RULES:
        if pattern.search(bare):
            return encoding
    return None


def image_pricing(model: str) -> TilePricing | PatchPricing:
    """How ``model`` prices image inputs; GPT-4o's 85 + 170 per tile when unknown."""
    bare = normalize(model)
    for pattern, pricing in _IMAGE_RULES:
        if pattern.search(bare):
            return pricing
    return _DEFAULT_IMAGE_PRICING


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """The counting-relevant facts about one model name."""

    encoding: str
    images: TilePricing | PatchPricing


class ModelResolver:
    """Resolves model names to profiles; never raises, and caches per name in a bounded LRU."""

    def __init__(self, default: str, available: Collection[str], *, cache_size: int = 4096) -> None:
        self.default = default
        self._available = frozenset(available)
        self._cached = functools.lru_cache(maxsize=cache_size)(self._resolve)

    def resolve(self, model: object) -> ModelProfile:
        """The profile for ``model``; anything that is not a known name gets the default."""
        if not isinstance(model, str):
            return self._cached("")
        if len(model) > _MAX_CACHED_NAME:
            return self._resolve(model)
        return self._cached(model)

    def cache_info(self) -> functools._CacheInfo:
        """Hits, misses and size of the per-name cache."""
        return self._cached.cache_info()

    def _resolve(self, model: str) -> ModelProfile:
        encoding = family_encoding(model) or self.default
        encoding = _SAME_RANKS.get(encoding, encoding)
        if encoding not in self._available:
            encoding = self.default
        return ModelProfile(encoding=encoding, images=image_pricing(model))
