"""Image input tokens: OpenAI's published tile and patch formulas, and cheap size sniffing.

Tile models (GPT-4o, GPT-4.1, GPT-5, …): ``detail: "low"`` costs ``base``; otherwise the image is
scaled to fit 2048x2048, then its shortest side down to 768 px, and each 512-px tile costs
``tile`` on top of ``base`` (1024x1024 → 765, 2048x4096 → 1105 at 85/170). Patch models
(GPT-4.1-mini/nano, o4-mini, …) count 32-px patches, at most 1536, times a multiplier.
``auto`` and unknown details are priced as ``high``; an image whose size cannot be read cheaply
(a remote URL, a file id, a truncated header) is priced at the most its detail can cost.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass

__all__ = ["PatchPricing", "TilePricing", "image_size", "sniff_size"]

_HEAD_CHARS = 64 * 1024  # base64 characters decoded to find the dimensions (48 KiB of bytes)
_PATCH = 32
_PATCH_CAP = 1536
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, slots=True)
class TilePricing:
    """GPT-4o-style pricing: ``base`` tokens, plus ``tile`` per 512-px tile at high detail."""

    base: int
    tile: int

    def tokens(self, size: tuple[int, int] | None, detail: object) -> int:
        """Tokens for one image of ``size`` (width, height), or the maximum if unknown."""
        if detail == "low":
            return self.base
        tiles = 8 if size is None else _tiles(*size)
        return self.base + self.tile * tiles


@dataclass(frozen=True, slots=True)
class PatchPricing:
    """GPT-4.1-mini-style pricing: 32-px patches (at most 1536) times ``multiplier_milli``/1000."""

    multiplier_milli: int

    def tokens(self, size: tuple[int, int] | None, detail: object) -> int:
        """Tokens for one image of ``size`` (width, height), or the maximum if unknown."""
        patches = _PATCH_CAP if size is None else _patches(*size)
        return _ceil_div(patches * self.multiplier_milli, 1000)


def _tiles(width: int, height: int) -> int:
    longest = max(width, height)
    if longest > 2048:
        width, height = width * 2048 // longest, height * 2048 // longest
    shortest = min(width, height)
    if shortest > 768:
        width, height = width * 768 // shortest, height * 768 // shortest
    return _ceil_div(max(width, 1), 512) * _ceil_div(max(height, 1), 512)


def _patches(width: int, height: int) -> int:
    patches = _ceil_div(width, _PATCH) * _ceil_div(height, _PATCH)
    if patches <= _PATCH_CAP:
        return patches
    # OpenAI's documented downscale: shrink to the budget, then snap to whole patches.
    shrink = math.sqrt(_PATCH * _PATCH * _PATCH_CAP / (width * height))
    across, down = width * shrink / _PATCH, height * shrink / _PATCH
    if across < 1 or down < 1:  # a sliver the formula cannot snap: price it at the cap
        return _PATCH_CAP
    shrink *= min(math.floor(across) / across, math.floor(down) / down)
    across_n = max(_ceil_div(int(width * shrink), _PATCH), 1)
    down_n = max(_ceil_div(int(height * shrink), _PATCH), 1)
    return min(across_n * down_n, _PATCH_CAP)


def image_size(url: str) -> tuple[int, int] | None:
    """Width and height of a base64 ``data:`` image URL from its header bytes, else ``None``."""
    if not url.startswith("data:"):
        return None
    comma = url.find(",", 5, 256)
    if comma < 0 or not url[:comma].lower().endswith(";base64"):
        return None
    head = url[comma + 1 : comma + 1 + _HEAD_CHARS]
    head = head[: len(head) // 4 * 4]
    try:
        data = base64.b64decode(head)
    except (binascii.Error, ValueError):
        return None
    return sniff_size(data)


def sniff_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the first bytes of a PNG, GIF, WebP or JPEG file, else ``None``."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
        size = _be(data, 16, 4), _be(data, 20, 4)
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        size = _le(data, 6, 2), _le(data, 8, 2)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        size = _webp_size(data)
    elif data.startswith(b"\xff\xd8"):
        size = _jpeg_size(data)
    else:
        return None
    width, height = size
    return (width, height) if width > 0 and height > 0 else None


def _be(data: bytes, at: int, n: int) -> int:
    chunk = data[at : at + n]
    return int.from_bytes(chunk, "big") if len(chunk) == n else 0


def _le(data: bytes, at: int, n: int) -> int:
    chunk = data[at : at + n]
    return int.from_bytes(chunk, "little") if len(chunk) == n else 0


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        return _le(data, 26, 2) & 0x3FFF, _le(data, 28, 2) & 0x3FFF
    if chunk == b"VP8L" and data[20:21] == b"\x2f" and len(data) >= 25:
        bits = _le(data, 21, 4)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return _le(data, 24, 3) + 1, _le(data, 27, 3) + 1
    return 0, 0


def _jpeg_size(data: bytes) -> tuple[int, int]:
    at = 2
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            break
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            at += 2
        elif marker in _JPEG_FRAME_MARKERS:
            return _be(data, at + 7, 2), _be(data, at + 5, 2)
        elif marker in (0xD9, 0xDA):  # end of image or scan data before any frame header
            break
        else:
            length = _be(data, at + 2, 2)
            if length < 2:
                break
            at += 2 + length
    return 0, 0
