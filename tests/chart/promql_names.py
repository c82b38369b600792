"""The series a PromQL query names, and every query the docs and the chart hold.

Prometheus 2.42 (the harness's) has no parse API, so a small lexer does it:
string literals, label matchers, grouping lists, ranges, Grafana variables and
Go/Helm template actions are cut, and what is left that is an identifier not
called like a function and not a keyword is a series name (a ``__name__``
matcher names one too).  Shared by the unit check against the code's metric
definitions (``test_documented_queries.py``) and the e2e check against a real
scrape (``e2e/suites/test_documented_queries.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "logicbundle-operator"
DASHBOARD = CHART / "dashboards" / "logicbundle.json"
RULES = CHART / "templates" / "prometheusrule.yaml"

_TEMPLATE = re.compile(r"\{\{.*?\}\}")
_LABEL_VALUES = re.compile(r"\blabel_values\((.*),\s*\w+\s*\)")
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_NAME_MATCHER = re.compile(r"""__name__\s*=~?\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')""")
_STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`""")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "start", "end"}
)
_SPAN = re.compile(r"(?<!`)`(logicbundle_[a-z0-9_]*[a-z0-9])(?:\{[^`]*\})?`(?!`)")
_FENCE = re.compile(r"^```promql\n(.*?)^```", re.MULTILINE | re.DOTALL)


def series_names(query: str) -> set[str]:
    """The series (metric names) ``query`` selects; templating placeholders are ignored.

    Grafana's ``label_values(series, label)`` counts as ``series``.
    """
    text = _TEMPLATE.sub('""', query)
    text = _LABEL_VALUES.sub(r"\1", text)  # Grafana's label_values(series, label)
    names = {a or b for a, b in _NAME_MATCHER.findall(text)}
    text = _VARIABLE.sub("1", text)
    text = _STRING.sub('""', text)
    text = _MATCHERS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _RANGE.sub(" ", text)
    for name, call in _IDENT.findall(text):
        if not call and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


@dataclass(frozen=True)
class Query:
    """One query and where it is written (``file: place``)."""

    where: str
    text: str


def _walk(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("query", "expr") and isinstance(value, str):
                yield f"{path}.{key}", value
            else:
                yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def doc_yaml_files() -> list[Path]:
    """Every YAML file under docs/ and examples/."""
    found = [*(REPO / "docs").rglob("*.y*ml"), *(REPO / "examples").rglob("*.y*ml")]
    return sorted(p for p in found if p.suffix in (".yaml", ".yml"))


def documented_queries() -> list[Query]:
    """The queries in docs/ and examples/: YAML ``query``/``expr`` fields, ``promql`` blocks,
    and the series named in inline code of the Markdown pages."""
    out = []
    for path in doc_yaml_files():
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            for where, text in _walk(doc, f"[{i}]"):
                out.append(Query(f"{path.relative_to(REPO)}: {where}", text))
    pages = [REPO / "README.md", *(REPO / "docs").rglob("*.md"), *(REPO / "examples").rglob("*.md")]
    for page in sorted(pages):
        text = page.read_text()
        for block in _FENCE.findall(text):
            out.append(Query(f"{page.relative_to(REPO)}: promql block", block))
        for name in _SPAN.findall(text):
            out.append(Query(f"{page.relative_to(REPO)}: `{name}`", name))
    return out


def dashboard_queries() -> list[Query]:
    """Every query of the Grafana dashboard: panels, variables and annotations."""
    board = json.loads(DASHBOARD.read_text())
    out = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            out.append(Query(f"dashboard: panel {panel.get('title')!r}", target["expr"]))
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            out.append(Query(f"dashboard: variable {variable['name']}", text))
    for note in board["annotations"]["list"]:
        if "expr" in note:
            out.append(Query(f"dashboard: annotation {note['name']!r}", note["expr"]))
    return out


def rule_queries(rendered: str | None = None) -> list[Query]:
    """The PrometheusRule's expressions: from ``rendered`` (``helm template``) when given,
    else from the template's plain ``expr:`` lines."""
    if rendered is None:
        found = re.findall(r"^\s*expr: (.+)$", RULES.read_text(), re.MULTILINE)
        return [Query("PrometheusRule (template)", text) for text in found]
    out = []
    for doc in yaml.safe_load_all(rendered):
        if doc and doc.get("kind") == "PrometheusRule":
            for group in doc["spec"]["groups"]:
                for rule in group["rules"]:
                    name = rule.get("alert") or rule.get("record")
                    out.append(Query(f"PrometheusRule: {name}", str(rule["expr"])))
    return out


HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def missing(names: set[str], exported: set[str]) -> list[str]:
    """``names`` that are not ``exported``; a histogram's own name counts when its series are."""
    return sorted(
        n
        for n in names
        if n not in exported and not any(n + s in exported for s in HISTOGRAM_SUFFIXES)
    )
