"""The metric template API: templates, references from metrics, Prometheus authentication."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from logicbundle.api import (
    Analysis,
    LogicBundleMetricTemplate,
    Metric,
    MetricTemplateSpec,
    Prometheus,
    names,
)
from logicbundle.api.crd import template_crd_document
from tests.api.documented_yaml import _FENCE, REPO


def template(spec: dict[str, Any], kind: str = names.TEMPLATE_KIND) -> LogicBundleMetricTemplate:
    return LogicBundleMetricTemplate.model_validate(
        {"apiVersion": names.API_VERSION, "kind": kind, "metadata": {"name": "t"}, "spec": spec}
    )


def test_a_template_declares_every_argument_its_query_uses() -> None:
    spec = {"query": 'up{job="{{args.job}}",ns="{{namespace}}"}', "args": [{"name": "job"}]}
    assert template(spec).spec.args is not None
    with pytest.raises(ValidationError, match=r"unknown placeholder\(s\) \{\{args.jb\}\}"):
        template({**spec, "query": 'up{job="{{args.jb}}"}'})
    with pytest.raises(ValidationError, match=r"\{\{nope\}\}"):
        template({**spec, "query": "up{{nope}}"})
    with pytest.raises(ValidationError, match="argument names must be unique"):
        template({**spec, "args": [{"name": "job"}, {"name": "job"}]})
    with pytest.raises(ValidationError):
        template({**spec, "args": [{"name": "1job"}]})


def test_both_kinds_share_one_spec_and_the_api_server_fields_are_ignored() -> None:
    parsed = template({"query": "vector(1)"}, names.CLUSTER_TEMPLATE_KIND)
    assert parsed.kind == names.CLUSTER_TEMPLATE_KIND
    body = {
        "apiVersion": names.API_VERSION,
        "kind": names.TEMPLATE_KIND,
        "metadata": {"name": "t", "namespace": "n", "uid": "u", "managedFields": []},
        "spec": {"query": "vector(1)"},
    }
    assert LogicBundleMetricTemplate.model_validate(body).metadata.namespace == "n"
    with pytest.raises(ValidationError):
        MetricTemplateSpec.model_validate({"query": "vector(1)", "qurey": "typo"})


def test_a_metric_sets_exactly_one_of_builtin_query_and_template_ref() -> None:
    ref = {"name": "m", "templateRef": {"name": "error-rate"}, "max": 1}
    assert Metric.model_validate(ref).template_ref is not None
    assert Metric.model_validate(ref).template_ref.kind == names.TEMPLATE_KIND  # type: ignore[union-attr]
    with pytest.raises(ValidationError, match="exactly one of builtin, query and templateRef"):
        Metric.model_validate({**ref, "query": "up"})
    with pytest.raises(ValidationError, match="exactly one of builtin, query and templateRef"):
        Metric.model_validate({"name": "m", "max": 1})
    with pytest.raises(ValidationError, match="templateArgs are the arguments of a templateRef"):
        Metric.model_validate({"name": "m", "query": "up", "templateArgs": {"a": "b"}, "max": 1})
    with pytest.raises(ValidationError):
        Metric.model_validate({**ref, "templateArgs": {"a": "x" * 257}})
    with pytest.raises(ValidationError):
        Metric.model_validate({**ref, "templateRef": {"name": "m", "kind": "MetricTemplate"}})


def test_prometheus_takes_one_kind_of_credentials_and_one_ca() -> None:
    address = "https://prometheus.monitoring:9090"
    basic = {"address": address, "basicAuthSecretRef": {"name": "a"}}
    assert Prometheus.model_validate(basic).basic_auth_secret_ref is not None
    with pytest.raises(ValidationError, match="at most one of bearerTokenSecretRef"):
        Prometheus.model_validate({**basic, "bearerTokenSecretRef": {"name": "b"}})
    with pytest.raises(ValidationError, match="at most one of caSecretRef and caConfigMapRef"):
        Prometheus.model_validate(
            {"address": address, "caSecretRef": {"name": "c"}, "caConfigMapRef": {"name": "c"}}
        )


def test_the_crds_are_namespaced_and_cluster_scoped_with_the_rules_in_the_schema() -> None:
    namespaced = template_crd_document(cluster=False)
    cluster = template_crd_document(cluster=True)
    assert namespaced["spec"]["scope"] == "Namespaced"
    assert cluster["spec"]["scope"] == "Cluster"
    assert namespaced["metadata"]["name"] == names.TEMPLATE_CRD_NAME
    assert cluster["spec"]["names"]["kind"] == names.CLUSTER_TEMPLATE_KIND
    spec = namespaced["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = [r["message"] for r in spec["properties"]["prometheus"]["x-kubernetes-validations"]]
    assert "set at most one of bearerTokenSecretRef and basicAuthSecretRef" in rules


def test_the_analysis_shown_in_the_docs_is_valid() -> None:
    page = (REPO / "docs" / "analysis.md").read_text()
    blocks = [yaml.safe_load(b) for b in _FENCE.findall(page)]
    shown = [b["analysis"] for b in blocks if isinstance(b, dict) and "analysis" in b]
    assert shown, "docs/analysis.md shows no analysis"
    for analysis in shown:
        parsed = Analysis.model_validate(analysis)
        assert all(m.template_ref is not None for m in parsed.effective_metrics())
