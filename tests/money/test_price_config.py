"""``[prices]`` and ``[money]`` in the TOML file, and LiteLLM price maps."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sentinel.config import ConfigError, load_config
from sentinel.config.money import Price, read_litellm
from sentinel.money.prices import PriceBook

UPSTREAMS = (
    '[[upstreams]]\nname = "openai"\nbase_url = "http://127.0.0.1:9000/v1"\n'
    '[[upstreams]]\nname = "azure"\nbase_url = "http://127.0.0.1:9001/v1"\n'
)


def load(tmp_path: Path, text: str) -> PriceBook:
    path = tmp_path / "sentinel.toml"
    path.write_text(UPSTREAMS + text, encoding="utf-8")
    return PriceBook.from_config(load_config(path, env={}).money)


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "sentinel.toml"
    path.write_text(UPSTREAMS + text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    return info.value.problems


def test_prices_override_and_add(tmp_path: Path) -> None:
    """A ``[prices]`` table replaces a shipped price and adds models the defaults lack."""
    book = load(
        tmp_path,
        '[prices."gpt-4o-mini"]\ninput = "0.10"\ncached_input = "0.05"\noutput = "0.50"\n'
        '[prices."llama-*"]\ninput = "0"\noutput = "0.001"\n',
    )
    assert book.price_of("gpt-4o-mini") == Price(100_000_000, 500_000_000, 50_000_000)
    assert book.price_of("llama-3-70b") == Price(0, 1_000_000)
    assert book.price_of("gpt-4o") is not None  # the other defaults stay


def test_model_upstream_and_tier_qualify_a_rule(tmp_path: Path) -> None:
    """``model`` replaces the table name as the glob; ``upstream`` and ``service_tier`` qualify."""
    book = load(
        tmp_path,
        '[prices."gpt-4o on azure"]\nmodel = "gpt-4o"\nupstream = "azure"\n'
        'input = "2.75"\noutput = "11"\n'
        '[prices."gpt-4o flex"]\nmodel = "gpt-4o"\nservice_tier = "flex"\n'
        'input = "1.25"\noutput = "5"\n',
    )
    assert book.price_of("gpt-4o", "azure") == Price(2_750_000_000, 11_000_000_000)
    assert book.price_of("gpt-4o", "openai", "flex") == Price(1_250_000_000, 5_000_000_000)
    plain = book.price_of("gpt-4o", "openai")
    assert plain is not None and plain.input == 2_500_000_000


def test_default_prices_false_drops_the_shipped_book(tmp_path: Path) -> None:
    """``[money] default_prices = false`` keeps only the configured prices."""
    book = load(tmp_path, '[money]\ndefault_prices = false\n[prices."x"]\ninput="1"\noutput="1"\n')
    assert book.price_of("gpt-4o") is None
    assert book.price_of("x") == Price(1_000_000_000, 1_000_000_000)


def test_bad_prices_are_reported_with_their_paths(tmp_path: Path) -> None:
    """Negative, non-numeric, float, absurd, too precise and missing rates, unknown keys and
    unknown upstreams are config errors, all reported at once."""
    found = problems(
        tmp_path,
        '[prices."a"]\ninput = "-1"\noutput = "x"\n'
        '[prices."b"]\ninput = 0.15\noutput = "20000"\n'
        '[prices."c"]\ninput = "0.0000000001"\n'
        '[prices."d"]\ninput = "1"\noutput = "1"\nupstream = "nowhere"\nouptut = "2"\n'
        '[prices."e e"]\ninput = "1"\noutput = "1"\n'
        '[prices]\nf = "1"\n',
    )
    text = "\n".join(found)
    assert 'prices."a".input: must be a finite amount of at least 0' in text
    assert 'prices."a".output: expected a decimal string' in text
    assert 'prices."b".input: expected a decimal string such as "0.15", got 0.15' in text
    assert 'prices."b".output: is more than $10,000 per million tokens' in text
    assert 'prices."c".input: has more than 9 decimals' in text
    assert 'prices."c".output: is required' in text
    assert "prices.\"d\".upstream: no [[upstreams]] entry is named 'nowhere'" in text
    assert "prices.\"d\".ouptut: unknown key (did you mean 'output'?)" in text
    assert 'prices."e e": expected a model glob' in text
    assert 'prices."f": expected a table' in text


LITELLM = {
    "sample_spec": {"input_cost_per_token": 0, "output_cost_per_token": 0},
    "gpt-4o-mini": {
        "input_cost_per_token": 1.5e-07,
        "output_cost_per_token": 6e-07,
        "cache_read_input_token_cost": 7.5e-08,
        "input_cost_per_token_flex": 7.5e-08,
        "output_cost_per_token_flex": 3e-07,
        "litellm_provider": "openai",
        "mode": "chat",
    },
    "gpt-4o-audio-preview": {
        "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05,
        "input_cost_per_audio_token": 4e-05,
        "output_cost_per_audio_token": 8e-05,
    },
    "text-embedding-3-small": {"input_cost_per_token": 2e-08, "mode": "embedding"},
    "third": {"input_cost_per_token": 1 / 3 / 10**6, "output_cost_per_token": 0},
    "dall-e-3": {"output_cost_per_pixel": 0.0, "mode": "image_generation"},
}


def test_litellm_price_maps_convert_exactly(tmp_path: Path) -> None:
    """LiteLLM's per-token floats become exact per-million rates through their decimal
    spelling; tiers become qualified rules; models without token prices are skipped."""
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(LITELLM), encoding="utf-8")
    book = load(tmp_path, f'[money]\nprices_file = "{path}"\ndefault_prices = false\n')
    assert book.price_of("gpt-4o-mini") == Price(150_000_000, 600_000_000, 75_000_000)
    assert book.price_of("gpt-4o-mini", service_tier="flex") == Price(75_000_000, 300_000_000)
    audio = book.price_of("gpt-4o-audio-preview")
    assert audio == Price(2_500_000_000, 10_000_000_000, None, 40_000_000_000, 80_000_000_000)
    assert book.price_of("text-embedding-3-small") == Price(20_000_000, 0)
    # 0.33333333333333331 USD per million: rounded up to the next nano-dollar.
    assert book.price_of("third") == Price(333_333_334, 0)
    assert book.price_of("dall-e-3") is None
    assert book.price_of("sample_spec") is None


def test_toml_prices_beat_the_prices_file(tmp_path: Path) -> None:
    """At equal precedence, ``[prices]`` wins over ``prices_file``, which wins over the shipped."""
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(LITELLM), encoding="utf-8")
    book = load(
        tmp_path,
        f'[money]\nprices_file = "{path}"\n[prices."text-embedding-3-small"]\n'
        'input = "0.01"\noutput = "0"\n',
    )
    assert book.price_of("text-embedding-3-small") == Price(10_000_000, 0)
    audio = book.price_of("gpt-4o-audio-preview")
    assert audio is not None and audio.cached_input is None  # the file's, not the shipped one


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "is not valid JSON"),
        (b"[1, 2]", "expected a JSON object of models"),
        (b'{"m": {"input_cost_per_token": -1e-06}}', "'m': input_cost_per_token (per token)"),
        (b'{"m": {"input_cost_per_token": "0.1"}}', "expected a number"),
        (b'{"m": {"input_cost_per_token": 1, "output_cost_per_token": 0}}', "$10,000"),
    ],
)
def test_bad_price_files_are_config_errors(tmp_path: Path, content: bytes, reason: str) -> None:
    """An unreadable, malformed or absurd price file is a problem at ``money.prices_file``."""
    path = tmp_path / "prices.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(reason)):
        read_litellm(path)
    found = problems(tmp_path, f'[money]\nprices_file = "{path}"\n')
    assert found and found[0].startswith("money.prices_file: ")


def test_a_missing_prices_file_is_a_config_error(tmp_path: Path) -> None:
    """A ``prices_file`` that does not exist names itself."""
    found = problems(tmp_path, f'[money]\nprices_file = "{tmp_path / "nope.json"}"\n')
    assert len(found) == 1 and "cannot read" in found[0] and "nope.json" in found[0]
