"""An upstream's API keys in rotation: round robin, setting aside a key that got a 429."""

from __future__ import annotations

__all__ = ["KeyRotation"]


class KeyRotation:
    """Hands out an upstream's keys in turn, skipping keys benched until a time (a 429)."""

    __slots__ = ("_benched_until", "_headers", "_next")

    def __init__(self, keys: tuple[str, ...], *, header: str) -> None:
        value = "Bearer {}" if header == "Authorization" else "{}"
        self._headers = tuple((header, value.format(key)) for key in keys)
        self._benched_until = [0] * len(keys)
        self._next = 0

    def __len__(self) -> int:
        return len(self._headers)

    def pick(self, now_ms: int) -> int:
        """The index of the key to use now (-1 when the upstream has no key)."""
        count = len(self._headers)
        if count < 2:
            return count - 1
        start = self._next
        for step in range(count):
            index = (start + step) % count
            if self._benched_until[index] <= now_ms:
                self._next = (index + 1) % count
                return index
        # Every key is benched: the one free soonest.
        return min(range(count), key=self._benched_until.__getitem__)

    def header(self, index: int) -> tuple[str, str] | None:
        """The auth header of key ``index`` (None for -1, no key)."""
        return self._headers[index] if index >= 0 else None

    def bench(self, index: int, until_ms: int) -> None:
        """Set key ``index`` aside until ``until_ms`` (it was rate limited)."""
        if index >= 0:
            self._benched_until[index] = max(self._benched_until[index], until_ms)

    def has_spare(self, index: int, now_ms: int) -> bool:
        """Whether a key other than ``index`` is usable now."""
        return any(i != index and until <= now_ms for i, until in enumerate(self._benched_until))
