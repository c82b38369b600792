"""Every metric the Grafana dashboard and the PrometheusRule query exists in the code.

The names are collected from the code's own metric definitions (the
operator's and distributor's prometheus-client registries, the agent's and
the SDK's hand-written exposition), never from a list kept by hand, so a
renamed metric fails here instead of leaving an empty panel or an alert that
can never fire.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from logicbundle.agent._metrics import AgentMetrics
from logicbundle.controller._metrics import OperatorMetrics
from logicbundle.distributor._metrics import DistributorMetrics
from logicbundle.sdk._metrics import prometheus_text

CHART = Path(__file__).resolve().parents[2] / "charts" / "logicbundle-operator"
DASHBOARD = CHART / "dashboards" / "logicbundle.json"
RULES = CHART / "templates" / "prometheusrule.yaml"

_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}
_METRIC = re.compile(r"\blogicbundle_[a-z0-9_]+\b")
_TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)


def _from_registry(registry: Any) -> Iterator[str]:
    for family in registry.collect():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            yield family.name + suffix


def _from_text(text: str) -> Iterator[str]:
    for name, kind in _TYPE_LINE.findall(text):
        for suffix in _SUFFIXES.get(kind, ("",)):
            yield name if name.endswith(suffix) else name + suffix


def defined_metrics() -> set[str]:
    agent = AgentMetrics()
    agent.swap("pricing", "activated", 0.01)
    agent.swap("pricing", "rolledBack", None)
    return {
        *_from_registry(OperatorMetrics().registry),
        *_from_registry(DistributorMetrics().registry),
        *_from_text(agent.text()),
        *_from_text(prometheus_text()),
    }


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    return exprs


def _rule_exprs() -> list[str]:
    # The expressions are plain YAML scalars; Helm actions only appear in other fields
    # or as whole-number thresholds, which the metric regex ignores.
    return re.findall(r"^\s*expr: (.+)$", RULES.read_text(), re.MULTILINE)


def test_the_code_defines_the_metrics_this_test_relies_on() -> None:
    names = defined_metrics()
    for expected in (
        "logicbundle_rollout_phase",
        "logicbundle_verification_failures_total",
        "logicbundle_agent_swap_duration_seconds_bucket",
        "logicbundle_sdk_call_errors_total",
        "logicbundle_sdk_retired_versions_alive",
        "logicbundle_version_resident_memory_bytes",
        "logicbundle_version_threads",
        "logicbundle_version_gc_pause_ratio",
        "logicbundle_version_process_pods",
    ):
        assert expected in names


@pytest.mark.parametrize(
    ("source", "exprs"),
    [("dashboard", _dashboard_exprs()), ("PrometheusRule", _rule_exprs())],
)
def test_every_metric_queried_exists_in_the_code(source: str, exprs: list[str]) -> None:
    assert exprs, f"no expressions found in the {source}"
    names = defined_metrics()
    used = {name for expr in exprs for name in _METRIC.findall(expr)}
    assert used, f"the {source} queries no logicbundle metric"
    assert sorted(used - names) == [], f"the {source} queries metrics the code never exposes"


def test_the_health_panels_plot_each_version_health_series_per_cohort_and_digest() -> None:
    exprs = _dashboard_exprs()
    for series in (
        "logicbundle_version_resident_memory_bytes",
        "logicbundle_version_threads",
        "logicbundle_version_gc_pause_ratio",
        "logicbundle_version_process_pods",
    ):
        plotted = [e for e in exprs if series in _METRIC.findall(e)]
        assert plotted, f"no panel plots {series}"
        assert all("cohort, digest" in e for e in plotted), plotted


def test_the_alerts_cover_rollbacks_leaks_stalls_lagging_agents_and_failing_verification() -> None:
    text = RULES.read_text()
    alerts = set(re.findall(r"alert: (\w+)", text))
    assert {
        "LogicBundleRolloutStalled",
        "LogicBundleStalled",
        "LogicBundleVerificationFailing",
        "LogicBundlePodsWithoutAgent",
        "LogicBundleRolledBack",
        "LogicBundleVersionLeak",
        "LogicBundleAgentBehind",
    } <= alerts


def test_every_duration_the_alerts_use_is_a_documented_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["metrics"]["prometheusRule"]
    used = set(re.findall(r"\$r\.(\w+)", RULES.read_text()))
    assert used <= set(values), sorted(used - set(values))
    schema = json.loads((CHART / "values.schema.json").read_text())
    rule_schema = schema["properties"]["metrics"]["properties"]["prometheusRule"]["properties"]
    assert set(values) <= set(rule_schema), sorted(set(values) - set(rule_schema))


def test_the_dashboard_is_valid_grafana_json_with_unique_panel_ids() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] == "logicbundle-overview"
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in (
        "stage",
        "pods per digest",
        "swap",
        "rollback",
        "error",
        "latency",
        "timeline",
        "leak",
        "verdict",
        "health",
        "resident memory per version",
        "threads per version",
        "gc pause per version",
    ):
        assert topic in titles
    rollbacks = [a for a in dashboard["annotations"]["list"] if a["name"] == "Rollbacks"]
    assert rollbacks, "the rollout timeline marks rollbacks on every panel"


def test_the_chart_copies_of_generated_files_are_current() -> None:
    from logicbundle.api import crd

    root = CHART.parents[1]
    chart_files = [p for p in crd.outputs() if crd.CHART_PATH in p.parents]
    assert len(chart_files) == 5  # three CRDs, the Argo CD health check and actions
    assert [d for d in crd.drift(root) if str(crd.CHART_PATH) in d] == []
    assert yaml.safe_load((root / crd.CHART_CRD_PATH).read_text())["kind"] == (
        "CustomResourceDefinition"
    )
