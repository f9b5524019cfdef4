"""API-key authentication: a presented key becomes a ``Principal`` or a 401.

Keys are stored only as SHA-256 digests. A presented key is hashed and looked up by digest,
then compared with ``hmac.compare_digest``; a missing, malformed or unknown key raises the same
``AuthenticationFailed`` with the same body, so nothing distinguishes the three cases.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from sentinel.config import KeyConfig
from sentinel.errors import AuthenticationFailed

__all__ = ["KeyRing", "Principal", "presented_key"]

_MAX_KEY_BYTES = 512


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: its configured name and limits."""

    name: str
    rpm: int | None
    tpm: int | None


def presented_key(authorization: bytes | None, api_key: bytes | None) -> bytes | None:
    """The key a client sent, from ``Authorization: Bearer …`` or Azure's ``api-key``."""
    if authorization is not None:
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        token = token.strip()
        return token or None
    if api_key is not None:
        return api_key.strip() or None
    return None


class KeyRing:
    """The configured keys, indexed by digest, answering ``authenticate``."""

    def __init__(self, keys: tuple[KeyConfig, ...]) -> None:
        self._by_digest: dict[bytes, tuple[bytes, Principal]] = {
            k.key_sha256: (k.key_sha256, Principal(name=k.name, rpm=k.rpm, tpm=k.tpm)) for k in keys
        }

    def authenticate(self, key: bytes | None) -> Principal:
        """The principal for ``key``; ``AuthenticationFailed`` for anything else."""
        if key is None or len(key) > _MAX_KEY_BYTES:
            raise AuthenticationFailed()
        digest = hashlib.sha256(key).digest()
        entry = self._by_digest.get(digest)
        # The lookup is by digest, so its timing says nothing about any stored key; the
        # constant-time compare keeps the accept path free of early exits all the same.
        if entry is None or not hmac.compare_digest(entry[0], digest):
            raise AuthenticationFailed()
        return entry[1]
