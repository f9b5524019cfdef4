"""Which rules apply to a request, decided once per request from its scopes.

``Guardrails.policy(key, team, model)`` answers None when no rule (and no PII detector) applies
to that key, team and model, and the request then pays nothing more. Otherwise the ``Policy``
holds one ``Screen`` per role for the request's texts and one for the reply's. Policies are
cached per scope combination (at most ``_MAX_POLICIES``), screens per set of rules, and each is
compiled on first use.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from sentinel.config.guardrails import ROLES, GuardrailsConfig, RuleConfig
from sentinel.config.patterns import match_lengths
from sentinel.guardrails.pii import DETECTORS
from sentinel.guardrails.screen import Entry, Screen

__all__ = ["ANY_ROLE", "Guardrails", "Policy"]

_MAX_POLICIES = 4096
ANY_ROLE = "*"  # a message whose role is none of ROLES: every request rule applies to it


class Policy:
    """The screens of the rules that apply to one scope combination."""

    def __init__(self, owner: Guardrails, mask: int) -> None:
        self._owner = owner
        self._mask = mask
        self.reads_requests = owner.has_direction(mask, "request")
        """Whether any rule reads the request's texts (else they are not walked at all)."""
        self._request: dict[str, Screen | None] = {}
        self._response: list[Screen | None] = []

    def request(self, role: str) -> Screen | None:
        """The screen of request texts with ``role`` (None: no rule reads them)."""
        found = self._request.get(role, self)
        if found is self:
            found = self._request[role] = self._owner.screen(self._mask, "request", role)
        return found if isinstance(found, Screen) else None

    @property
    def response(self) -> Screen | None:
        """The screen of reply texts (None: no response rule applies)."""
        if not self._response:
            self._response.append(self._owner.screen(self._mask, "response", "assistant"))
        return self._response[0]


class Guardrails:
    """``[[rules]]`` and ``[pii]`` compiled for the request path."""

    def __init__(self, config: GuardrailsConfig) -> None:
        pairs = _entries(config)
        self._entries = [entry for entry, _ in pairs]
        self._rules = [rule for _, rule in pairs]
        self._always = 0  # entries with no key, team or model scope
        self._scoped: list[tuple[int, RuleConfig]] = []
        for index, rule in enumerate(self._rules):
            if rule is not None and rule.is_scoped:
                self._scoped.append((index, rule))
            else:
                self._always |= 1 << index
        self._policies: dict[tuple[str | None, str | None, str | None], Policy | None] = {}
        self._screens: dict[tuple[int, ...], Screen] = {}

    @property
    def is_empty(self) -> bool:
        """Whether no rule exists at all."""
        return not self._entries

    def policy(self, key: str | None, team: str | None, model: str | None) -> Policy | None:
        """The rules for a request by ``key`` (its name) of ``team`` for ``model``."""
        if not self._entries:
            return None
        scope = (key, team, model)
        try:
            return self._policies[scope]
        except KeyError:
            pass
        mask = self._always
        for index, rule in self._scoped:
            if _applies(rule, key, team, model):
                mask |= 1 << index
        policy = Policy(self, mask) if mask else None
        if len(self._policies) >= _MAX_POLICIES:
            self._policies.clear()
        self._policies[scope] = policy
        return policy

    def reads_requests(self, key: str | None, team: str | None) -> bool:
        """Whether any request rule may apply to this key's requests, whatever their model."""
        for index, entry in enumerate(self._entries):
            if entry.direction != "request":
                continue
            rule = self._rules[index]
            if rule is None or _applies(rule, key, team, None, any_model=True):
                return True
        return False

    def has_direction(self, mask: int, direction: str) -> bool:
        """Whether an entry in ``mask`` screens ``direction``."""
        return any(
            mask >> index & 1 and entry.direction == direction
            for index, entry in enumerate(self._entries)
        )

    def screen(self, mask: int, direction: str, role: str) -> Screen | None:
        """The compiled screen of the entries in ``mask`` for ``direction`` and ``role``."""
        chosen = tuple(
            index
            for index, entry in enumerate(self._entries)
            if mask >> index & 1
            and entry.direction == direction
            and _reads_role(self._rules[index], role)
        )
        if not chosen:
            return None
        found = self._screens.get(chosen)
        if found is None:
            found = self._screens[chosen] = Screen([self._entries[i] for i in chosen])
        return found

    def screens(self) -> list[Screen]:
        """The screens of unscoped rules and of all rules, compiled now (at startup)."""
        found: list[Screen | None] = []
        for mask in {self._always, (1 << len(self._entries)) - 1}:  # unscoped, and all
            found.extend(self.screen(mask, "request", role) for role in (*ROLES, ANY_ROLE))
            found.append(self.screen(mask, "response", "assistant"))
        return list({id(s): s for s in found if s is not None}.values())


def _entries(config: GuardrailsConfig) -> list[tuple[Entry, RuleConfig | None]]:
    """Every rule, then every PII detector (one entry per direction it screens)."""
    entries: list[tuple[Entry, RuleConfig | None]] = [
        (Entry(rule.name, rule.pattern, rule.action, rule.direction, rule.max_length), rule)
        for rule in config.rules
    ]
    directions = ("request", "response") if config.pii.responses else ("request",)
    for direction in directions:
        for name in config.pii.redact:
            detector = DETECTORS[name]
            length = match_lengths(detector.pattern)[1]
            entry = Entry(name, detector.pattern, "redact", direction, length, detector.validator)
            entries.append((entry, None))
    return entries


def _reads_role(rule: RuleConfig | None, role: str) -> bool:
    if rule is None or rule.roles is None or role == ANY_ROLE:
        return True
    return role in rule.roles


def _applies(
    rule: RuleConfig,
    key: str | None,
    team: str | None,
    model: str | None,
    *,
    any_model: bool = False,
) -> bool:
    if rule.keys and key not in rule.keys:
        return False
    if rule.teams and team not in rule.teams:
        return False
    if rule.models and not any_model:
        return model is not None and any(fnmatchcase(model, glob) for glob in rule.models)
    return True
