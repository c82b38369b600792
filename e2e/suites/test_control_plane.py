"""The local control plane is a real Kubernetes: kubectl, /version, workloads on kwok, CRDs."""

from __future__ import annotations

import json

import pytest

from e2e import versions
from e2e.harness.cluster import Cluster
from e2e.harness.proc import HarnessError, wait_for


def test_kubectl_works_with_the_generated_kubeconfig(cluster: Cluster) -> None:
    names = cluster.kubectl("get", "nodes", "-o", "name").split()
    assert sorted(names) == sorted(f"node/{n}" for n in cluster.node_names)


def test_the_api_server_reports_the_configured_version(cluster: Cluster) -> None:
    major, minor, _ = versions.KUBERNETES.lstrip("v").split(".")
    served = cluster.request("GET", "/version")
    assert (served["gitVersion"], served["major"], served["minor"]) == (
        versions.KUBERNETES,
        major,
        minor,
    )
    both = json.loads(cluster.kubectl("version", "-o", "json"))
    assert both["clientVersion"]["gitVersion"] == versions.KUBERNETES
    assert both["serverVersion"]["gitVersion"] == versions.KUBERNETES


def test_every_node_is_a_ready_kwok_node(cluster: Cluster) -> None:
    nodes = cluster.request("GET", "/api/v1/nodes")["items"]
    assert {n["metadata"]["name"] for n in nodes} == set(cluster.node_names)
    for node in nodes:
        assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.invalid/web:1
"""


def test_a_deployment_of_three_replicas_reaches_three_running_pods_on_kwok_nodes(
    cluster: Cluster, namespace: str
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT)

    def running_pods() -> list[dict[str, object]] | None:
        pods = cluster.request(
            "GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=app%3Dweb"
        )
        running = [p for p in pods["items"] if p["status"].get("phase") == "Running"]
        return running if len(running) == 3 else None

    pods = wait_for(running_pods, what="3 running pods", timeout=60)
    assert {p["spec"]["nodeName"] for p in pods} <= set(cluster.node_names)  # type: ignore[index]
    available = wait_for(
        lambda: (
            cluster.request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/web")[
                "status"
            ].get("availableReplicas")
            == 3
        ),
        what="deployment available",
        timeout=60,
    )
    assert available


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.e2e.logicbundle.io"},
    "spec": {
        "group": "e2e.logicbundle.io",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {"size": {"type": "integer", "minimum": 1}},
                            },
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
            }
        ],
    },
}


def test_a_custom_resource_definition_can_be_created_and_its_resources_served(
    cluster: Cluster, namespace: str
) -> None:
    cluster.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
    try:

        def established() -> bool:
            crd = cluster.request(
                "GET",
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.e2e.logicbundle.io",
            )
            return any(
                c["type"] == "Established" and c["status"] == "True"
                for c in crd.get("status", {}).get("conditions", [])
            )

        wait_for(established, what="CRD established", timeout=30)
        path = f"/apis/e2e.logicbundle.io/v1/namespaces/{namespace}/widgets"
        widget = {
            "apiVersion": "e2e.logicbundle.io/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
        }
        cluster.request("POST", path, {**widget, "spec": {"size": 3}})
        assert cluster.request("GET", f"{path}/w")["spec"] == {"size": 3}
        # The schema is enforced by the server, not by us.
        with pytest.raises(HarnessError, match=r"spec\.size"):
            cluster.kubectl(
                "apply",
                "-n",
                namespace,
                "-f",
                "-",
                input=json.dumps({**widget, "metadata": {"name": "bad"}, "spec": {"size": 0}}),
            )
        assert "w" in cluster.kubectl("get", "widgets", "-n", namespace, "-o", "name")
    finally:
        cluster.request(
            "DELETE",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.e2e.logicbundle.io",
        )
