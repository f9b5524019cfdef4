"""An incremental HTTP/1.1 response parser for the load generator.

Pure: bytes in, "this response is complete" out. It understands exactly what a benchmark
needs: the status line, the headers, and a body framed by ``Content-Length``, by chunked
transfer coding (to the terminating zero chunk and its trailers), or by the connection's end.
Body bytes are counted, never kept, so a long stream costs no memory.
"""

from __future__ import annotations

__all__ = ["ProtocolError", "ResponseParser"]

_MAX_HEAD = 64 * 1024
_MAX_LINE = 4 * 1024

# Parser states.
_HEAD = 0
_LENGTH = 1  # a Content-Length body: ``_remaining`` bytes left
_CHUNK_SIZE = 2  # waiting for a chunk-size line
_CHUNK_DATA = 3  # ``_remaining`` bytes of chunk data left
_CHUNK_END = 4  # waiting for the CRLF that closes a chunk's data
_TRAILERS = 5  # after the zero chunk: trailer lines until an empty one
_UNTIL_CLOSE = 6  # no framing: the body ends when the connection does
_DONE = 7


class ProtocolError(ValueError):
    """The bytes are not a well-formed HTTP/1.1 response."""


class ResponseParser:
    """Parses one response at a time; ``feed`` returns True once the current one has ended.

    After a completed response, call ``reset`` before feeding the next one; bytes that arrived
    past the end of the previous response are kept and parsed then.
    """

    __slots__ = (
        "_buffer",
        "_remaining",
        "_state",
        "body_bytes",
        "headers",
        "is_keep_alive",
        "status",
    )

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._state = _HEAD
        self._remaining = 0
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.body_bytes = 0
        self.is_keep_alive = True

    @property
    def is_complete(self) -> bool:
        """Whether the current response has been read to its end."""
        return self._state == _DONE

    @property
    def has_leftover(self) -> bool:
        """Whether bytes past the end of the current response have arrived."""
        return bool(self._buffer)

    def reset(self) -> bool:
        """Start on the next response; returns True if buffered bytes already complete it."""
        self._state = _HEAD
        self._remaining = 0
        self.status = 0
        self.headers = {}
        self.body_bytes = 0
        self.is_keep_alive = True
        return self.feed(b"") if self._buffer else False

    def feed(self, data: bytes) -> bool:
        """Consume ``data``; returns True when the current response is complete."""
        state = self._state
        if state == _DONE:
            self._buffer += data
            return True
        if state == _LENGTH and not self._buffer:
            return self._feed_length(data)
        if state == _UNTIL_CLOSE:
            self.body_bytes += len(data)
            return False
        self._buffer += data
        return self._parse()

    def feed_eof(self) -> bool:
        """The connection ended; returns True if that completes the response."""
        if self._state == _UNTIL_CLOSE:
            self._state = _DONE
            return True
        return self._state == _DONE

    def _feed_length(self, data: bytes) -> bool:
        size = len(data)
        if size < self._remaining:
            self._remaining -= size
            self.body_bytes += size
            return False
        self.body_bytes += self._remaining
        self._buffer += data[self._remaining :]
        self._remaining = 0
        self._state = _DONE
        return True

    def _parse(self) -> bool:
        buffer = self._buffer
        position = 0
        while True:
            state = self._state
            if state == _DONE:
                break
            if state == _HEAD:
                end = buffer.find(b"\r\n\r\n", position)
                if end < 0:
                    if len(buffer) - position > _MAX_HEAD:
                        raise ProtocolError("response head too large")
                    break
                self._head(bytes(buffer[position:end]))
                position = end + 4
            elif state == _LENGTH or state == _CHUNK_DATA:
                available = len(buffer) - position
                if available < self._remaining:
                    self.body_bytes += available
                    self._remaining -= available
                    position = len(buffer)
                    break
                self.body_bytes += self._remaining
                position += self._remaining
                self._remaining = 0
                self._state = _DONE if state == _LENGTH else _CHUNK_END
            elif state == _UNTIL_CLOSE:
                self.body_bytes += len(buffer) - position
                position = len(buffer)
                break
            else:
                end = buffer.find(b"\r\n", position)
                if end < 0:
                    if len(buffer) - position > _MAX_LINE:
                        raise ProtocolError("chunk-size or trailer line too long")
                    break
                line = bytes(buffer[position:end])
                position = end + 2
                if state == _CHUNK_SIZE:
                    self._chunk_size(line)
                elif state == _CHUNK_END:
                    if line:
                        raise ProtocolError("chunk data longer than its size")
                    self._state = _CHUNK_SIZE
                elif not line:
                    self._state = _DONE
        del buffer[:position]
        return self._state == _DONE

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3:
            raise ProtocolError(f"bad status line {lines[0][:80]!r}")
        try:
            self.status = int(parts[1])
        except ValueError:
            raise ProtocolError(f"bad status code {parts[1]!r}") from None
        headers = self.headers
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise ProtocolError(f"bad header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        self.is_keep_alive = parts[0] != b"HTTP/1.0" and (
            headers.get(b"connection", b"").lower() != b"close"
        )
        self._state = self._body_state()

    def _body_state(self) -> int:
        if self.status < 200 or self.status in (204, 304):
            return _DONE
        encoding = self.headers.get(b"transfer-encoding")
        if encoding is not None:
            if encoding.lower().rsplit(b",", 1)[-1].strip() != b"chunked":
                self.is_keep_alive = False
                return _UNTIL_CLOSE
            return _CHUNK_SIZE
        length = self.headers.get(b"content-length")
        if length is None:
            self.is_keep_alive = False
            return _UNTIL_CLOSE
        if not length.isdigit():
            raise ProtocolError(f"bad content-length {length[:40]!r}")
        self._remaining = int(length)
        return _LENGTH if self._remaining else _DONE

    def _chunk_size(self, line: bytes) -> None:
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {line[:40]!r}") from None
        if size < 0:
            raise ProtocolError(f"bad chunk size {line[:40]!r}")
        if size == 0:
            self._state = _TRAILERS
        else:
            self._remaining = size
            self._state = _CHUNK_DATA
