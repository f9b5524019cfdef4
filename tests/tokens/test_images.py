"""Image tokens: OpenAI's documented tile and patch examples, and header sniffing."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.tokens.images import PatchPricing, TilePricing, image_size, sniff_size

GPT4O = TilePricing(85, 170)


def png(width: int, height: int) -> bytes:
    """The first bytes of a PNG file."""
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"
    return b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR" + ihdr + b"\0\0\0\0"


def gif(width: int, height: int) -> bytes:
    """The first bytes of a GIF file."""
    return b"GIF89a" + width.to_bytes(2, "little") + height.to_bytes(2, "little") + b"\0\0\0"


def riff(chunk: bytes, payload: bytes) -> bytes:
    """A WebP container around one chunk."""
    body = b"WEBP" + chunk + len(payload).to_bytes(4, "little") + payload
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def webp_lossy(width: int, height: int) -> bytes:
    """A VP8 (lossy) WebP header."""
    frame = b"\x30\x01\x00\x9d\x01\x2a" + width.to_bytes(2, "little") + height.to_bytes(2, "little")
    return riff(b"VP8 ", frame)


def webp_lossless(width: int, height: int) -> bytes:
    """A VP8L (lossless) WebP header."""
    bits = (width - 1) | ((height - 1) << 14)
    return riff(b"VP8L", b"\x2f" + bits.to_bytes(4, "little"))


def webp_extended(width: int, height: int) -> bytes:
    """A VP8X (extended) WebP header."""
    canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return riff(b"VP8X", b"\x10\0\0\0" + canvas)


def jpeg(width: int, height: int, *, frame: int = 0xC0, exif: int = 0) -> bytes:
    """A JPEG with JFIF, optional EXIF padding, a quantisation table and a frame header."""

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    out = b"\xff\xd8" + segment(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0")
    if exif:
        out += segment(0xE1, b"Exif\0\0" + b"\0" * exif)
    out += segment(0xDB, b"\0" + bytes(64)) + b"\xff"  # a fill byte before the next marker
    sof = b"\x08" + height.to_bytes(2, "big") + width.to_bytes(2, "big") + b"\x03" + bytes(9)
    return out + segment(frame, sof) + segment(0xDA, bytes(10))


def data_url(blob: bytes, mime: str = "image/png") -> str:
    """A base64 data URL."""
    return f"data:{mime};base64," + base64.b64encode(blob).decode()


@pytest.mark.parametrize(
    ("size", "detail", "tokens"),
    [
        ((1024, 1024), "high", 765),  # OpenAI: 768x768 → 4 tiles
        ((2048, 4096), "high", 1105),  # OpenAI: 1024x2048 → 768x1536 → 6 tiles
        ((4096, 8192), "low", 85),  # OpenAI: low detail is flat
        ((1024, 1024), "low", 85),
        ((512, 512), "high", 255),  # small images are not scaled up
        ((100, 100), "high", 255),
        ((2048, 768), "high", 85 + 8 * 170),
        ((1024, 1024), "auto", 765),  # auto is priced as high
        ((1024, 1024), None, 765),
        ((1024, 1024), "weird", 765),
        (None, "high", 85 + 8 * 170),  # unknown size: the most high detail can cost
        (None, None, 85 + 8 * 170),
        (None, "low", 85),
        ((100_000, 1), "high", 85 + 4 * 170),
    ],
)
def test_tile_formula(size: tuple[int, int] | None, detail: str | None, tokens: int) -> None:
    """GPT-4o pricing reproduces OpenAI's worked examples."""
    assert GPT4O.tokens(size, detail) == tokens


def test_gpt4o_mini_prices_tiles_higher() -> None:
    """gpt-4o-mini's documented 2833 base and 5667 per tile."""
    assert TilePricing(2833, 5667).tokens((1024, 1024), "high") == 2833 + 4 * 5667
    assert TilePricing(2833, 5667).tokens((1024, 1024), "low") == 2833


@pytest.mark.parametrize(
    ("size", "patches"),
    [
        ((1024, 1024), 1024),  # OpenAI: 32 x 32 patches
        ((1800, 2400), 1452),  # OpenAI: scaled down to 1056x1408 → 33 x 44 patches
        ((10, 10), 1),
        ((100_000, 1), 1536),
        ((1, 100_000), 1536),
        (None, 1536),
    ],
)
def test_patch_formula(size: tuple[int, int] | None, patches: int) -> None:
    """Patch pricing reproduces OpenAI's worked examples and never exceeds 1536 patches."""
    assert PatchPricing(1000).tokens(size, "high") == patches


def test_patch_multiplier_rounds_up() -> None:
    """gpt-4.1-mini's 1.62 multiplier: 1452 patches → 2353 tokens."""
    assert PatchPricing(1620).tokens((1800, 2400), "low") == 2353


@pytest.mark.parametrize(
    "blob",
    [
        png(1024, 768),
        gif(1024, 768),
        webp_lossy(1024, 768),
        webp_lossless(1024, 768),
        webp_extended(1024, 768),
        jpeg(1024, 768),
        jpeg(1024, 768, frame=0xC2),
        jpeg(1024, 768, exif=20_000),
    ],
    ids=["png", "gif", "webp-vp8", "webp-vp8l", "webp-vp8x", "jpeg", "jpeg-progressive", "exif"],
)
def test_sizes_are_sniffed_from_headers(blob: bytes) -> None:
    """Width and height come from the first bytes of each supported format."""
    assert sniff_size(blob) == (1024, 768)
    assert image_size(data_url(blob)) == (1024, 768)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/cat.png",
        "data:image/png;base64,",
        "data:image/png;base64,!!!!",
        "data:image/png,rawbytes",
        "data:image/png;base64," + base64.b64encode(b"not an image at all").decode(),
        data_url(png(0, 0)),
        data_url(png(1024, 768)[:20]),
        data_url(jpeg(1024, 768, exif=60_000)),  # frame header beyond the bytes decoded
        "data:image/png;base64,ü" + "A" * 100,
    ],
)
def test_unreadable_sizes_are_unknown(url: str) -> None:
    """Remote URLs, broken or truncated data, and far-away headers give no size."""
    assert image_size(url) is None


@given(st.binary(max_size=200))
def test_sniffing_arbitrary_bytes_never_raises(blob: bytes) -> None:
    """Any bytes give a positive size or None."""
    size = sniff_size(blob)
    assert size is None or (size[0] > 0 and size[1] > 0)


@given(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF", b"\xff\xd8"]), st.binary())
def test_sniffing_corrupt_headers_never_raises(magic: bytes, rest: bytes) -> None:
    """Corrupt files with a valid signature give a positive size or None."""
    size = sniff_size(magic + rest)
    assert size is None or (size[0] > 0 and size[1] > 0)


@given(st.text(max_size=300))
def test_image_size_of_arbitrary_urls_never_raises(text: str) -> None:
    """Any URL, data: or not, gives a size or None."""
    for url in (text, "data:image/png;base64," + text):
        size = image_size(url)
        assert size is None or (size[0] > 0 and size[1] > 0)
