"""Two operator replicas peer through kopf: one acts, its pod alone is labelled the leader.

When the acting replica dies the other takes over, leader label included.

The ClusterKopfPeering CRD and object are the chart's.  Two kwok Pods, made from
the chart's own pod template, stand for the two replicas' pods; each replica runs
here as a process told which Pod it is (``--pod-name``/``--pod-namespace``, what
the Deployment passes as ``POD_NAME``/``POD_NAMESPACE``).  The test checks from
their logs which one handled the LogicBundle, that exactly that replica's pod is
labelled ``logicbundle.io/leader=true``, and that the chart's upstream
Service (the one the distributor replicas get the verified bytes through;
created from the rendered chart, selector and named port as shipped)
gets an EndpointSlice holding that pod's IP alone, kwok pods having IPs and
the harness running kube-controller-manager.  It kills the leader, sees the
label and the endpoint move to the other replica, restarts the killed one in
its pod (what the kubelet would do) and sees it clear its stale label, and
finally stops the new leader cleanly and sees the label handed back at once.
"""

from __future__ import annotations

import re
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from e2e import versions
from e2e.harness import services
from e2e.harness.cluster import Cluster
from e2e.harness.operator import (
    EXAMPLES,
    KeyPair,
    Operator,
    apply,
    logicbundle,
    push_bundle,
    wait_condition,
)
from e2e.harness.proc import HarnessError, wait_for
from e2e.harness.services import Registry
from logicbundle.api import names

CHART = Path(__file__).resolve().parents[2] / "charts" / "logicbundle-operator"
PEERING_CRD = CHART / "crds" / "kopf.dev_clusterkopfpeerings.yaml"
RESUMED = "Resuming operations after the pause"
STANDING_BY = re.compile(r"not the leader \(.*higher priority")


