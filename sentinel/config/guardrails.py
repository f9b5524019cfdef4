"""Reading ``[[rules]]`` and ``[pii]``: what Sentinel blocks, redacts or flags in the texts of a
request (and of a reply), for whom.

Every pattern is RE2 syntax (checked here by compiling it), so matching is linear in the text
whatever the pattern; backreferences and lookaround, which RE2 cannot run in linear time, are
problems naming the rule. A rule must not match the empty string, and a response rule must have
a bounded match length (``sentinel.config.patterns``): streams are redacted with a hold-back of
that many characters.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Literal

from sentinel.config.patterns import UNBOUNDED, compile_problem, match_lengths
from sentinel.config.table import Table, name_problem

__all__ = [
    "PII_DETECTORS",
    "ROLES",
    "GuardrailsConfig",
    "PiiConfig",
    "RuleConfig",
    "read_guardrails",
]

Action = Literal["block", "redact", "flag"]
Direction = Literal["request", "response"]
ROLES = ("system", "developer", "user", "assistant", "tool")
PII_DETECTORS = ("email", "phone", "credit_card", "iban", "us_ssn", "ip_address", "api_key")
_ACTIONS: tuple[Action, ...] = ("block", "redact", "flag")
_DIRECTIONS: tuple[Direction, ...] = ("request", "response")


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """One ``[[rules]]`` entry; an empty scope tuple (or None for ``roles``) means any."""

    name: str
    pattern: str
    action: Action = "block"
    direction: Direction = "request"
    roles: tuple[str, ...] | None = None
    keys: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()
    models: tuple[str, ...] = ()  # globs
    max_length: int = UNBOUNDED  # characters a match can span (bounded for response rules)

    @property
    def is_scoped(self) -> bool:
        """Whether the rule applies only to some keys, teams or models."""
        return bool(self.keys or self.teams or self.models)


@dataclass(frozen=True, slots=True)
class PiiConfig:
    """``[pii]``: the built-in detectors whose matches are redacted, and where."""

    redact: tuple[str, ...] = ()
    responses: bool = False  # also redact the replies (requests always)


@dataclass(frozen=True, slots=True)
class GuardrailsConfig:
    """``[[rules]]`` and ``[pii]`` together."""

    rules: tuple[RuleConfig, ...] = ()
    pii: PiiConfig = field(default_factory=PiiConfig)

    @property
    def is_empty(self) -> bool:
        """Whether nothing is screened at all."""
        return not self.rules and not self.pii.redact


def read_guardrails(rules: list[Table], pii: Table) -> GuardrailsConfig:
    """Every ``[[rules]]`` entry (names unique) and ``[pii]``."""
    found = tuple(_rule(t) for t in rules)
    first: dict[str, Table] = {}
    for t, rule in zip(rules, found, strict=True):
        if rule.name in first:
            t.problem(
                "name", f"duplicate rule name {rule.name!r} (also {first[rule.name].where()})"
            )
        first.setdefault(rule.name, t)
    return GuardrailsConfig(rules=found, pii=_pii(pii))


def _rule(t: Table) -> RuleConfig:
    name = t.string("name", required=True, check=name_problem)
    pattern = t.string("pattern", required=True)
    direction = t.choice("direction", _DIRECTIONS, "request")
    max_length = _pattern_length(t, name, pattern, direction) if pattern else UNBOUNDED
    rule = RuleConfig(
        name=name,
        pattern=pattern,
        action=t.choice("action", _ACTIONS, "block"),
        direction=direction,
        roles=_roles(t),
        keys=_names(t, "keys"),
        teams=_names(t, "teams"),
        models=_names(t, "models"),
        max_length=max_length,
    )
    if not t.has("action"):
        t.problem("action", "is required (one of 'block', 'redact', 'flag')")
    if direction == "response" and rule.roles is not None:
        t.problem("roles", "a response rule reads the reply (role assistant): leave roles out")
    t.finish()
    return rule


def _pattern_length(t: Table, name: str, pattern: str, direction: Direction) -> int:
    """The pattern's longest match, after checking that RE2 takes it and that it is usable."""
    label = f"rule {name!r}" if name else "rule"
    problem = compile_problem(pattern)
    if problem is not None:
        t.problem("pattern", f"{label}: {problem}")
        return UNBOUNDED
    low, high = match_lengths(pattern)
    if high == 0 or low == 0:
        t.problem("pattern", f"{label}: the pattern can match the empty string")
    elif direction == "response" and high >= UNBOUNDED:
        t.problem(
            "pattern",
            f"{label}: a response rule needs a bounded match length (streams hold back that "
            "many characters); replace unbounded '*', '+' and '{n,}' with '{n,m}'",
        )
    return high


def _roles(t: Table) -> tuple[str, ...] | None:
    roles = t.string_list("roles", ())
    for i, role in enumerate(roles):
        if role not in ROLES:
            t.problem(f"roles[{i}]", f"expected one of {', '.join(ROLES)}, got {role!r}")
    return roles or None


def _names(t: Table, key: str) -> tuple[str, ...]:
    return t.string_list(key, ())


def _pii(t: Table) -> PiiConfig:
    redact = t.string_list("redact", ())
    for i, name in enumerate(redact):
        if name not in PII_DETECTORS:
            close = difflib.get_close_matches(name, PII_DETECTORS, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            t.problem(
                f"redact[{i}]",
                f"unknown detector {name!r}{hint}; expected one of " + ", ".join(PII_DETECTORS),
            )
    config = PiiConfig(redact=tuple(dict.fromkeys(redact)), responses=t.boolean("responses", False))
    t.finish()
    return config
