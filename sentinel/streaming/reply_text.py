"""The reply text of a stream, kept per channel and joined only when asked for."""

from __future__ import annotations

from typing import Any

__all__ = ["Channel", "ReplyText"]

Channel = tuple[object, ...]
"""Where a piece of text belongs: a choice, a tool call, an output item."""


class ReplyText:
    """Reply text kept per channel (choice, tool call, output item), joined only on demand.

    Keeping channels apart means replies with several choices or tool calls are not
    interleaved, so the joined text tokenizes as the provider's output did.
    """

    __slots__ = ("_channels", "_joined")

    def __init__(self) -> None:
        self._channels: dict[Channel, list[str]] = {}
        self._joined: str | None = ""

    def add(self, channel: Channel, piece: object) -> None:
        """Append ``piece`` to ``channel`` if it is a non-empty string; ignore anything else."""
        if type(piece) is str and piece:
            pieces = self._channels.get(channel)
            if pieces is None:
                self._channels[channel] = [piece]
            else:
                pieces.append(piece)
            self._joined = None

    def add_function(self, channel: Channel, function: dict[str, Any]) -> None:
        """A function call's name and arguments (pieces of either may come in any chunk)."""
        self.add(channel, function.get("name"))
        self.add(channel, function.get("arguments"))

    def joined(self) -> str:
        """Every channel's text, channels in the order they first had any."""
        if self._joined is None:
            self._joined = "".join("".join(pieces) for pieces in self._channels.values())
        return self._joined
