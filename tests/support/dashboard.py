"""The Grafana dashboard in ``deploy/``, read the way Grafana would run it against Prometheus.

``queries()`` yields every PromQL expression with Grafana's variables replaced by what Grafana
would send for the dashboard's defaults: ``$__rate_interval`` by a fixed window, a
multi-value variable by its "All" value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "sentinel.json"

__all__ = ["DASHBOARD", "DEPLOY", "ROOT", "Query", "load", "metric_names", "panels", "queries"]

# Grafana's built-in interval variables, and what a query run stands in for them.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_METRIC = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")


@dataclass(frozen=True)
class Query:
    """One target of one panel, with its variables substituted."""

    panel: str
    ref_id: str
    expr: str


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    """The dashboard JSON as a dict."""
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that shows data (rows excluded, the panels of collapsed rows included)."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def variables(dashboard: dict[str, Any]) -> dict[str, str]:
    """Each template variable and what it stands for by default, built-ins included."""
    values = dict(BUILTINS)
    for variable in dashboard.get("templating", {}).get("list", []):
        if "allValue" in variable:
            values[variable["name"]] = variable["allValue"]
        else:
            current = variable.get("current", {}).get("value", "")
            values[variable["name"]] = current[0] if isinstance(current, list) else current
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    """``expr`` with every ``$name`` / ``${name}`` replaced; KeyError names an unknown one."""
    return _VARIABLE.sub(lambda m: values[m.group(1) or m.group(2)], expr)


def queries(dashboard: dict[str, Any]) -> list[Query]:
    """Every panel target's PromQL, ready for Prometheus' HTTP API."""
    values = variables(dashboard)
    return [
        Query(panel["title"], target["refId"], substitute(target["expr"], values))
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (every selector here has braces)."""
    return set(_METRIC.findall(expr))
