"""Every PromQL query in the docs, the examples and the chart names a series the code defines.

The names come from the code's own metric definitions (the same collection
as ``test_metric_names.py``); ``e2e/suites/test_documented_queries.py``
checks the same queries against what a real Prometheus scraped from a
running operator, agents and applications.
"""

from __future__ import annotations

import pytest

from tests.chart.promql_names import (
    Query,
    dashboard_queries,
    documented_queries,
    missing,
    rule_queries,
    series_names,
)
from tests.chart.test_metric_names import defined_metrics

LEXED = {
    "a selector with a templated matcher": (
        'logicbundle_sdk_calls_total{bundle="{{bundle}}",digest=~"a|b"}',
        {"logicbundle_sdk_calls_total"},
    ),
    "aggregations, grouping, ranges and a histogram": (
        "histogram_quantile(0.99, sum by (le, bundle) "
        "(rate(logicbundle_sdk_call_duration_seconds_bucket{x='y'}[5m] offset 1h)))",
        {"logicbundle_sdk_call_duration_seconds_bucket"},
    ),
    "binary operators with vector matching": (
        "a_total / on (pod) group_left (digest) b_info > bool 0.5 unless c",
        {"a_total", "b_info", "c"},
    ),
    "a __name__ matcher and Grafana variables": (
        '{__name__="logicbundle_pods", namespace=~"$namespace"} * 1e3'
        " + rate(x_total[$__rate_interval])",
        {"logicbundle_pods", "x_total"},
    ),
    "Grafana's label_values": (
        'label_values(logicbundle_rollout_phase{namespace=~"$ns"}, bundle)',
        {"logicbundle_rollout_phase"},
    ),
}


@pytest.mark.parametrize(("query", "names"), LEXED.values(), ids=LEXED.keys())
def test_the_lexer_finds_the_series_a_query_names(query: str, names: set[str]) -> None:
    assert series_names(query) == names


def test_a_histogram_named_by_itself_counts_when_its_buckets_are_defined() -> None:
    exported = {"h_bucket", "h_count", "h_sum", "c_total"}
    assert missing({"h", "h_bucket", "c_total"}, exported) == []
    assert missing({"c", "d_bucket"}, exported) == ["c", "d_bucket"]


def test_the_docs_hold_queries_and_the_analysis_example_is_among_them() -> None:
    where = " ".join(q.where for q in documented_queries())
    assert "docs/examples/prometheus-analysis.yaml" in where
    assert "docs/operations.md" in where


@pytest.mark.parametrize(
    ("source", "queries"),
    [
        ("docs and examples", documented_queries()),
        ("dashboard", dashboard_queries()),
        ("PrometheusRule", rule_queries()),
    ],
)
def test_every_query_names_only_series_the_code_defines(source: str, queries: list[Query]) -> None:
    assert queries, f"no queries found in the {source}"
    defined = defined_metrics()
    wrong = {q.where: missing(series_names(q.text), defined) for q in queries}
    assert {k: v for k, v in wrong.items() if v} == {}
