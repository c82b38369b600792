"""The CRD's schema defaults, applied by the real API server (issue 13 part 6).

A LogicBundle created without its defaulted fields comes back with them: the
scalar defaults of ``spec`` are written by the server (a create, a server-side
apply), published in its OpenAPI document (what ``kubectl explain`` reads),
and set inside an optional object only when that object is given.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from e2e.harness.cluster import Cluster
from e2e.suites.test_crd import VALID
from tests.api.test_api_reference_values import SERVER_DEFAULTS


def _get(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "logicbundle", name, "-n", namespace, "-o", "json")
    doc: dict[str, Any] = json.loads(out)
    return doc


def test_the_api_server_writes_the_scalar_defaults_into_a_created_object(
    cluster: Cluster, logicbundle_crd: str, namespace: str
) -> None:
    doc = copy.deepcopy(VALID)
    doc["metadata"] = {"name": "defaults", "namespace": namespace}
    doc["spec"]["rollout"] = {"stages": [{"name": "everyone", "all": True}], "analysis": {}}
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(doc))
    spec = _get(cluster, namespace, "defaults")["spec"]
    assert spec["suspend"] is False
    assert spec["source"]["interval"] == "5m"
    assert spec["source"]["insecure"] is False
    assert spec["verify"]["audit"] == "warn"
    assert spec["rollout"]["onFailure"] == "rollback"
    assert spec["rollout"]["skipAnalysis"] is False
    assert spec["rollout"]["stages"][0]["manualGate"] is False
    analysis = spec["rollout"]["analysis"]
    assert (analysis["provider"], analysis["interval"], analysis["minSamples"]) == (
        "builtin",
        "30s",
        20,
    )
    assert analysis["stableNoData"] == "skip"
    assert "noData" not in analysis  # deprecated: never written by the server
    # Inside an optional object only when the object is there.
    assert "notify" not in spec["target"]
    assert "healthCheck" not in spec["target"]
    assert "prometheus" not in analysis


def test_a_server_side_apply_without_the_fields_shows_the_defaults_and_keeps_an_explicit_value(
    cluster: Cluster, logicbundle_crd: str, namespace: str
) -> None:
    doc = copy.deepcopy(VALID)
    doc["metadata"] = {"name": "applied", "namespace": namespace}
    doc["spec"]["source"]["interval"] = "1m"
    doc["spec"]["target"]["notify"] = {"mode": "signal", "signal": {"processName": "app"}}
    apply = ["apply", "--server-side", "--field-manager=gitops", "-n", namespace, "-f", "-"]
    cluster.kubectl(*apply, input=json.dumps(doc))
    spec = _get(cluster, namespace, "applied")["spec"]
    assert spec["source"]["interval"] == "1m"
    assert spec["target"]["notify"]["signal"]["name"] == "SIGHUP"
    # The applier drops its explicit value: the default comes back, not a stale one.
    del doc["spec"]["source"]["interval"]
    cluster.kubectl(*apply, input=json.dumps(doc))
    spec = _get(cluster, namespace, "applied")["spec"]
    assert spec["source"]["interval"] == "5m"


def test_the_published_openapi_carries_every_default(
    cluster: Cluster, logicbundle_crd: str
) -> None:
    """``kubectl explain`` reads the server's OpenAPI v3 document."""
    path = "/openapi/v3/apis/logicbundle.io/v1alpha1"
    document = cluster.request("GET", path)
    (schema,) = [
        s
        for name, s in document["components"]["schemas"].items()
        if name.endswith("v1alpha1.LogicBundle")
    ]
    for dotted, value in SERVER_DEFAULTS.items():
        node = schema
        for part in dotted.split("."):
            if part.endswith("[]"):
                node = node["properties"][part[:-2]]["items"]
            else:
                node = node["properties"][part]
        assert node.get("default") == value, dotted
