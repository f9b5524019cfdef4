"""``[identity]`` and ``[identity.jwt]``: principals from an identity service and bearer JWTs.

Either part may be present alone: ``[identity] url`` turns on the identity service (unknown
keys are resolved by POSTing their SHA-256 to it), ``[identity.jwt]`` turns on bearer JWTs
checked against an issuer's JWKS. Plain data: ``sentinel.identity`` runs both.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentinel.config.budgets import BUDGET_FIELDS, parse_usd
from sentinel.config.limits import LIMIT_FIELDS, MAX_AMOUNT
from sentinel.config.table import Table, http_url_problem, name_problem, show

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "IdentityConfig",
    "IdentityServiceConfig",
    "JwtConfig",
    "read_identity",
]

ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
"""The signature algorithms a JWKS can vouch for: public keys only, never a shared secret."""

_DEFAULT_FIELDS = frozenset(("team", "models", *LIMIT_FIELDS, *BUDGET_FIELDS))


@dataclass(frozen=True, slots=True)
class IdentityServiceConfig:
    """``[identity]``: the service that resolves unknown keys, and how its answers are kept."""

    url: str
    token: str | None = None  # sent as Authorization: Bearer
    ttl_s: int = 60  # an answer is fresh this long; then served stale while one refresh runs
    max_stale_s: int = 600  # a known key keeps working this long after its last good answer
    negative_ttl_s: int = 5  # an unknown key is asked about again after this
    timeout_ms: int = 1_000  # the deadline of one lookup
    max_entries: int = 100_000  # known keys kept (least recently used dropped first)
    max_unknown_entries: int = 10_000  # unknown keys kept, apart: a spray cannot evict known ones
    max_lookups: int = 64  # lookups sent at once; 4x as many keys may wait, then 503
    breaker_failures: int = 5  # failed lookups in a row that open the breaker
    breaker_cooldown_ms: int = 5_000  # open this long before one probe lookup goes through


@dataclass(frozen=True, slots=True)
class JwtConfig:
    """``[identity.jwt]``: bearer JWTs signed by keys of ``jwks_url``."""

    jwks_url: str
    issuer: str
    audience: str
    name_claim: str = "sub"
    leeway_s: int = 30  # clock skew allowed on exp and nbf
    algorithms: tuple[str, ...] = ASYMMETRIC_ALGORITHMS
    defaults: tuple[tuple[str, object], ...] = ()  # principal fields the `sentinel` claim omits
    timeout_ms: int = 2_000  # the deadline of one JWKS fetch
    jwks_ttl_s: int = 300  # the key set is refetched in the background after this
    jwks_refetch_s: int = 30  # an unknown kid refetches the key set at most this often
    max_entries: int = 10_000  # verified tokens kept, so the hot path does not re-verify


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    """``[identity]`` as a whole: either part may be absent (None)."""

    service: IdentityServiceConfig | None = None
    jwt: JwtConfig | None = None

    def secrets(self) -> tuple[str, ...]:
        """The secrets these sections hold (the service's bearer token)."""
        token = self.service.token if self.service is not None else None
        return (token,) if token else ()


_SERVICE_KEYS = frozenset(f for f in IdentityServiceConfig.__dataclass_fields__ if f != "url")


def read_identity(t: Table) -> IdentityConfig:
    """Read ``[identity]``; the service part needs ``url``, the JWT part its own table."""
    jwt = _jwt(t.table("jwt")) if t.has("jwt") else None
    service = None
    if t.has("url") or any(t.has(k) for k in _SERVICE_KEYS):
        service = _service(t)
    t.finish()
    return IdentityConfig(service=service, jwt=jwt)


def _service(t: Table) -> IdentityServiceConfig:
    d = IdentityServiceConfig(url="")
    service = IdentityServiceConfig(
        url=t.string("url", required=True, check=http_url_problem),
        token=t.secret("token"),
        ttl_s=t.integer("ttl_s", d.ttl_s, minimum=1),
        max_stale_s=t.integer("max_stale_s", d.max_stale_s, minimum=0),
        negative_ttl_s=t.integer("negative_ttl_s", d.negative_ttl_s, minimum=1),
        timeout_ms=t.integer("timeout_ms", d.timeout_ms, minimum=1),
        max_entries=t.integer("max_entries", d.max_entries, minimum=1),
        max_unknown_entries=t.integer("max_unknown_entries", d.max_unknown_entries, minimum=1),
        max_lookups=t.integer("max_lookups", d.max_lookups, minimum=1),
        breaker_failures=t.integer("breaker_failures", d.breaker_failures, minimum=1),
        breaker_cooldown_ms=t.integer("breaker_cooldown_ms", d.breaker_cooldown_ms, minimum=1),
    )
    if service.max_stale_s < service.ttl_s:
        t.problem(
            "max_stale_s",
            f"must be at least ttl_s ({service.ttl_s}), got {service.max_stale_s}",
        )
    return service


def _jwt(t: Table) -> JwtConfig:
    d = JwtConfig(jwks_url="", issuer="", audience="")
    jwt = JwtConfig(
        jwks_url=t.string("jwks_url", required=True, check=http_url_problem),
        issuer=t.string("issuer", required=True),
        audience=t.string("audience", required=True),
        name_claim=t.string("name_claim", d.name_claim, check=_claim_problem),
        leeway_s=t.integer("leeway_s", d.leeway_s, minimum=0),
        algorithms=_algorithms(t),
        defaults=_defaults(t.table("defaults")),
        timeout_ms=t.integer("timeout_ms", d.timeout_ms, minimum=1),
        jwks_ttl_s=t.integer("jwks_ttl_s", d.jwks_ttl_s, minimum=1),
        jwks_refetch_s=t.integer("jwks_refetch_s", d.jwks_refetch_s, minimum=1),
        max_entries=t.integer("max_entries", d.max_entries, minimum=1),
    )
    if jwt.leeway_s > 300:
        t.problem("leeway_s", f"must be at most 300 (a small clock skew), got {jwt.leeway_s}")
    t.finish()
    return jwt


def _claim_problem(claim: str) -> str | None:
    if claim == "sentinel":
        return "'sentinel' is the claim of limits, not a name"
    return name_problem(claim)


def _algorithms(t: Table) -> tuple[str, ...]:
    """``algorithms``: a subset of the asymmetric ones; HMAC and ``none`` are refused here."""
    names = t.string_list("algorithms", ASYMMETRIC_ALGORITHMS)
    bad = [(i, n) for i, n in enumerate(names) if n not in ASYMMETRIC_ALGORITHMS]
    for i, name in bad:
        why = (
            "a shared-secret or unsigned algorithm cannot be checked against a JWKS"
            if name.upper().startswith("HS") or name.lower() == "none"
            else "unknown algorithm"
        )
        expected = ", ".join(ASYMMETRIC_ALGORITHMS)
        t.problem(f"algorithms[{i}]", f"{why}: {show(name)}; expected some of {expected}")
    return ASYMMETRIC_ALGORITHMS if bad else tuple(dict.fromkeys(names))


def _defaults(t: Table) -> tuple[tuple[str, object], ...]:
    """``[identity.jwt.defaults]``: principal fields (not ``name``) for what claims leave out."""
    found: list[tuple[str, object]] = []
    for key in t.keys():
        if key not in _DEFAULT_FIELDS:
            continue  # finish() names it, with a suggestion
        if key == "team":
            value: object = t.string("team", check=name_problem) or None
        elif key == "models":
            value = t.string_list("models", ()) or None
        elif key in LIMIT_FIELDS:
            value = t.optional_integer(key, minimum=0)
            if isinstance(value, int) and value > MAX_AMOUNT:
                t.problem(key, f"must be at most {MAX_AMOUNT}, got {value}")
                value = None
        else:
            value = _usd(t, key)
        if value is not None:
            found.append((key, value))
    t.finish()
    return tuple(found)


def _usd(t: Table, key: str) -> str | None:
    raw = t.take(key)
    try:
        parse_usd(raw)
    except ValueError as error:
        t.problem(key, str(error))
        return None
    return str(raw)
