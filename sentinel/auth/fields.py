"""The fields every non-config principal carries, read from JSON, and the ``Principal`` they make.

Runtime keys (the keys API), identity-service principals and JWT ``sentinel`` claims share one
shape (DESIGN.md, "Runtime keys" and "External identity"): ``name``, ``team``, the limit fields,
``models`` and the dollar budgets. ``read_fields`` checks a JSON object of them and reports each
problem by field name; ``principal_of`` turns checked fields into a ``Principal``, taking
``[limits]`` defaults for every limit left out. Nothing here decides *who* may set which field
(``admin`` never comes from outside the TOML file).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sentinel.auth.keys import Principal
from sentinel.config.budgets import BUDGET_FIELDS, Budgets, parse_usd
from sentinel.config.limits import LIMIT_FIELDS, MAX_AMOUNT, LimitDefaults
from sentinel.config.table import NAME
from sentinel.limits.settings import key_spec

__all__ = ["FIELD_NAMES", "FieldProblem", "PrincipalFields", "principal_of", "read_fields"]

_MAX_MODELS = 256
_MAX_GLOB = 256
FIELD_NAMES = frozenset(("name", "team", "models", *LIMIT_FIELDS, *BUDGET_FIELDS))


class FieldProblem(ValueError):
    """One invalid field: ``field`` names it (``param`` of a 400), the message says why."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True, slots=True)
class PrincipalFields:
    """Checked fields of one principal; a limit or budget of None is left to the defaults."""

    name: str
    team: str | None = None
    models: tuple[str, ...] | None = None  # globs; None allows every model
    limits: Mapping[str, int | None] = field(default_factory=dict)
    budgets: Budgets = field(default_factory=Budgets)


def read_fields(
    data: Mapping[str, object], *, known: frozenset[str] = FIELD_NAMES, need_name: bool = True
) -> PrincipalFields:
    """Check ``data``'s principal fields; ``FieldProblem`` names the first bad one.

    Keys outside ``known`` are problems (a typo must not silently drop a limit); a caller that
    carries more fields (``expires_at``, ``metadata``) passes them in ``known`` and reads them
    itself.
    """
    for field_name in data:
        if field_name not in known:
            raise FieldProblem(str(field_name)[:64], "unknown field")
    name = data.get("name")
    if name is None and not need_name:
        name = ""
    elif not isinstance(name, str) or not NAME.fullmatch(name):
        raise FieldProblem("name", "expected 1 to 64 of A-Z a-z 0-9 _ . -")
    team = data.get("team")
    if team is not None and (not isinstance(team, str) or not NAME.fullmatch(team)):
        raise FieldProblem("team", "expected null or 1 to 64 of A-Z a-z 0-9 _ . -")
    return PrincipalFields(
        name=name,
        team=team,
        models=_models(data.get("models")),
        limits={n: _limit(n, data.get(n)) for n in LIMIT_FIELDS},
        budgets=Budgets(**{n: _budget(n, data.get(n)) for n in BUDGET_FIELDS}),
    )


def principal_of(fields: PrincipalFields, principal_id: str, defaults: LimitDefaults) -> Principal:
    """The ``Principal`` of checked ``fields`` under a stable, source-namespaced id."""
    return Principal(
        fields.name,
        key_spec(defaults, **fields.limits),
        fields.models,
        id=principal_id,
        team=fields.team,
        budgets=fields.budgets,
    )


def _models(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > _MAX_MODELS:
        raise FieldProblem("models", f"expected null or a list of at most {_MAX_MODELS} globs")
    for glob in value:
        if not isinstance(glob, str) or not 0 < len(glob) <= _MAX_GLOB:
            raise FieldProblem("models", f"expected model globs of 1 to {_MAX_GLOB} characters")
    return tuple(value)


def _limit(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_AMOUNT:
        raise FieldProblem(name, f"expected null or a whole number from 0 to {MAX_AMOUNT}")
    return value


def _budget(name: str, value: object) -> int | None:
    if value is None:
        return None
    try:
        return parse_usd(value)
    except ValueError as error:
        raise FieldProblem(name, str(error)) from None
