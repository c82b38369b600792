"""kstatus and the Argo CD health check agree with the status contract, on live objects.

kstatus is the real library (``sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute``
built into ``e2e/harness/kstatus``); the Argo CD health check is the real ``health.lua``
run by Argo CD's own util/lua on gopher-lua (``e2e/harness/argocd.py``), which
the unit tests' lupa copy must agree with. Both read objects
served by the real API server:

* driven by the real operator process: a first install waiting for its pods,
  then Ready; an unsigned artifact (``Verified=False``, Stalled); a repository
  missing from the registry (``ResolveFailed``, retried) and a trusted root
  without logs (``InvalidSource``, Stalled) while the stable digest serves;
* the rollout situations a test cannot wait for in real time (mid-stage,
  paused, at a manual gate, rolled back, ...): statuses produced by
  ``logicbundle.rollout.step`` (``tests/gitops/scenarios.py``), written
  through the status subresource of a real object and read back.

The contract (docs/concepts.md, DESIGN.md): Ready → Current; Reconciling →
InProgress; Stalled → Failed; a generation not yet observed → InProgress.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e import versions
from e2e.harness import argocd as argo
from e2e.harness import build
from e2e.harness.cluster import Cluster
from e2e.harness.operator import (
    EXAMPLES,
    KeyPair,
    Operator,
    apply,
    assigned,
    get_bundle,
    logicbundle,
    opted_in_pod,
    push_bundle,
    report_as_pod,
    wait_condition,
)
from e2e.harness.proc import wait_for
from e2e.harness.services import Registry
from tests.gitops import scenarios
from tests.gitops.test_argocd_lua import EXPECTED_HEALTH

V1 = EXAMPLES / "bundles" / "pricing-v1"
LB_PATH = "/apis/logicbundle.io/v1alpha1/namespaces/{namespace}/logicbundles"


def kstatus(obj: dict[str, Any]) -> tuple[str, str]:
    """What cli-utils' kstatus computes for ``obj``: (status, message)."""
    proc = subprocess.run(
        [str(build.KSTATUS.path("kstatus"))],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(proc.stdout)
    return str(result["status"]), str(result["message"])


def test_the_checker_is_the_real_library_and_reads_the_generation_rule() -> None:
    obj = scenarios.generation_not_observed()
    status, message = kstatus(obj)
    assert status == "InProgress"
    assert "generation is 2" in message


def test_a_new_object_no_operator_has_written_is_in_progress_not_current(
    cluster: Cluster, logicbundle_crd: str, namespace: str, key: KeyPair
) -> None:
    """Found by the Flux sync (test_flux.py): kstatus read a status-less object as Current.

    Flux's ``wait: true`` passed 20 ms after applying a new LogicBundle. The CRD
    now defaults ``status`` to ``{observedGeneration: 0}``, served by the API
    server until the operator writes the first status (no operator watches this
    namespace).
    """
    manifest = logicbundle(
        "unseen", ref="127.0.0.1:1/unseen:v1", key=key, selector={"app": "unseen"}
    )
    apply(cluster, namespace, manifest)
    obj = get_bundle(cluster, namespace, "unseen")
    assert obj["metadata"]["generation"] == 1
    assert obj["status"] == {"observedGeneration": 0}
    status, message = kstatus(obj)
    assert status == "InProgress", message
    assert "generation is 1" in message
    assert argo.checked_health(obj)[0] == "Progressing"


# --- driven by the real operator ---------------------------------------------------------


@pytest.fixture(scope="module")
def live_namespace(cluster: Cluster) -> Iterator[str]:
    """The one namespace the operator of this module watches."""
    name = "kstatus-live"
    cluster.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    yield name
    cluster.request("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster,
    logicbundle_crd: str,
    live_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operator]:
    # Namespaced: the objects the scenario tests write elsewhere are never reconciled.
    running = Operator.start(
        cluster, tmp_path_factory.mktemp("operator"), extra=("--namespace", live_namespace)
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return KeyPair.generate()


def test_a_first_install_is_in_progress_until_its_pods_run_it_then_current(
    cluster: Cluster, registry: Registry, operator: Operator, key: KeyPair, live_namespace: str
) -> None:
    ns = live_namespace
    digest = push_bundle(
        registry.host, V1, repository=f"{ns}/pricing", tag="v1", version="1.0.0", key=key
    )
    pods = ["web-0", "web-1"]
    for pod in pods:
        cluster.request("POST", f"/api/v1/namespaces/{ns}/pods", opted_in_pod(pod, {"app": "web"}))
    apply(
        cluster,
        ns,
        logicbundle(
            "pricing", ref=f"{registry.host}/{ns}/pricing:v1", key=key, selector={"app": "web"}
        ),
    )
    wait_for(
        lambda: all(assigned(cluster, ns, "pricing", p) == digest for p in pods),
        what="every pod assigned",
        timeout=60,
        watch=[operator.process],
    )
    rolling = wait_condition(
        cluster, ns, "pricing", "Reconciling", "True", timeout=30, watch=(operator.process,)
    )
    assert kstatus(rolling)[0] == "InProgress"
    assert argo.checked_health(rolling)[0] == "Progressing"

    # No agent processes here: send what each pod's agent would report.
    for pod in pods:
        report_as_pod(cluster, operator.distributor_url, ns, pod, bundle="pricing", digest=digest)
    ready = wait_condition(
        cluster, ns, "pricing", "Ready", "True", timeout=60, watch=(operator.process,)
    )
    assert kstatus(ready) == ("Current", "Resource is Ready")
    assert argo.checked_health(ready)[0] == "Healthy"
    # kubectl wait understands the same condition.
    cluster.kubectl("wait", "-n", ns, "lb/pricing", "--for=condition=Ready", "--timeout=30s")


def test_an_unsigned_artifact_is_failed_for_kstatus_and_degraded_for_argo_cd(
    cluster: Cluster, registry: Registry, operator: Operator, key: KeyPair, live_namespace: str
) -> None:
    ns = live_namespace
    push_bundle(registry.host, V1, repository=f"{ns}/unsigned", tag="v1", version="1.0.0", key=None)
    apply(
        cluster,
        ns,
        logicbundle(
            "unsigned",
            ref=f"{registry.host}/{ns}/unsigned:v1",
            key=key,
            selector={"app": "nothing"},
        ),
    )
    obj = wait_condition(
        cluster, ns, "unsigned", "Verified", "False", timeout=60, watch=(operator.process,)
    )
    obj = wait_condition(cluster, ns, "unsigned", "Stalled", "True", timeout=30)
    status, message = kstatus(obj)
    assert status == "Failed"
    assert "verification" in message
    assert argo.checked_health(obj)[0] == "Degraded"


def _public_good_root() -> dict[str, Any]:
    """The Sigstore public-good trusted_root.json shipped in the sigstore wheel."""
    from importlib import resources

    asset = resources.files("sigstore._store").joinpath(
        "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev", "trusted_root.json"
    )
    root: dict[str, Any] = json.loads(asset.read_bytes())
    return root


def test_source_failures_decide_the_conditions_while_the_stable_digest_keeps_serving(
    cluster: Cluster, registry: Registry, operator: Operator, key: KeyPair, live_namespace: str
) -> None:
    """Issue 11, defect 2: a registry failure was only a log line and an event.

    A repository missing from the registry (a push fixes it) is ``Ready=False``
    ``ResolveFailed`` and still Reconciling: ``kubectl wait --for=condition=Ready=false``
    sees it, kstatus says InProgress, Argo CD Degraded.  A trusted root without
    transparency logs (only a fixed ConfigMap fixes it) is ``Stalled`` ``InvalidSource``:
    kstatus Failed.  Through both the pod keeps the verified digest, and a fixed
    ConfigMap is seen without a change of spec.
    """
    ns = live_namespace
    path = LB_PATH.format(namespace=ns) + "/sourced"
    digest = push_bundle(
        registry.host, V1, repository=f"{ns}/sourced", tag="v1", version="1.0.0", key=key
    )
    cluster.request(
        "POST", f"/api/v1/namespaces/{ns}/pods", opted_in_pod("sourced-0", {"app": "sourced"})
    )
    good = f"{registry.host}/{ns}/sourced:v1"
    apply(cluster, ns, logicbundle("sourced", ref=good, key=key, selector={"app": "sourced"}))
    wait_for(
        lambda: assigned(cluster, ns, "sourced", "sourced-0") == digest,
        what="the pod assigned",
        timeout=60,
        watch=[operator.process],
    )
    report_as_pod(
        cluster, operator.distributor_url, ns, "sourced-0", bundle="sourced", digest=digest
    )
    wait_condition(cluster, ns, "sourced", "Ready", "True", timeout=60, watch=(operator.process,))

    # A repository the registry does not have: retried, never Stalled.
    edited = cluster.request("PATCH", path, {"spec": {"source": {"ref": f"{good[:-3]}-gone:v1"}}})
    generation = edited["metadata"]["generation"]
    cluster.kubectl("wait", "-n", ns, "lb/sourced", "--for=condition=Ready=false", "--timeout=60s")
    obj = wait_condition(
        cluster, ns, "sourced", "Ready", "False", reason="ResolveFailed", timeout=30
    )
    assert obj["status"]["observedGeneration"] == generation
    by_type = {c["type"]: c for c in obj["status"]["conditions"]}
    assert (by_type["Reconciling"]["status"], by_type["Stalled"]["status"]) == ("True", "False")
    assert by_type["Ready"]["message"].startswith("ArtifactNotFound: "), by_type["Ready"]
    assert kstatus(obj)[0] == "InProgress"
    health, message = argo.checked_health(obj)
    assert (health, message.split(":")[0]) == ("Degraded", "ResolveFailed")
    assert obj["status"]["stableDigest"] == digest
    assert assigned(cluster, ns, "sourced", "sourced-0") == digest, "the stable digest serves"

    # A trusted root without transparency logs: only a change fixes it, so Stalled.
    root = _public_good_root()
    broken = {**root, "tlogs": []}
    config_maps = f"/api/v1/namespaces/{ns}/configmaps"
    cluster.request(
        "POST",
        config_maps,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "sourced-root"},
            "data": {"trusted_root.json": json.dumps(broken)},
        },
    )
    keyless = {
        "identities": [{"issuer": "https://issuer.invalid", "subject": "nobody@example.com"}],
        "trustedRootRef": {"kind": "ConfigMap", "name": "sourced-root"},
    }
    cluster.request(
        "PATCH", path, {"spec": {"source": {"ref": good}, "verify": {"keyless": keyless}}}
    )
    cluster.kubectl("wait", "-n", ns, "lb/sourced", "--for=condition=Stalled", "--timeout=60s")
    obj = wait_condition(
        cluster, ns, "sourced", "Stalled", "True", reason="InvalidSource", timeout=30
    )
    by_type = {c["type"]: c for c in obj["status"]["conditions"]}
    assert by_type["Stalled"]["message"].startswith("InvalidTrustedRoot: "), by_type["Stalled"]
    assert (by_type["Ready"]["status"], by_type["Reconciling"]["status"]) == ("False", "False")
    assert by_type["Verified"]["status"] == "True", "no digest is failed for the root's fault"
    assert kstatus(obj)[0] == "Failed"
    assert argo.checked_health(obj)[0] == "Degraded"
    assert assigned(cluster, ns, "sourced", "sourced-0") == digest, "the stable digest serves"

    # The ConfigMap fixed, the spec unchanged: seen at the next look (the source interval).
    cluster.request(
        "PATCH", f"{config_maps}/sourced-root", {"data": {"trusted_root.json": json.dumps(root)}}
    )
    ready = wait_condition(
        cluster, ns, "sourced", "Ready", "True", timeout=60, watch=(operator.process,)
    )
    assert kstatus(ready)[0] == "Current"
    assert assigned(cluster, ns, "sourced", "sourced-0") == digest