def _chart(namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The chart's upstream Service (to the leader) and its operator pod template."""
    proc = subprocess.run(
        [
            str(services.helm()),
            "template",
            "lb",
            str(CHART),
            "--namespace",
            namespace,
            "--kube-version",
            versions.KUBERNETES.lstrip("v"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if proc.returncode != 0:
        raise HarnessError(f"helm template failed: {proc.stderr.strip()}")
    objects = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    (service,) = [
        o for o in objects if o["kind"] == "Service" and o["metadata"]["name"].endswith("-upstream")
    ]
    (deployment,) = [
        o
        for o in objects
        if o["kind"] == "Deployment" and not o["metadata"]["name"].endswith("-distributor")
    ]
    template: dict[str, Any] = deployment["spec"]["template"]
    return service, template


def _replica_pod(name: str, template: dict[str, Any]) -> dict[str, Any]:
    """A kwok Pod with the chart's pod labels and container ports (nothing runs in it)."""
    (container,) = template["spec"]["containers"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(template["metadata"]["labels"])},
        "spec": {
            "containers": [
                {
                    "name": container["name"],
                    "image": "registry.invalid/logicbundle:e2e",
                    "ports": container["ports"],
                }
            ]
        },
    }


def _leader_label(cluster: Cluster, namespace: str, pod: str) -> str | None:
    obj = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}")
    labels = obj["metadata"].get("labels") or {}
    value: str | None = labels.get(names.LABEL_LEADER)
    return value


def _labelled(cluster: Cluster, namespace: str, pods: tuple[str, ...]) -> set[str]:
    return {p for p in pods if _leader_label(cluster, namespace, p) == names.LABEL_LEADER_VALUE}


def _endpoint_ips(cluster: Cluster, namespace: str, service: str) -> set[str]:
    """The ready addresses of the Service's EndpointSlices."""
    query = urllib.parse.urlencode({"labelSelector": f"kubernetes.io/service-name={service}"})
    slices = cluster.request(
        "GET", f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices?{query}"
    )["items"]
    return {
        address
        for item in slices
        for endpoint in item.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready", True)
        for address in endpoint.get("addresses", [])
    }


def test_two_replicas_peer_so_only_one_acts_and_the_other_takes_over(
    cluster: Cluster, logicbundle_crd: str, registry: Registry, namespace: str, tmp_path: Path
) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(PEERING_CRD))
    cluster.wait_established("clusterkopfpeerings.kopf.dev")
    name = f"peering-{namespace}"[:60]
    peering_path = f"/apis/kopf.dev/v1/clusterkopfpeerings/{name}"
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=f"apiVersion: kopf.dev/v1\nkind: ClusterKopfPeering\nmetadata:\n  name: {name}\n",
    )
    # The replicas' pods, and the distributor Service exactly as the chart renders it.
    service, template = _chart(namespace)
    assert service["spec"]["selector"][names.LABEL_LEADER] == names.LABEL_LEADER_VALUE
    pods = ("operator-a", "operator-b")
    for pod in pods:
        cluster.request("POST", f"/api/v1/namespaces/{namespace}/pods", _replica_pod(pod, template))
    cluster.request("POST", f"/api/v1/namespaces/{namespace}/services", service)
    ips: dict[str, str] = wait_for(
        lambda: {
            p: cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods/{p}")["status"]["podIP"]
            for p in pods
        },
        what="kwok giving both replica pods an IP",
        timeout=60,
    )
    assert len(set(ips.values())) == 2
    service_name = service["metadata"]["name"]

    key = KeyPair.generate()
    push_bundle(
        registry.host,
        EXAMPLES / "bundles" / "pricing-v1",
        repository=f"{namespace}/pricing",
        tag="v1",
        version="1.0.0",
        key=key,
    )

    def extra(pod: str) -> tuple[str, ...]:
        return (
            "--peering",
            name,
            "--namespace",
            namespace,
            "--pod-name",
            pod,
            "--pod-namespace",
            namespace,
        )

    first = Operator.start(cluster, tmp_path / "a", name="replica-a", extra=extra("operator-a"))
    started = [first]
    try:
        # kopf peers under the pod's identity, the one the labeler decides for.
        wait_for(
            lambda: (
                f"{namespace}/operator-a"
                in (cluster.request("GET", peering_path).get("status") or {})
            ),
            what="the first replica's heartbeat under its pod's identity",
            timeout=60,
            watch=[first.process],
        )
        second = Operator.start(
            cluster, tmp_path / "b", name="replica-b", extra=extra("operator-b")
        )
        started.append(second)
        # kopf starts every replica paused; only the highest priority (the oldest) resumes.
        wait_for(
            lambda: RESUMED in first.process.log_path.read_text(),
            what="the first replica acting",
            timeout=60,
        )
        wait_for(
            lambda: STANDING_BY.search(second.process.log_path.read_text()),
            what="the second replica deciding it is not the leader",
            timeout=60,
            watch=[second.process],
        )
        wait_for(
            lambda: _labelled(cluster, namespace, pods) == {"operator-a"},
            what="the first replica's pod labelled as the leader",
            timeout=30,
        )
        wait_for(
            lambda: _endpoint_ips(cluster, namespace, service_name) == {ips["operator-a"]},
            what="the chart's distributor Service routing to the first replica's pod only",
            timeout=60,
        )
        apply(
            cluster,
            namespace,
            logicbundle(
                "pricing",
                ref=f"{registry.host}/{namespace}/pricing:v1",
                key=key,
                selector={"app": "web"},
                interval="1h",
            ),
        )
        wait_condition(cluster, namespace, "pricing", "Verified", "True", timeout=60)
        assert RESUMED not in second.process.log_path.read_text()
        assert "same priority" not in second.process.log_path.read_text()
        assert _labelled(cluster, namespace, pods) == {"operator-a"}

        first.kill()
        # The second resumes once the first's heartbeat lapses, and acts on the next change.
        wait_for(
            lambda: RESUMED in second.process.log_path.read_text(),
            what="the second replica taking over",
            timeout=120,
        )
        wait_for(
            lambda: _leader_label(cluster, namespace, "operator-b") == names.LABEL_LEADER_VALUE,
            what="the leader label on the second replica's pod",
            timeout=30,
            watch=[second.process],
        )
        # A SIGKILLed process cannot unlabel its pod; the kubelet would restart the
        # container, which clears the stale label and stands by (it is now the youngest).
        assert _leader_label(cluster, namespace, "operator-a") == names.LABEL_LEADER_VALUE
        restarted = Operator.start(
            cluster, tmp_path / "a", name="replica-a-restarted", extra=extra("operator-a")
        )
        started.append(restarted)
        wait_for(
            lambda: STANDING_BY.search(restarted.process.log_path.read_text()),
            what="the restarted first replica standing by",
            timeout=60,
            watch=[restarted.process],
        )
        assert _labelled(cluster, namespace, pods) == {"operator-b"}
        wait_for(
            lambda: _endpoint_ips(cluster, namespace, service_name) == {ips["operator-b"]},
            what="the chart's distributor Service routing to the second replica's pod only",
            timeout=60,
        )
        apply(
            cluster,
            namespace,
            logicbundle(
                "pricing",
                ref=f"{registry.host}/{namespace}/pricing:v1",
                key=key,
                selector={"app": "other"},
                interval="1h",
            ),
        )
        path = f"/apis/logicbundle.io/v1alpha1/namespaces/{namespace}/logicbundles/pricing"
        wait_for(
            lambda: (
                (cluster.request("GET", path).get("status") or {}).get("observedGeneration") == 2
            ),
            what="the second replica reconciling generation 2",
            timeout=60,
        )
        # A clean stop unlabels at once and removes the heartbeat: the label moves
        # to the standby without waiting for a lifetime to lapse.
        second.stop()
        assert _leader_label(cluster, namespace, "operator-b") is None
        wait_for(
            lambda: _labelled(cluster, namespace, pods) == {"operator-a"},
            what="the label handed to the restarted first replica",
            timeout=30,
            watch=[restarted.process],
        )
    finally:
        for replica in started:
            replica.stop()
        cluster.kubectl("delete", "clusterkopfpeering", name, "--ignore-not-found")
