"""The built-in PII detectors of ``[pii] redact``: an RE2 pattern each, and a validator that
turns away what only looks like one (a 16-digit order number that fails Luhn is not a card).

Every pattern has a bounded match length, so each detector can also screen streamed replies
(``[pii] responses``). A match is replaced by ``[REDACTED:<detector>]``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DETECTORS", "Detector"]

Validator = Callable[[bytes], bool]


@dataclass(frozen=True, slots=True)
class Detector:
    """One detector: its name, its RE2 pattern, and what a match must also satisfy."""

    name: str
    pattern: str
    validator: Validator | None = None


def _digits(text: bytes) -> bytes:
    return bytes(c for c in text if 48 <= c <= 57)


def luhn_valid(digits: bytes) -> bool:
    """The Luhn checksum of a string of ASCII digits."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = char - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


# Issuer prefixes of the card networks (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay).
_CARD_PREFIXES = (b"4", b"51", b"52", b"53", b"54", b"55", b"34", b"37", b"6011", b"65", b"35",
                  b"36", b"38", b"30", b"62", b"64")  # fmt: skip


def _is_card(match: bytes) -> bool:
    digits = _digits(match)
    if not 13 <= len(digits) <= 19 or not luhn_valid(digits):
        return False
    if digits[:4].isdigit() and 2221 <= int(digits[:4]) <= 2720:
        return True  # Mastercard's 2-series
    return digits.startswith(_CARD_PREFIXES)


def _is_iban(match: bytes) -> bool:
    """ISO 13616: the country code and check digits moved to the end, letters as numbers
    (A=10 ... Z=35), the whole number mod 97 is 1."""
    compact = match.replace(b" ", b"").upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(chr(c), 36)) for c in rearranged)
    return int(number) % 97 == 1


def _is_ssn(match: bytes) -> bool:
    area, group, serial = match[:3], match[4:6], match[7:]
    return (
        area not in (b"000", b"666") and area[:1] != b"9" and group != b"00" and serial != b"0000"
    )


def _is_phone(match: bytes) -> bool:
    """10 to 15 digits, written as a phone number is: with a ``+`` or separators (a bare run
    of digits is more likely an id), and not a dotted IPv4 address."""
    digits = _digits(match)
    if not 10 <= len(digits) <= 15:
        return False
    if not match.startswith(b"+") and digits == match:
        return False
    return not (match.count(b".") == 3 and _is_ip(match))


def _is_ip(match: bytes) -> bool:
    text = match.decode("ascii", "replace")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    # "::" or "a::" in code (std::vector) parse as IPv6: ask for two groups at least.
    return address.version == 4 or sum(1 for group in text.split(":") if group) >= 2


_KEY_BODY = "[A-Za-z0-9+/=\\r\\n]{0,1000}"
_PEM_LABEL = "(?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY-----"
_IPV4 = r"\b(?:\d{1,3}\.){3}\d{1,3}\b"
_IPV6 = r"\b(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}"

DETECTORS: dict[str, Detector] = {
    d.name: d
    for d in (
        Detector(
            "email",
            r"\b[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,4}"
            r"[A-Za-z]{2,24}\b",
        ),
        Detector(
            "phone",
            r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\b\d{2,4}(?:[ .-]?\d{2,4}){1,4}\b",
            _is_phone,
        ),
        Detector("credit_card", r"\b(?:\d[ -]?){12,18}\d\b", _is_card),
        Detector("iban", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b", _is_iban),
        Detector("us_ssn", r"\b\d{3}-\d{2}-\d{4}\b", _is_ssn),
        Detector("ip_address", f"{_IPV4}|{_IPV6}", _is_ip),
        Detector(
            "api_key",
            "|".join(
                (
                    r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,200}",  # OpenAI
                    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key id
                    r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}\b",  # GitHub tokens
                    r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b",
                    r"\bxox[abposr]-[A-Za-z0-9-]{10,200}",  # Slack
                    # A PEM private key block: its header, up to 4,000 characters of body, the
                    # END line.
                    f"-----BEGIN {_PEM_LABEL}"
                    r"(?:\r?\n[A-Za-z-]{1,20}: [^\r\n]{0,100}){0,3}"
                    + _KEY_BODY * 4
                    + f"(?:-----END {_PEM_LABEL})?",
                )
            ),
        ),
    )
}
"""Every detector by name (``sentinel.config.guardrails.PII_DETECTORS`` lists the same)."""
