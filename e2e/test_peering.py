"""Two operator replicas peer through kopf: only one acts, and the other takes over when it dies.

The ClusterKopfPeering CRD and object are the chart's.  Both replicas run
against the same cluster; the test checks from their own logs which one
handled the LogicBundle, kills it, and sees the other take over the next change.
"""

from __future__ import annotations

from pathlib import Path

from e2e.cluster import Cluster
from e2e.operator import (
    EXAMPLES,
    KeyPair,
    Operator,
    apply,
    logicbundle,
    push_bundle,
    wait_condition,
)
from e2e.proc import wait_for
from e2e.services import Registry

PEERING_CRD = (
    Path(__file__).resolve().parent.parent
    / "charts"
    / "logicbundle-operator"
    / "crds"
    / "kopf.dev_clusterkopfpeerings.yaml"
)
RESUMED = "Resuming operations after the pause"


def test_two_replicas_peer_so_only_one_acts_and_the_other_takes_over(
    cluster: Cluster, logicbundle_crd: str, registry: Registry, namespace: str, tmp_path: Path
) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(PEERING_CRD))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/clusterkopfpeerings.kopf.dev"
    )
    name = f"peering-{namespace}"[:60]
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=f"apiVersion: kopf.dev/v1\nkind: ClusterKopfPeering\nmetadata:\n  name: {name}\n",
    )
    key = KeyPair.generate()
    push_bundle(
        registry.host,
        EXAMPLES / "bundles" / "pricing-v1",
        repository=f"{namespace}/pricing",
        tag="v1",
        version="1.0.0",
        key=key,
    )
    extra = ("--peering", name, "--namespace", namespace)
    first = Operator.start(cluster, tmp_path / "a", name="replica-a", extra=extra)
    second = Operator.start(cluster, tmp_path / "b", name="replica-b", extra=extra)
    try:
        # kopf starts every replica paused; only the highest priority (the oldest) resumes.
        wait_for(
            lambda: RESUMED in first.process.log_path.read_text(),
            what="the first replica acting",
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
        first.kill()
        # The second resumes once the first's heartbeat lapses, and acts on the next change.
        wait_for(
            lambda: RESUMED in second.process.log_path.read_text(),
            what="the second replica taking over",
            timeout=120,
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
    finally:
        first.stop()
        second.stop()
        cluster.kubectl("delete", "clusterkopfpeering", name, "--ignore-not-found")
