"""Counting the pieces every API shares: text, content parts, media, and shapes nobody expected.

Everything takes parsed JSON (``object``) and never raises. Text is encoded as ordinary text, so
special-token strings such as ``<|endoftext|>`` in user input count as the text they are.
Content parts cover Chat (``text``, ``image_url``, ``input_audio``, ``file``, ``refusal``) and
Responses (``input_text``, ``output_text``, ``input_image``, ``input_file``). Shapes that are not
understood count conservatively: every key and string, and one token per other scalar.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass

import tiktoken

from sentinel.tokens.images import PatchPricing, TilePricing, image_size

__all__ = ["ContentCounter"]

_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
_IMAGE_PARTS = frozenset({"image_url", "input_image"})
_FILE_PARTS = frozenset({"file", "input_file"})
# Input audio is billed at about 10 tokens per second. Without a WAV header the duration is
# derived from a low 16 kbit/s bitrate, which overestimates typical recordings.
_AUDIO_TOKENS_PER_SECOND = 10
_AUDIO_FALLBACK_BYTES_PER_SECOND = 2000
# Attached documents (PDFs) are read as text plus page images; a quarter token per byte is a
# deliberately high estimate that the real usage corrects when the request settles.
_FILE_BYTES_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class ContentCounter:
    """Counts text and content parts with one encoding and one image pricing."""

    encoding: tiktoken.Encoding
    images: TilePricing | PatchPricing

    def text(self, value: str) -> int:
        """Tokens in ``value`` as plain text (special-token strings are not special here)."""
        return len(self.encoding.encode_ordinary(value))

    def content(self, value: object) -> int:
        """Tokens in a message's content: a string, a list of parts, or ``None``."""
        if value is None:
            return 0
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return sum(self.part(part) for part in value)
        return self.unknown(value)

    def part(self, part: object) -> int:
        """Tokens in one content part; unknown part types count conservatively."""
        if isinstance(part, str):
            return self.text(part)
        if not isinstance(part, dict):
            return self.unknown(part)
        kind = part.get("type")
        if not isinstance(kind, str):
            return self.unknown(part)
        if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
            return self.text(part["text"])
        if kind == "refusal" and isinstance(part.get("refusal"), str):
            return self.text(part["refusal"])
        if kind in _IMAGE_PARTS:
            return self._image_part(part)
        if kind == "input_audio":
            return self.audio(part.get("input_audio"))
        if kind in _FILE_PARTS:
            inner = part.get("file")
            return self.file(inner if isinstance(inner, dict) else part)
        return self.unknown(part)

    def image(self, url: object, detail: object) -> int:
        """Tokens for one image: its size read from a ``data:`` URL, else the detail's maximum."""
        size = image_size(url) if isinstance(url, str) else None
        return self.images.tokens(size, detail)

    def _image_part(self, part: Mapping[str, object]) -> int:
        image = part.get("image_url")
        if isinstance(image, dict):  # Chat: {"image_url": {"url": ..., "detail": ...}}
            return self.image(image.get("url"), image.get("detail"))
        return self.image(image, part.get("detail"))  # Responses: flat url and detail

    def audio(self, audio: object) -> int:
        """Estimated tokens for base64 input audio, from its duration."""
        if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
            return self.unknown(audio)
        data: str = audio["data"]
        size = _decoded_size(data)
        byte_rate = _wav_byte_rate(data) or _AUDIO_FALLBACK_BYTES_PER_SECOND
        return -(-size * _AUDIO_TOKENS_PER_SECOND // byte_rate)

    def file(self, file: Mapping[str, object]) -> int:
        """Estimated tokens for an attached file: its name plus a share of its bytes."""
        total = 0
        for key, value in file.items():
            if key == "file_data" and isinstance(value, str):
                payload = value.partition(",")[2] if value.startswith("data:") else value
                total += -(-_decoded_size(payload) // _FILE_BYTES_PER_TOKEN)
            elif key != "type":
                total += self.strings(value)
        return total

    def strings(self, value: object) -> int:
        """Tokens in every string inside ``value`` (keys and other scalars are free)."""
        total = 0
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                total += self.text(item)
            elif isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
        return total

    def unknown(self, value: object) -> int:
        """A conservative count for an unexpected shape: keys, strings, one per other scalar."""
        total = 0
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                total += self.text(item)
            elif isinstance(item, dict):
                for key, child in item.items():
                    total += self.text(key) if isinstance(key, str) else 1
                    stack.append(child)
            elif isinstance(item, list):
                stack.extend(item)
            elif item is not None:
                total += 1
        return total


def _decoded_size(data: str) -> int:
    """Bytes encoded by base64 ``data``, without decoding it."""
    padding = 2 if data.endswith("==") else 1 if data.endswith("=") else 0
    return max(len(data) * 3 // 4 - padding, 0)


def _wav_byte_rate(data: str) -> int:
    try:
        head = base64.b64decode(data[:64])
    except (binascii.Error, ValueError):
        return 0
    if head[:4] != b"RIFF" or head[8:16] != b"WAVEfmt ":
        return 0
    return int.from_bytes(head[28:32], "little")