# --- statuses from the state machine, written through the status subresource -------------

# Scenario -> what kstatus must say. Suspended has Ready=False with neither
# Reconciling nor Stalled, which kstatus reads as InProgress (waiting, not failed).
EXPECTED_KSTATUS = {
    "first install ready": "Current",
    "rolled back by request": "Current",
    "first install, agents not reported": "InProgress",
    "mid-stage rolling": "InProgress",
    "paused": "InProgress",
    "waiting for analysis": "InProgress",
    "waiting for a manual gate": "InProgress",
    "insufficient data": "InProgress",
    "retried": "InProgress",
    "resolve failed": "InProgress",
    "suspended": "InProgress",
    "rolled back": "Failed",
    "aborted": "Failed",
    "verification failed": "Failed",
    "invalid source": "Failed",
    "suspended while stalled": "Failed",
}


def write_live(cluster: Cluster, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Create ``obj``'s spec as a real object, write its status through /status, read it back."""
    path = LB_PATH.format(namespace=namespace)
    name = obj["metadata"]["name"]
    body = {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {"name": name, "annotations": obj["metadata"].get("annotations", {})},
        "spec": obj["spec"],
    }
    created = cluster.request("POST", path, body)
    status = dict(obj.get("status") or {})
    # The state machine wrote it for generation 1; the real object's generation is the truth.
    generation = created["metadata"]["generation"]
    status["observedGeneration"] = generation
    status["conditions"] = [
        {**c, "observedGeneration": generation} for c in status.get("conditions", [])
    ]
    cluster.request("PATCH", f"{path}/{name}/status", {"status": status})
    return get_bundle(cluster, namespace, name)


@pytest.mark.parametrize("scenario", sorted(EXPECTED_KSTATUS))
def test_kstatus_and_argo_cd_read_each_rollout_phase_as_the_contract_says(
    cluster: Cluster, logicbundle_crd: str, namespace: str, scenario: str
) -> None:
    live = write_live(cluster, namespace, scenarios.SCENARIOS[scenario]())
    assert live["status"]["conditions"], "the status subresource kept the conditions"
    status, message = kstatus(live)
    assert status == EXPECTED_KSTATUS[scenario], message
    expected_health, message_start = EXPECTED_HEALTH[scenario]
    health, health_message = argo.checked_health(live)
    assert health == expected_health
    assert message_start in health_message


def test_an_edited_spec_is_in_progress_until_the_operator_observes_it(
    cluster: Cluster, logicbundle_crd: str, namespace: str
) -> None:
    live = write_live(cluster, namespace, scenarios.first_install_ready())
    assert kstatus(live)[0] == "Current"
    name = live["metadata"]["name"]
    cluster.request(
        "PATCH",
        LB_PATH.format(namespace=namespace) + f"/{name}",
        {"spec": {"source": {"interval": "7m"}}},
    )
    edited = get_bundle(cluster, namespace, name)
    assert edited["metadata"]["generation"] == live["metadata"]["generation"] + 1
    status, message = kstatus(edited)
    assert status == "InProgress"
    assert "latest observed generation" in message
    assert argo.checked_health(edited)[0] == "Progressing"


def test_the_kstatus_checker_is_built_from_the_pinned_cli_utils() -> None:
    go_mod = (Path(build.KSTATUS_SOURCE) / "go.mod").read_text()
    assert f"sigs.k8s.io/cli-utils {versions.CLI_UTILS}" in go_mod
