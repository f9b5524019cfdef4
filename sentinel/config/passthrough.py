"""``[passthrough.<family>]``: which pass-through families are forwarded, with which methods."""

from __future__ import annotations

from sentinel.config.families import FAMILIES
from sentinel.config.model import PassthroughConfig
from sentinel.config.table import Table, unknown_choice

__all__ = ["read_passthrough"]


def read_passthrough(t: Table) -> PassthroughConfig:
    """``[passthrough.<family>] methods = [...]``: families not named keep their defaults."""
    enabled = dict(PassthroughConfig().enabled)
    for name in t.keys():
        family = FAMILIES.get(name)
        table = t.table(name)
        if family is None:
            t.problem(name, unknown_choice(name, FAMILIES))
            continue
        methods = table.take("methods")
        if methods is None:
            enabled[name] = family.methods
        elif not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            table.problem("methods", "expected an array of HTTP methods (empty: not forwarded)")
        else:
            bad = [m for m in methods if m.upper() not in family.methods]
            for method in bad:
                table.problem("methods", unknown_choice(method, family.methods))
            if not bad:
                enabled[name] = frozenset(m.upper() for m in methods)
        table.finish()
    return PassthroughConfig(tuple((n, m) for n, m in enabled.items() if m))
