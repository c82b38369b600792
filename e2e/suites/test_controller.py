"""The controller against the real control plane: verification, first install, deletion.

Pods here carry the agent container (as the webhook would inject it) but no
agent runs: these tests check what the operator decides and writes.  The
rollouts with real agents and sample apps are in ``test_rollout.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.harness.cluster import Cluster
from e2e.harness.operator import (
    EXAMPLES,
    KeyPair,
    Operator,
    apply,
    assigned,
    events,
    get_bundle,
    logicbundle,
    opted_in_pod,
    pod_annotations,
    published_state,
    push_bundle,
    wait_condition,
)
from e2e.harness.proc import HarnessError, wait_for
from e2e.harness.services import Registry
from logicbundle.api import names

V1 = EXAMPLES / "bundles" / "pricing-v1"


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, logicbundle_crd: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    running = Operator.start(cluster, tmp_path_factory.mktemp("operator"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return KeyPair.generate()


def _pods(cluster: Cluster, namespace: str, count: int, *, agent: bool = True) -> list[str]:
    names_ = [f"web-{i}" for i in range(count)]
    for name in names_:
        cluster.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/pods",
            opted_in_pod(name, {"app": "web"}, agent=agent),
        )
    return names_


def test_the_first_verified_digest_goes_to_every_selected_pod_and_no_other(
    cluster: Cluster, registry: Registry, operator: Operator, key: KeyPair, namespace: str
) -> None:
    digest = push_bundle(
        registry.host, V1, repository=f"{namespace}/pricing", tag="v1", version="1.0.0", key=key
    )
    pods = _pods(cluster, namespace, 3)
    cluster.request(
        "POST", f"/api/v1/namespaces/{namespace}/pods", opted_in_pod("other", {"app": "other"})
    )
    apply(
        cluster,
        namespace,
        logicbundle(
            "pricing",
            ref=f"{registry.host}/{namespace}/pricing:v1",
            key=key,
            selector={"app": "web"},
        ),
    )
    obj = wait_condition(
        cluster, namespace, "pricing", "Verified", "True", watch=(operator.process,)
    )
    wait_for(
        lambda: all(assigned(cluster, namespace, "pricing", p) == digest for p in pods),
        what="every selected pod assigned",
        timeout=30,
    )
    assert assigned(cluster, namespace, "pricing", "other") is None
    obj = get_bundle(cluster, namespace, "pricing")
    # The slow path's copy: the state ConfigMap holds what the status published.
    wait_for(
        lambda: published_state(cluster, namespace, "pricing") == obj["status"]["targetState"],
        what="the state ConfigMap written",
        timeout=30,
    )
    for pod in [*pods, "other"]:
        annotations = pod_annotations(cluster, namespace, pod)
        assert not [k for k in annotations if k.startswith("logicbundle.io/target.")], pod
    status = obj["status"]
    assert status["stableDigest"] == digest
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["pods"]["total"] == 3
    assert ("Normal", "Installed") in events(cluster, namespace, "pricing")


@pytest.mark.parametrize("signer", ["nobody", "another key"])
def test_an_unsigned_or_wrongly_signed_artifact_is_not_verified_and_no_pod_is_touched(
    cluster: Cluster,
    registry: Registry,
    operator: Operator,
    key: KeyPair,
    namespace: str,
    signer: str,
) -> None:
    other = None if signer == "nobody" else KeyPair.generate()
    push_bundle(
        registry.host, V1, repository=f"{namespace}/pricing", tag="v1", version="1.0.0", key=other
    )
    pods = _pods(cluster, namespace, 2)
    apply(
        cluster,
        namespace,
        logicbundle(
            "pricing",
            ref=f"{registry.host}/{namespace}/pricing:v1",
            key=key,
            selector={"app": "web"},
        ),
    )
    obj = wait_condition(
        cluster, namespace, "pricing", "Verified", "False", watch=(operator.process,)
    )
    verified = next(c for c in obj["status"]["conditions"] if c["type"] == "Verified")
    assert verified["reason"] == "VerificationFailed"
    stalled = next(c for c in obj["status"]["conditions"] if c["type"] == "Stalled")
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    assert (stalled["status"], ready["status"]) == ("True", "False")
    # The event is posted just after the status is written: wait for it, do not race it.
    wait_for(
        lambda: ("Warning", "VerificationFailed") in events(cluster, namespace, "pricing"),
        what="the VerificationFailed event",
        timeout=30,
    )
    for pod in pods:
        assert assigned(cluster, namespace, "pricing", pod) is None
    assert not obj["status"].get("stableDigest")


def test_opted_in_pods_without_an_agent_are_counted_and_reported(
    cluster: Cluster, registry: Registry, operator: Operator, key: KeyPair, namespace: str
) -> None:
    push_bundle(
        registry.host, V1, repository=f"{namespace}/pricing", tag="v1", version="1.0.0", key=key
    )
    _pods(cluster, namespace, 2)
    cluster.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/pods",
        opted_in_pod("bare", {"app": "web"}, agent=False),
    )
    apply(
        cluster,
        namespace,
        logicbundle(
            "pricing",
            ref=f"{registry.host}/{namespace}/pricing:v1",
            key=key,
            selector={"app": "web"},
        ),
    )
    wait_for(
        lambda: (
            (get_bundle(cluster, namespace, "pricing").get("status") or {})
            .get("pods", {})
            .get("withoutAgent")
            == 1
        ),
        what="the pod without agent counted",
        timeout=30,
    )
    wait_for(
        lambda: ("Warning", "PodsWithoutAgent") in events(cluster, namespace, "pricing"),
        what="the PodsWithoutAgent event",
        timeout=30,
    )


def test_deleting_a_logicbundle_leaves_its_pods_on_the_stable_version_unmanaged(
    cluster: Cluster, registry: Registry, operator: Operator, key: KeyPair, namespace: str
) -> None:
    digest = push_bundle(
        registry.host, V1, repository=f"{namespace}/pricing", tag="v1", version="1.0.0", key=key
    )
    pods = _pods(cluster, namespace, 2)
    apply(
        cluster,
        namespace,
        logicbundle(
            "pricing",
            ref=f"{registry.host}/{namespace}/pricing:v1",
            key=key,
            selector={"app": "web"},
        ),
    )
    obj = wait_condition(
        cluster, namespace, "pricing", "Verified", "True", watch=(operator.process,)
    )
    assert names.FINALIZER in obj["metadata"].get("finalizers", [])
    wait_for(
        lambda: all(assigned(cluster, namespace, "pricing", p) == digest for p in pods),
        what="every pod assigned",
        timeout=30,
    )
    assert published_state(cluster, namespace, "pricing") is not None
    cluster.kubectl("delete", "lb", "pricing", "-n", namespace, "--wait=true", "--timeout=60s")
    with pytest.raises(HarnessError, match="404"):
        get_bundle(cluster, namespace, "pricing")
    # Released: no state left for the agents' slow path, so they keep what is active.
    assert published_state(cluster, namespace, "pricing") is None


def test_a_missing_key_secret_is_reported_as_an_event(
    cluster: Cluster,
    registry: Registry,
    operator: Operator,
    key: KeyPair,
    namespace: str,
    tmp_path: Path,
) -> None:
    push_bundle(
        registry.host, V1, repository=f"{namespace}/pricing", tag="v1", version="1.0.0", key=key
    )
    obj = logicbundle(
        "pricing", ref=f"{registry.host}/{namespace}/pricing:v1", key=key, selector={"app": "web"}
    )
    obj["spec"]["verify"] = {"keys": [{"secretRef": {"name": "missing-key"}}]}
    apply(cluster, namespace, obj)
    wait_for(
        lambda: ("Warning", "InvalidConfiguration") in events(cluster, namespace, "pricing"),
        what="an event about the missing Secret",
        timeout=30,
    )
