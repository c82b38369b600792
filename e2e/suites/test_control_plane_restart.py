"""The control plane restarted mid-rollout: it finishes, no pod moves back, no status is lost.

Issue 11's fault matrix, rows "kube-apiserver restarted mid-rollout" and "etcd
restarted mid-rollout", against the real operator, real agents and apps.  A
staged rollout (internal with a manual gate, 5 % with a manual gate, then
everyone with a pause) is driven from v1 to v2, and the control-plane process
is stopped by its pid and started again twice: once at the internal stage's
gate (nothing moving: the status read after the restart must be the status
read before it, and a ``promote`` must still be seen and acted on), and once
the moment the last stage starts, while the pods move to v2.  Nothing else is
restarted: the operator (kopf's watches, its own pod list-and-watch), kwok, the
controllers and the agents must reconnect on their own.

What is recorded throughout: every version of the LogicBundle the API server
stored (a watch that reconnects), what its published rule assigned each pod in
each version, and what each app served, polled every 0.1 s.  Checked: the
rollout ends Ready on v2 with every pod reporting it; no pod was ever assigned,
or served, v1 after v2 (there is no rollback in this story); the status only
moves forward (revision, stage index, history, observed generation); and a pod
created after the restarts is scheduled, run by kwok, seen by the operator and
given v2.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest

from e2e.harness.cluster import Cluster
from e2e.harness.fleet import Fleet, FleetPod, Traffic
from e2e.harness.operator import (
    BundleWatch,
    KeyPair,
    Operator,
    assigned,
    condition,
    get_bundle,
    wait_condition,
)
from e2e.harness.proc import wait_for
from e2e.harness.services import Registry
from e2e.suites.test_rollout import (  # noqa: F401 - fixtures
    INTERNAL,
    _explain_failures,
    digests,
    fleet,
    install,
    is_ready,
    key,
    lb,
    move_to,
    operator,
    ref,
    rollout,
)
from logicbundle import contract
from logicbundle.distributor import facts_of, rule_of

RESTARTS: dict[str, Callable[[Cluster], float]] = {
    "kube-apiserver": lambda cluster: cluster.restart_apiserver(),
    "etcd": lambda cluster: cluster.restart_etcd(),
}
LAST_PAUSE = "15s"
"""How long the last stage holds once every pod runs v2: the restart falls inside it."""
STAGES = ("internal", "canary", "everyone")


def staged() -> dict[str, Any]:
    """internal (gate) -> 5 % (gate) -> everyone (a pause), builtin analysis of errors."""
    spec = rollout(gate=True)
    spec["stages"][0] = {
        "name": "internal",
        "internal": {"matchLabels": INTERNAL},
        "manualGate": True,
    }
    spec["stages"][2]["pause"] = LAST_PAUSE
    return spec


class ServedLog:
    """What each app served, polled every 0.1 s in a thread: per pod, each change in order."""

    def __init__(self, pods: Sequence[FleetPod]) -> None:
        self._pods = list(pods)
        self.changes: dict[str, list[str]] = {p.name: [] for p in self._pods}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="served-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for pod in self._pods:
                digest = pod.served_digest()  # None while the app answers nothing: not a change
                seen = self.changes[pod.name]
                if digest is not None and (not seen or seen[-1] != digest):
                    seen.append(digest)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def assignments(
    versions: Sequence[Mapping[str, Any]], pods: Mapping[str, Mapping[str, Any]]
) -> dict[str, list[str]]:
    """Per pod, each change of the digest the published rule assigned it, version by version."""
    out: dict[str, list[str]] = {name: [] for name in pods}
    facts = {name: facts_of(body) for name, body in pods.items()}
    for obj in versions:
        rule = rule_of(obj)
        if rule is None or rule.state is None:
            continue
        for name, pod_facts in facts.items():
            target = contract.target_of(rule.state, pod_facts)
            seen = out[name]
            if target is not None and (not seen or seen[-1] != target.digest):
                seen.append(target.digest)
    return out


def backwards(changes: Mapping[str, list[str]], *, stable: str, candidate: str) -> dict[str, Any]:
    """The pods whose changes are not v1, or v1 then v2 (a pod that went back, or flipped)."""
    allowed = ([stable], [stable, candidate])
    return {pod: seen for pod, seen in changes.items() if seen not in allowed}


def status_regressions(versions: Sequence[Mapping[str, Any]]) -> list[str]:
    """Where a stored status went back on what an earlier one had written."""
    found = []
    last: dict[str, Any] = {}
    for obj in versions:
        status = obj.get("status") or {}
        rv = obj["metadata"]["resourceVersion"]
        revision = (status.get("targetState") or {}).get("revision")
        if revision is not None:
            if revision < last.get("revision", -1):
                found.append(f"{rv}: targetState.revision {revision} < {last['revision']}")
            last["revision"] = revision
        generation = status.get("observedGeneration")
        if generation is not None:
            if generation < last.get("generation", -1):
                found.append(f"{rv}: observedGeneration {generation} < {last['generation']}")
            last["generation"] = generation
        index = status.get("stageIndex")
        if status.get("candidateDigest") and index is not None:
            key = f"stageIndex of {status['candidateDigest']}"
            if index < last.get(key, -1):
                found.append(f"{rv}: stageIndex {index} < {last[key]}")
            last[key] = index
        # An entry may be rewritten (its outcome, when it ended); its digest stays listed.
        history = {h["digest"] for h in status.get("history") or []}
        lost = last.get("history", set()) - history
        if lost:
            found.append(f"{rv}: history lost {sorted(lost)}")
        last["history"] = history
    return found


KEPT = ("stableDigest", "candidateDigest", "stage", "stageIndex", "stageStartedAt", "history")
"""What a status at a gate holds that a restart must not lose (nothing moves there)."""


def test_a_status_regression_is_found() -> None:
    """The checker itself can fail: a revision, a stage or a history entry gone back."""
    versions = [
        {
            "metadata": {"resourceVersion": "1"},
            "status": {
                "targetState": {"revision": 3},
                "candidateDigest": "sha256:b",
                "stageIndex": 1,
                "history": [{"digest": "sha256:a"}],
            },
        },
        {
            "metadata": {"resourceVersion": "2"},
            "status": {
                "targetState": {"revision": 2},
                "candidateDigest": "sha256:b",
                "stageIndex": 0,
            },
        },
    ]
    assert len(status_regressions(versions)) == 3
    assert backwards({"p": ["v1", "v2", "v1"], "q": ["v1", "v2"]}, stable="v1", candidate="v2") == {
        "p": ["v1", "v2", "v1"]
    }


@pytest.fixture
def bundle_watch(cluster: Cluster, fleet: Fleet) -> Iterator[BundleWatch]:  # noqa: F811
    watch = BundleWatch(cluster, fleet.namespace, "pricing")
    yield watch
    watch.stop()


@pytest.mark.parametrize("component", list(RESTARTS))
def test_a_control_plane_restart_mid_rollout_loses_no_status_and_moves_no_pod_back(
    cluster: Cluster,
    registry: Registry,
    key: KeyPair,  # noqa: F811
    digests: dict[str, str],  # noqa: F811
    fleet: Fleet,  # noqa: F811
    operator: Operator,  # noqa: F811
    bundle_watch: BundleWatch,
    component: str,
) -> None:
    restart = RESTARTS[component]
    ns = fleet.namespace
    v1, v2 = digests["v1"], digests["v2"]
    manifest = install(cluster, fleet, registry, key, digests, spec_rollout=staged())
    pods = {
        p.name: cluster.request("GET", f"/api/v1/namespaces/{ns}/pods/{p.name}") for p in fleet.pods
    }
    served = ServedLog(fleet.pods)
    versions: list[dict[str, Any]] = []
    try:
        with Traffic(fleet):
            move_to(cluster, fleet, manifest, ref(registry, "v2"))
            wait_condition(
                cluster,
                ns,
                "pricing",
                "Reconciling",
                "True",
                reason="WaitingForPromotion",
                timeout=90,
            )
            before = get_bundle(cluster, ns, "pricing")["status"]
            assert before["stage"] == "internal"

            # 1. At the internal stage's gate: nothing moves, so nothing may change.
            down = restart(cluster)
            print(f"{component} restarted at the gate in {down:.1f}s")
            after = get_bundle(cluster, ns, "pricing")["status"]
            assert {k: after.get(k) for k in KEPT} == {k: before.get(k) for k in KEPT}
            assert after["targetState"] == before["targetState"]
            # The operator acts after the restart: it sees the promote (kopf's watch is
            # back) and writes the next stage.
            promoted = lb(
                "promote", "pricing", "-n", ns, "--wait", "--timeout", "90s", cluster=cluster
            )
            assert promoted.returncode == 0, promoted.stdout + promoted.stderr
            wait_condition(
                cluster,
                ns,
                "pricing",
                "Reconciling",
                "True",
                reason="WaitingForPromotion",
                timeout=90,
            )
            at_canary = get_bundle(cluster, ns, "pricing")["status"]
            assert at_canary["stage"] == "canary"
            assert at_canary["targetState"]["revision"] > before["targetState"]["revision"]

            # 2. The last stage: restarted while its pods move to v2 (the operator's
            # distributor tells them; their reports and the status wait for the API server).
            promoted = lb("promote", "pricing", "-n", ns, cluster=cluster)
            assert promoted.returncode == 0, promoted.stdout + promoted.stderr
            # The first pod of the last stage on v2 (or, if they all swapped between two
            # polls, all of them): the rest of the stage (reports, the pause, the analysis,
            # the status writes) falls during and after the restart.
            rest = len(fleet.pods) - 2
            moving = wait_for(
                lambda: m if (m := fleet.served()).get(v2, 0) > 2 else None,
                what="a pod of the last stage serving v2",
                timeout=90,
                interval=0.02,
            )
            mid = get_bundle(cluster, ns, "pricing")
            down = restart(cluster)
            print(
                f"{component} restarted in the last stage in {down:.1f}s, "
                f"{moving.get(v2, 0) - 2} of {rest} pods of that stage on v2 when it began"
            )
            # Read before the restart: not finished.  The API server refused every write
            # while it was away, so the end of the rollout is written after it is back.
            assert mid["status"]["stableDigest"] == v1, "the rollout ended before the restart"
            wait_for(
                lambda: fleet.served().get(v2, 0) == len(fleet.pods) and is_ready(cluster, ns),
                what="v2 everywhere and Ready after the restart",
                timeout=120,
                interval=0.2,
            )
    finally:
        served.stop()
        versions.extend(bundle_watch.drain())

    status = get_bundle(cluster, ns, "pricing")["status"]
    assert status["stableDigest"] == v2
    assert condition({"status": status}, "Ready")["status"] == "True"  # type: ignore[index]
    # Every pod reports v2 (the operator counts the agents' reports after the restarts).
    wait_for(
        lambda: (
            {
                d["digest"]: d["active"]
                for d in (get_bundle(cluster, ns, "pricing")["status"]["pods"]["byDigest"])
            }
            == {v2: len(fleet.pods)}
        ),
        what="every pod reporting v2",
        timeout=30,
    )
    assert backwards(served.changes, stable=v1, candidate=v2) == {}, served.changes
    assigned_changes = assignments(versions, pods)
    assert backwards(assigned_changes, stable=v1, candidate=v2) == {}, assigned_changes
    assert status_regressions(versions) == []
    # The stored history still holds v1 (promoted before any restart) beside v2.
    assert [h["digest"] for h in status["history"]][:2] == [v2, v1]

    # Nothing else was restarted: a new pod is scheduled, run by kwok, seen by the
    # operator's own pod watch (counted, assigned) and served v2.
    (new,) = fleet.add(1)
    wait_for(
        lambda: (
            cluster.request("GET", f"/api/v1/namespaces/{ns}/pods/{new.name}")
            .get("status", {})
            .get("phase")
            == "Running"
        ),
        what=f"{new.name} scheduled and running (the scheduler and kwok reconnected)",
        timeout=60,
    )
    wait_for(
        lambda: get_bundle(cluster, ns, "pricing")["status"]["pods"]["total"] == len(fleet.pods),
        what="the operator counting the new pod (its pod watch reconnected)",
        timeout=60,
    )
    assert assigned(cluster, ns, "pricing", new.name) == v2
    fleet.start_apps([new])
    fleet.wait_serving(v2)
