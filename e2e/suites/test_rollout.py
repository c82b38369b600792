"""Staged rollouts end to end: the real operator, real agents and sample apps per pod.

The operator runs as a process with its distributor; every kwok pod has a real
agent and a real sample app (:mod:`e2e.harness.fleet`); traffic flows through the apps
so the SDK's per-version counters reach the operator's builtin analysis, or
Prometheus scrapes them for the ``prometheus`` provider.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.harness import argocd as argo
from e2e.harness.cluster import Cluster
from e2e.harness.fleet import Fleet, Traffic
from e2e.harness.operator import (
    EXAMPLES,
    BundleWatch,
    KeyPair,
    Operator,
    apply,
    assigned,
    condition,
    events,
    get_bundle,
    logicbundle,
    published_state,
    push_bundle,
    wait_condition,
)
from e2e.harness.proc import HarnessError, wait_for
from e2e.harness.services import Prometheus, Registry
from e2e.suites.test_kstatus import kstatus
from logicbundle import contract
from logicbundle.api import names
from logicbundle.controller._seams import PAUSE_DIR_ENV, PAUSE_ENV
from logicbundle.distributor import facts_of, rule_of

BUNDLES = EXAMPLES / "bundles"
INTERNAL = {names.LABEL_COHORT: names.COHORT_INTERNAL}


ERRORS_ONLY = {
    "provider": "builtin",
    "interval": "2s",
    "minSamples": 10,
    "metrics": [{"name": "error-rate", "builtin": "errorRate", "max": 0.05}],
}
"""Most tests judge errors only: latency on a loaded 2-core machine is too noisy to gate on."""

WITH_LATENCY = {
    "provider": "builtin",
    "interval": "2s",
    "minSamples": 10,
    "metrics": [
        {"name": "error-rate", "builtin": "errorRate", "max": 0.05},
        {"name": "latency-p95", "builtin": "latencyP95", "maxRatioToStable": 3},
    ],
}


def rollout(
    *, analysis: dict[str, Any] | None = None, gate: bool = False, pause: str = "2s"
) -> dict[str, Any]:
    """internal -> 5 % -> all, short pauses, builtin analysis on a 2 s interval."""
    canary: dict[str, Any] = {"name": "canary", "percent": 5}
    canary.update({"manualGate": True} if gate else {"pause": pause})
    return {
        "stages": [
            {"name": "internal", "internal": {"matchLabels": INTERNAL}, "pause": pause},
            canary,
            {"name": "everyone", "all": True},
        ],
        "analysis": analysis or ERRORS_ONLY,
    }


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return KeyPair.generate()


@pytest.fixture(scope="module")
def digests(registry: Registry, key: KeyPair) -> dict[str, str]:
    """Every example bundle pushed and signed once: name -> digest (tags of shop/pricing)."""
    out = {}
    for name in ("v1", "v2", "flaky", "slow", "bad-selftest"):
        out[name] = push_bundle(
            registry.host,
            BUNDLES / f"pricing-{name}",
            repository="shop/pricing",
            tag=name,
            version="1.0.0",
            key=key,
        )
    # The same logic as v2 under another digest: a second good candidate.
    out["v2b"] = push_bundle(
        registry.host,
        BUNDLES / "pricing-v2",
        repository="shop/pricing",
        tag="v2b",
        version="2.0.1",
        key=key,
    )
    return out


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, logicbundle_crd: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    running = Operator.start(cluster, tmp_path_factory.mktemp("operator"))
    yield running
    running.stop()


@pytest.fixture
def fleet(
    cluster: Cluster, namespace: str, registry: Registry, operator: Operator, tmp_path: Path
) -> Iterator[Fleet]:
    made = Fleet(
        cluster=cluster,
        namespace=namespace,
        work=tmp_path,
        distributor_url=operator.distributor_url,
        bundles={
            "pricing": {
                "source": f"{registry.host}/shop/pricing",
                "insecure": True,
                "healthCheck": {"mode": "sdk", "timeout": "10s"},
            }
        },
        labels={"app": "web"},
    )
    yield made
    made.stop()


def ref(registry: Registry, tag: str) -> str:
    return f"{registry.host}/shop/pricing:{tag}"


def install(
    cluster: Cluster,
    fleet: Fleet,
    registry: Registry,
    key: KeyPair,
    digests: dict[str, str],
    *,
    pods: int = 6,
    spec_rollout: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """pods (two of them internal) on v1, their apps serving it; returns the LogicBundle."""
    fleet.add(2, extra_labels=INTERNAL)
    fleet.add(pods - 2)
    manifest = logicbundle(
        "pricing",
        ref=ref(registry, "v1"),
        key=key,
        selector={"app": "web"},
        rollout=spec_rollout or rollout(),
        interval="1h",
    )
    apply(cluster, fleet.namespace, manifest)
    wait_condition(cluster, fleet.namespace, "pricing", "Ready", "True", timeout=90)
    fleet.start_apps()
    fleet.wait_serving(digests["v1"])
    return manifest


def move_to(cluster: Cluster, fleet: Fleet, manifest: dict[str, Any], new_ref: str) -> None:
    """A GitOps update: spec.source.ref changes."""
    manifest["spec"]["source"]["ref"] = new_ref
    apply(cluster, fleet.namespace, manifest)


def stage_of(cluster: Cluster, namespace: str) -> str | None:
    status = get_bundle(cluster, namespace, "pricing").get("status") or {}
    stage: str | None = status.get("stage")
    return stage


def gitops_health(obj: dict[str, Any]) -> tuple[str, str]:
    """How Argo CD (the chart's health.lua in Argo CD's own util/lua) and kstatus see ``obj``."""
    return argo.checked_health(obj)[0], kstatus(obj)[0]


def cohorts(cluster: Cluster, fleet: Fleet) -> dict[str, str]:
    """What the published rule assigns each pod (what its agent is told)."""
    return {p.name: assigned(cluster, fleet.namespace, "pricing", p.name) or "" for p in fleet.pods}


@pytest.fixture(autouse=True)
def _explain_failures(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[None]:
    """On failure, print the LogicBundle's status and events: the story of the rollout."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "namespace" in request.fixturenames:
        namespace = request.node.funcargs["namespace"]
        with contextlib.suppress(Exception):
            print(
                "status:", json.dumps(get_bundle(cluster, namespace, "pricing")["status"], indent=1)
            )
            print("events:", events(cluster, namespace, "pricing"))


def is_ready(cluster: Cluster, namespace: str) -> bool:
    ready = condition(get_bundle(cluster, namespace, "pricing"), "Ready")
    return ready is not None and ready["status"] == "True"


def lb(*args: str, cluster: Cluster) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logicbundle.cli", *args, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- the happy path ---------------------------------------------------------------------


def test_a_signed_bundle_goes_internal_then_5_percent_then_everyone_and_is_ready(
    cluster: Cluster, registry: Registry, key: KeyPair, digests: dict[str, str], fleet: Fleet
) -> None:
    manifest = install(cluster, fleet, registry, key, digests)
    seen: list[str] = []
    in_flight: dict[str, dict[str, Any]] = {}
    """The live object as first seen with each Reconciling reason (for the GitOps checks)."""

    def track() -> bool:
        obj = get_bundle(cluster, fleet.namespace, "pricing")
        stage = (obj.get("status") or {}).get("stage")
        if stage and (not seen or seen[-1] != stage):
            seen.append(stage)
        reconciling = condition(obj, "Reconciling") or {}
        if stage and reconciling.get("status") == "True":
            in_flight.setdefault(str(reconciling.get("reason")), obj)
        return False

    with Traffic(fleet):
        move_to(cluster, fleet, manifest, ref(registry, "v2"))
        wait_for(
            lambda: (
                track()
                or (
                    fleet.served().get(digests["v2"], 0) == len(fleet.pods)
                    and is_ready(cluster, fleet.namespace)
                )
            ),
            what="v2 everywhere and Ready",
            timeout=120,
            interval=0.2,
        )
    assert seen[:2] == ["internal", "canary"]
    cluster.kubectl(
        "wait", "--for=condition=Ready", "lb/pricing", "-n", fleet.namespace, "--timeout=30s"
    )
    status = get_bundle(cluster, fleet.namespace, "pricing")["status"]
    assert status["stableDigest"] == digests["v2"]
    assert status["pods"]["total"] == len(fleet.pods)
    assert status["pods"]["active"] == len(fleet.pods)
    assert {d["digest"]: d["active"] for d in status["pods"]["byDigest"]} == {
        digests["v2"]: len(fleet.pods)
    }
    reasons = [r for _, r in events(cluster, fleet.namespace, "pricing")]
    assert "RolloutStarted" in reasons and "RolloutSucceeded" in reasons
    # Argo CD and Flux (kstatus) read the live objects of this very rollout.
    # Which waits a poll catches depends on timing (a pause may elapse during the
    # analysis); at least one in-flight object was seen, and each reads as progressing.
    assert in_flight, "no in-flight status was seen"
    for reason, obj in in_flight.items():
        assert gitops_health(obj) == ("Progressing", "InProgress"), reason
    assert gitops_health(get_bundle(cluster, fleet.namespace, "pricing")) == (
        "Healthy",
        "Current",
    )


# -- automatic rollback ---------------------------------------------------------------------


@pytest.mark.parametrize(("bad", "why"), [("flaky", "error-rate"), ("slow", "latency-p95")])
def test_worse_logic_is_rolled_back_on_every_pod_and_stalls(
    cluster: Cluster,
    registry: Registry,
    key: KeyPair,
    digests: dict[str, str],
    fleet: Fleet,
    bad: str,
    why: str,
) -> None:
    manifest = install(
        cluster, fleet, registry, key, digests, spec_rollout=rollout(analysis=WITH_LATENCY)
    )
    with Traffic(fleet):
        move_to(cluster, fleet, manifest, ref(registry, bad))
        obj = wait_condition(cluster, fleet.namespace, "pricing", "Stalled", "True", timeout=120)
        fleet.wait_serving(digests["v1"], timeout=30)
    stalled = condition(obj, "Stalled")
    ready = condition(obj, "Ready")
    assert stalled is not None and ready is not None
    assert stalled["reason"] == "RolledBack"
    assert ready["status"] == "False"
    assert condition(obj, "Reconciling")["status"] == "False"  # type: ignore[index]
    # The message names the metric that failed, with its figure ("error-rate: 0.16 > max 0.05").
    assert f"{why}: " in stalled["message"], stalled["message"]
    assert ("Warning", "RolledBack") in events(cluster, fleet.namespace, "pricing")
    assert set(cohorts(cluster, fleet).values()) == {digests["v1"]}
    assert gitops_health(obj) == ("Degraded", "Failed")
    # The history keeps the rollback, with the stage that failed and the figure it failed on.
    shown = lb("history", "pricing", "-n", fleet.namespace, "-o", "json", cluster=cluster)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    rolled, installed = json.loads(shown.stdout)["history"]
    assert (rolled["digest"], rolled["outcome"]) == (digests[bad], "RolledBack"), rolled
    assert installed["outcome"] == "Installed" and installed["signer"], installed
    failed = rolled["stages"][-1]
    assert failed["verdict"] == "Failed" and f"{why}: " in failed["message"], failed


def test_a_bundle_whose_self_test_fails_is_rolled_back_with_the_reason(
    cluster: Cluster, registry: Registry, key: KeyPair, digests: dict[str, str], fleet: Fleet
) -> None:
    manifest = install(cluster, fleet, registry, key, digests)
    with Traffic(fleet):
        move_to(cluster, fleet, manifest, ref(registry, "bad-selftest"))
        obj = wait_condition(cluster, fleet.namespace, "pricing", "Stalled", "True", timeout=90)
    assert condition(obj, "Stalled")["reason"] in ("HealthCheckFailed", "RolledBack")  # type: ignore[index]
    fleet.wait_serving(digests["v1"], timeout=30)


def test_the_prometheus_provider_rolls_back_slower_logic_measured_against_stable(
    cluster: Cluster,
    registry: Registry,
    key: KeyPair,
    digests: dict[str, str],
    fleet: Fleet,
    start_prometheus: Callable[[dict[str, Any]], Prometheus],
) -> None:
    fleet.add(2, extra_labels=INTERNAL)
    fleet.add(4)
    targets = []
    analysis = {"provider": "builtin", "interval": "2s", "minSamples": 10}
    manifest = logicbundle(
        "pricing",
        ref=ref(registry, "v1"),
        key=key,
        selector={"app": "web"},
        rollout=rollout(analysis=analysis),
        interval="1h",
    )
    apply(cluster, fleet.namespace, manifest)
    wait_condition(cluster, fleet.namespace, "pricing", "Ready", "True", timeout=90)
    fleet.start_apps()
    targets = [f"127.0.0.1:{p.app_port}" for p in fleet.pods]
    prometheus = start_prometheus(
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "apps", "static_configs": [{"targets": targets}]}],
        }
    )
    p95 = (
        "histogram_quantile(0.95, sum by (le) (rate(logicbundle_sdk_call_duration_seconds_bucket"
        '{bundle="{{bundle}}", digest="{{digest}}"}[15s])))'
    )
    manifest["spec"]["rollout"]["analysis"] = {
        "provider": "prometheus",
        "interval": "3s",
        "prometheus": {"address": prometheus.url},
        "metrics": [{"name": "latency-p95", "query": p95, "maxRatioToStable": 3}],
    }
    with Traffic(fleet, per_second=150):
        wait_for(
            lambda: prometheus.query(
                p95.replace("{{bundle}}", "pricing").replace("{{digest}}", digests["v1"])
            )["result"],
            what="stable latency in Prometheus",
            timeout=60,
        )
        move_to(cluster, fleet, manifest, ref(registry, "slow"))
        obj = wait_condition(cluster, fleet.namespace, "pricing", "Stalled", "True", timeout=120)
        fleet.wait_serving(digests["v1"], timeout=30)
    assert condition(obj, "Stalled")["reason"] == "RolledBack"  # type: ignore[index]
    metrics = obj["status"]["analysis"]["metrics"]
    assert metrics[0]["name"] == "latency-p95" and metrics[0]["verdict"] == "Failed"


def test_too_little_traffic_waits_with_a_no_data_reason_and_passes_once_traffic_comes(
    cluster: Cluster, registry: Registry, key: KeyPair, digests: dict[str, str], fleet: Fleet
) -> None:
    manifest = install(cluster, fleet, registry, key, digests)
    move_to(cluster, fleet, manifest, ref(registry, "v2"))
    obj = wait_condition(
        cluster,
        fleet.namespace,
        "pricing",
        "Reconciling",
        "True",
        reason="InsufficientData",
        timeout=60,
    )
    assert "too few samples" in condition(obj, "Reconciling")["message"]  # type: ignore[index]
    assert condition(obj, "Ready")["status"] == "False"  # type: ignore[index]
    assert gitops_health(obj) == ("Progressing", "InProgress")
    with Traffic(fleet):
        wait_condition(cluster, fleet.namespace, "pricing", "Ready", "True", timeout=120)
    fleet.wait_serving(digests["v2"])


# -- restarts, scaling, supersession ----------------------------------------------------------


def test_the_operator_killed_at_each_stage_resumes_and_no_pod_changes_cohort(
    cluster: Cluster,
    registry: Registry,
    key: KeyPair,
    digests: dict[str, str],
    fleet: Fleet,
    operator: Operator,
) -> None:
    gated = rollout(gate=True)
    gated["stages"][0] = {
        "name": "internal",
        "internal": {"matchLabels": INTERNAL},
        "manualGate": True,
    }
    manifest = install(cluster, fleet, registry, key, digests, spec_rollout=gated)
    with Traffic(fleet):
        move_to(cluster, fleet, manifest, ref(registry, "v2"))
        for stage in ("internal", "canary"):
            wait_condition(
                cluster,
                fleet.namespace,
                "pricing",
                "Reconciling",
                "True",
                reason="WaitingForPromotion",
                timeout=90,
            )
            assert stage_of(cluster, fleet.namespace) == stage
            before = cohorts(cluster, fleet)
            operator.crash_and_restart(cluster)
            wait_condition(
                cluster,
                fleet.namespace,
                "pricing",
                "Reconciling",
                "True",
                reason="WaitingForPromotion",
                timeout=30,
            )
            assert stage_of(cluster, fleet.namespace) == stage
            assert cohorts(cluster, fleet) == before, f"cohorts moved at {stage}"
            promoted = lb(
                "promote",
                "pricing",
                "-n",
                fleet.namespace,
                "--wait",
                "--timeout",
                "60s",
                cluster=cluster,
            )
            assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        # The last stage: killed while every pod moves to v2, and still Ready at the end.
        operator.crash_and_restart(cluster)
        wait_condition(cluster, fleet.namespace, "pricing", "Ready", "True", timeout=90)
        fleet.wait_serving(digests["v2"])
    assert set(cohorts(cluster, fleet).values()) == {digests["v2"]}


class Moves:
    """What each pod is told and serves over a test, to check that none moves backwards.

    Three histories per pod, consecutive repeats dropped: what every stored
    status tells it (from a watch, so no stored version is missed), what the
    state ConfigMap tells it (the slow path; sampled), and what its app
    serves (sampled).  Call :meth:`sample` from every wait.
    """

    def __init__(self, cluster: Cluster, fleet: Fleet) -> None:
        self.cluster, self.fleet = cluster, fleet
        self.watch = BundleWatch(cluster, fleet.namespace, "pricing")
        self.facts = {
            p.name: facts_of(
                cluster.request("GET", f"/api/v1/namespaces/{fleet.namespace}/pods/{p.name}")
            )
            for p in fleet.pods
        }
        self.told: dict[str, dict[str, list[str]]] = {
            path: {p.name: [] for p in fleet.pods} for path in ("status", "configmap", "app")
        }

    def _note(self, path: str, pod: str, digest: str | None) -> None:
        seen = self.told[path][pod]
        if digest and (not seen or seen[-1] != digest):
            seen.append(digest)

    def _note_state(self, path: str, state: contract.RolloutState | None) -> None:
        if state is None:
            return
        for pod, facts in self.facts.items():
            target = contract.target_of(state, facts)
            self._note(path, pod, target.digest if target is not None else None)

    def sample(self) -> bool:
        """Record what each pod is told and serves now; False, to open a wait's condition."""
        for obj in self.watch.drain():
            rule = rule_of(obj)
            self._note_state("status", rule.state if rule is not None else None)
        stored = published_state(self.cluster, self.fleet.namespace, "pricing")
        self._note_state("configmap", contract.state_from_json(stored) if stored else None)
        for pod in self.fleet.pods:
            self._note("app", pod.name, pod.served_digest())
        return False

    def backwards(self, *, before: str, after: str) -> list[str]:
        """Every pod and path whose history has ``before`` and, later, ``after``."""
        return [
            f"{path} {pod}: {' -> '.join(d[7:19] for d in seen)}"
            for path, pods in self.told.items()
            for pod, seen in pods.items()
            if before in seen and after in seen[seen.index(before) + 1 :]
        ]

    def back_and_forth(self, *, candidate: str, stable: str) -> list[str]:
        """Every pod and path told ``candidate``, then ``stable``, then ``candidate`` again."""
        out = []
        for path, pods in self.told.items():
            for pod, seen in pods.items():
                if candidate in seen:
                    rest = seen[seen.index(candidate) + 1 :]
                    if stable in rest and candidate in rest[rest.index(stable) + 1 :]:
                        out.append(f"{path} {pod}: {' -> '.join(d[7:19] for d in seen)}")
        return out

    def stop(self) -> None:
        self.watch.stop()


@contextlib.contextmanager
def operator_paused_at(
    point: str, *, operator: Operator, cluster: Cluster, work: Path
) -> Iterator[Path]:
    """The operator restarted with the test pause ``point`` (:mod:`logicbundle.controller._seams`).

    The module's operator is killed and started again with the pause (a
    SIGKILL, as :meth:`Operator.crash_and_restart` does at every kill here).
    Yields the marker the paused reconcile writes.  The test kills the operator
    there (which drops the pause); were the test to fail before, the operator
    is restarted without it on the way out, so no later test meets a pause
    point.
    """
    pause_dir = work / "pause"
    pause_dir.mkdir()
    operator.crash_and_restart(cluster, env={PAUSE_ENV: point, PAUSE_DIR_ENV: str(pause_dir)})
    paused = operator.process
    try:
        # Acting before the test goes on: one reconcile done (of the bundle, at rest).
        wait_for(
            lambda: _reconciles(operator) >= 1,
            what="the paused-at operator's first reconcile",
            timeout=60,
            watch=[operator.process],
        )
        yield pause_dir / point
    finally:
        if operator.process is paused:
            operator.crash_and_restart(cluster)


def _reconciles(operator: Operator) -> float:
    """How many reconciles the running operator finished (from its metrics)."""
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("logicbundle_reconcile_seconds_count")
    )


def _wait_for_marker(marker: Path, operator: Operator, moves: Moves, namespace: str) -> None:
    try:
        wait_for(
            lambda: moves.sample() or marker.exists(),
            what=f"the operator paused at {marker.name}",
            timeout=120,
            watch=[operator.process],
        )
    except HarnessError as exc:
        raise AssertionError(f"{exc}\n{_operator_story(operator, moves, namespace)}") from exc
    assert marker.read_text() == f"{namespace}/pricing"
    assert operator.process.alive()


def _operator_story(operator: Operator, moves: Moves, namespace: str) -> str:
    """What the operator did, for a failure: its reconciles and verdicts, the bundle's spec."""
    obj = get_bundle(moves.cluster, namespace, "pricing")
    lines = [f"generation {obj['metadata'].get('generation')}: {obj['spec']['source']['ref']}"]
    with contextlib.suppress(OSError):
        url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        lines += [
            line
            for line in text.splitlines()
            if line.startswith(("logicbundle_reconcile_seconds_count", "logicbundle_analysis"))
        ]
    return "\n".join(lines)


def _status(cluster: Cluster, namespace: str) -> dict[str, Any]:
    status: dict[str, Any] = get_bundle(cluster, namespace, "pricing").get("status") or {}
    return status


def _wait_finished_on_v2(
    cluster: Cluster, fleet: Fleet, operator: Operator, moves: Moves, digests: dict[str, str]
) -> None:
    """Wait, sampling every pod's moves, until v2 is everywhere and the bundle Ready."""
    wait_for(
        lambda: (
            moves.sample()
            or (
                is_ready(cluster, fleet.namespace)
                and fleet.served().get(digests["v2"], 0) == len(fleet.pods)
            )
        ),
        what="the rollout finished: v2 everywhere and Ready",
        timeout=120,
        watch=[operator.process],
    )
    moves.sample()


def _assert_on_v2_and_never_back(
    cluster: Cluster, fleet: Fleet, moves: Moves, digests: dict[str, str]
) -> None:
    assert _status(cluster, fleet.namespace)["stableDigest"] == digests["v2"]
    assert set(cohorts(cluster, fleet).values()) == {digests["v2"]}
    assert moves.backwards(before=digests["v2"], after=digests["v1"]) == []


def test_the_operator_killed_with_an_analysis_judged_but_not_written_resumes_forward(
    cluster: Cluster,
    registry: Registry,
    key: KeyPair,
    digests: dict[str, str],
    fleet: Fleet,
    operator: Operator,
    tmp_path: Path,
) -> None:
    """Issue 11 fault matrix: SIGKILL during analysis (seam ``analysis``)."""
    manifest = install(cluster, fleet, registry, key, digests)
    fleet.project_states(every=0.5)
    moves = Moves(cluster, fleet)
    try:
        with (
            operator_paused_at(
                "analysis", operator=operator, cluster=cluster, work=tmp_path
            ) as marker,
            Traffic(fleet),
        ):
            move_to(cluster, fleet, manifest, ref(registry, "v2"))
            _wait_for_marker(marker, operator, moves, fleet.namespace)
            judged = (_status(cluster, fleet.namespace).get("analysis") or {}).get("lastMeasuredAt")
            operator.crash_and_restart(cluster)
            # The restarted operator's first verdict written: it reconciled, and judged again.
            wait_for(
                lambda: (
                    moves.sample()
                    or (_status(cluster, fleet.namespace).get("analysis") or {}).get(
                        "lastMeasuredAt"
                    )
                    not in (None, judged)
                ),
                what="a verdict written by the restarted operator",
                timeout=60,
                watch=[operator.process],
            )
            _wait_finished_on_v2(cluster, fleet, operator, moves, digests)
    finally:
        moves.stop()
    _assert_on_v2_and_never_back(cluster, fleet, moves, digests)


def test_the_operator_killed_with_a_rollback_decided_but_not_written_still_rolls_back(
    cluster: Cluster,
    registry: Registry,
    key: KeyPair,
    digests: dict[str, str],
    fleet: Fleet,
    operator: Operator,
    tmp_path: Path,
) -> None:
    """Issue 11 fault matrix: SIGKILL during a rollback (seam ``rollback``).

    Killed when the core has decided the rollback and nothing of it is
    written: the stored status still has the bad candidate in flight, so the
    restarted operator must judge it again and roll it back, and no pod that
    went back to stable may be given the candidate again.
    """
    manifest = install(cluster, fleet, registry, key, digests)
    fleet.project_states(every=0.5)
    moves = Moves(cluster, fleet)
    bad = digests["flaky"]
    try:
        with (
            operator_paused_at(
                "rollback", operator=operator, cluster=cluster, work=tmp_path
            ) as marker,
            Traffic(fleet),
        ):
            move_to(cluster, fleet, manifest, ref(registry, "flaky"))
            _wait_for_marker(marker, operator, moves, fleet.namespace)
            stored = get_bundle(cluster, fleet.namespace, "pricing")
            assert stored["status"].get("candidateDigest") == bad, "the rollback was written"
            assert (condition(stored, "Stalled") or {}).get("status") != "True"
            operator.crash_and_restart(cluster)
            # Only the restarted operator can have written the rollback.
            wait_condition(
                cluster,
                fleet.namespace,
                "pricing",
                "Stalled",
                "True",
                reason="RolledBack",
                timeout=90,
                watch=(operator.process,),
            )
            wait_for(
                lambda: moves.sample() or fleet.served().get(digests["v1"], 0) == len(fleet.pods),
                what="every app back on v1",
                timeout=60,
                watch=[operator.process],
            )
            moves.sample()
    finally:
        moves.stop()
    assert _status(cluster, fleet.namespace)["stableDigest"] == digests["v1"]
    assert set(cohorts(cluster, fleet).values()) == {digests["v1"]}
    assert any(bad in seen for seen in moves.told["app"].values()), "no pod ever ran flaky"
    assert moves.back_and_forth(candidate=bad, stable=digests["v1"]) == []


def test_the_operator_killed_between_the_status_write_and_the_publication_publishes_it(
    cluster: Cluster,
    registry: Registry,
    key: KeyPair,
    digests: dict[str, str],
    fleet: Fleet,
    operator: Operator,
    tmp_path: Path,
) -> None:
    """Issue 11 fault matrix: SIGKILL between the status write and the pod writes.

    The pod writes of today's design are the published state: the
    ``lb-state-*`` ConfigMap (projected into every pod here) and the
    distributor.  Killed with the rollout's start stored but not published,
    the restarted operator publishes what the status says, and the rollout
    finishes with no pod moving back.
    """
    manifest = install(cluster, fleet, registry, key, digests)
    fleet.project_states(every=0.5)
    moves = Moves(cluster, fleet)
    try:
        with (
            operator_paused_at(
                "status-written", operator=operator, cluster=cluster, work=tmp_path
            ) as marker,
            Traffic(fleet),
        ):
            move_to(cluster, fleet, manifest, ref(registry, "v2"))
            _wait_for_marker(marker, operator, moves, fleet.namespace)
            target = _status(cluster, fleet.namespace)["targetState"]
            assert target.get("candidate") == digests["v2"], target
            behind = published_state(cluster, fleet.namespace, "pricing") or {}
            assert behind.get("candidate") != digests["v2"], "the state was published"
            operator.crash_and_restart(cluster)
            # Only the restarted operator writes the ConfigMap: it caught up with the status.
            wait_for(
                lambda: (
                    moves.sample()
                    or (published_state(cluster, fleet.namespace, "pricing") or {}).get("candidate")
                    == digests["v2"]
                ),
                what="the restarted operator's publication of the stored state",
                timeout=60,
                watch=[operator.process],
            )
            _wait_finished_on_v2(cluster, fleet, operator, moves, digests)
    finally:
        moves.stop()
    _assert_on_v2_and_never_back(cluster, fleet, moves, digests)


def test_pods_added_mid_rollout_land_on_the_version_of_their_cohort(
    cluster: Cluster, registry: Registry, key: KeyPair, digests: dict[str, str], fleet: Fleet
) -> None:
    manifest = install(cluster, fleet, registry, key, digests, spec_rollout=rollout(gate=True))
    with Traffic(fleet):
        move_to(cluster, fleet, manifest, ref(registry, "v2"))
        wait_condition(
            cluster,
            fleet.namespace,
            "pricing",
            "Reconciling",
            "True",
            reason="WaitingForPromotion",
            timeout=90,
        )
        new = fleet.add(4)
        wait_for(
            lambda: all(cohorts(cluster, fleet)[p.name] for p in new),
            what="the new pods assigned",
            timeout=30,
        )
        fleet.start_apps(new)
        assigned = cohorts(cluster, fleet)
        on_candidate = sorted(n for n, d in assigned.items() if d == digests["v2"])
        # The two internal pods keep v2 from the internal stage (a pod never goes v2 -> v1 ->
        # v2 within a rollout) and fill the 5 % share of 10 pods (one pod) on their own, so
        # every pod added mid-rollout lands on v1.
        assert on_candidate == ["web-0", "web-1"], assigned
        assert all(assigned[p.name] == digests["v1"] for p in new)


def test_a_new_ref_during_a_rollout_supersedes_it_and_strands_no_pod(
    cluster: Cluster, registry: Registry, key: KeyPair, digests: dict[str, str], fleet: Fleet
) -> None:
    manifest = install(cluster, fleet, registry, key, digests, spec_rollout=rollout(gate=True))
    with Traffic(fleet):
        move_to(cluster, fleet, manifest, ref(registry, "v2"))
        at_gate = wait_condition(
            cluster,
            fleet.namespace,
            "pricing",
            "Reconciling",
            "True",
            reason="WaitingForPromotion",
            timeout=90,
        )
        assert gitops_health(at_gate) == ("Suspended", "InProgress")
        move_to(cluster, fleet, manifest, ref(registry, "v2b"))
        wait_for(
            lambda: (
                (get_bundle(cluster, fleet.namespace, "pricing").get("status") or {}).get(
                    "candidateDigest"
                )
                == digests["v2b"]
            ),
            what="v2b the new candidate",
            timeout=60,
        )
        wait_for(
            lambda: digests["v2"] not in cohorts(cluster, fleet).values(),
            what="no pod left on the superseded digest",
            timeout=30,
        )
    assert ("Normal", "Superseded") in events(cluster, fleet.namespace, "pricing")


def test_a_logicbundle_deleted_mid_rollout_puts_every_pod_back_on_stable_before_letting_go(
    cluster: Cluster, registry: Registry, key: KeyPair, digests: dict[str, str], fleet: Fleet
) -> None:
    """Issue 11, defect 8: deletion mid-rollout, with real agents and apps.

    The finalizer holds the LogicBundle until every agent has swapped back and
    reported it: when the object is gone, every app already serves stable.  A
    release that did nothing would leave the internal pods on the candidate.
    """
    manifest = install(cluster, fleet, registry, key, digests, spec_rollout=rollout(gate=True))
    ns = fleet.namespace
    with Traffic(fleet):
        move_to(cluster, fleet, manifest, ref(registry, "v2"))
        wait_condition(
            cluster, ns, "pricing", "Reconciling", "True", reason="WaitingForPromotion", timeout=90
        )
        # Mid-rollout: the candidate is served (the internal pods at least), not by all.
        fleet.wait_serving(digests["v2"], count=2)
        assert fleet.served().get(digests["v1"], 0) == len(fleet.pods) - 2
        watch = BundleWatch(cluster, ns, "pricing")
        try:
            cluster.kubectl("delete", "lb", "pricing", "-n", ns, "--wait=false")
            wait_for(
                lambda: _gone(cluster, ns),
                what="the LogicBundle released and gone (its finalizer cleared)",
                timeout=90,
            )
            # Checked at once: the finalizer was held until the agents had swapped back.
            assert fleet.served() == {digests["v1"]: len(fleet.pods)}
            deleting = [o for o in watch.drain() if o["metadata"].get("deletionTimestamp")]
        finally:
            watch.stop()
    # While it was held, the status published "every pod on stable" (what the distributor
    # replicas follow), newer than the state in flight.
    released = [(o.get("status") or {}).get("targetState") or {} for o in deleting]
    in_flight = [t for t in released if t.get("candidate")]
    back = [t for t in released if t.get("stable") == digests["v1"] and not t.get("candidate")]
    assert back, released
    assert all(b["revision"] > t["revision"] for b in back for t in in_flight), released
    # Nothing is left for the agents' slow path, and the pods stay on stable, unmanaged.
    assert published_state(cluster, ns, "pricing") is None
    for pod in fleet.pods:
        assert pod.served_digest() == digests["v1"], pod.name


def _gone(cluster: Cluster, namespace: str) -> bool:
    try:
        get_bundle(cluster, namespace, "pricing")
    except HarnessError as exc:
        if "404" in str(exc):
            return True
        raise
    return False


def test_a_tag_moved_in_the_registry_is_resolved_every_interval_and_rolled_out(
    cluster: Cluster, registry: Registry, key: KeyPair, digests: dict[str, str], fleet: Fleet
) -> None:
    """No spec change at all: the tag moves, and the next resolve starts a rollout."""
    first = push_bundle(
        registry.host,
        BUNDLES / "pricing-v1",
        repository="shop/pricing",
        tag="moving",
        version="1.0.7",
        key=key,
    )
    fleet.add(2, extra_labels=INTERNAL)
    fleet.add(2)
    manifest = logicbundle(
        "pricing",
        ref=ref(registry, "moving"),
        key=key,
        selector={"app": "web"},
        rollout={"stages": [{"name": "everyone", "all": True}], "skipAnalysis": True},
        interval="2s",
    )
    apply(cluster, fleet.namespace, manifest)
    wait_condition(cluster, fleet.namespace, "pricing", "Ready", "True", timeout=90)
    fleet.start_apps()
    fleet.wait_serving(first)
    generation = get_bundle(cluster, fleet.namespace, "pricing")["metadata"]["generation"]

    moved = push_bundle(
        registry.host,
        BUNDLES / "pricing-v2",
        repository="shop/pricing",
        tag="moving",
        version="2.0.7",
        key=key,
    )
    assert moved != first

    fleet.wait_serving(moved, timeout=60)

    def settled() -> dict[str, Any] | None:
        found = get_bundle(cluster, fleet.namespace, "pricing")
        stable = (found.get("status") or {}).get("stableDigest")
        ready = (condition(found, "Ready") or {}).get("status")
        return found if stable == moved and ready == "True" else None

    obj = wait_for(settled, what="the moved tag's digest stable and Ready", timeout=60)
    assert obj["metadata"]["generation"] == generation, "the spec was never touched"
    assert set(cohorts(cluster, fleet).values()) == {moved}


# -- manual actions through the CLI ------------------------------------------------------------


def test_promote_abort_retry_and_rollback_through_the_cli(
    cluster: Cluster, registry: Registry, key: KeyPair, digests: dict[str, str], fleet: Fleet
) -> None:
    manifest = install(cluster, fleet, registry, key, digests, spec_rollout=rollout(gate=True))
    ns = fleet.namespace
    with Traffic(fleet):
        move_to(cluster, fleet, manifest, ref(registry, "v2"))
        wait_condition(
            cluster, ns, "pricing", "Reconciling", "True", reason="WaitingForPromotion", timeout=90
        )
        aborted = lb("abort", "pricing", "-n", ns, "--wait", "--timeout", "60s", cluster=cluster)
        assert aborted.returncode == 0, aborted.stdout + aborted.stderr
        obj = wait_condition(cluster, ns, "pricing", "Stalled", "True", reason="Aborted")
        fleet.wait_serving(digests["v1"])
        retried = lb("retry", "pricing", "-n", ns, "--wait", "--timeout", "60s", cluster=cluster)
        assert retried.returncode == 0, retried.stdout + retried.stderr
        wait_condition(
            cluster, ns, "pricing", "Reconciling", "True", reason="WaitingForPromotion", timeout=90
        )
        promoted = lb("promote", "pricing", "-n", ns, "--wait", "--timeout", "60s", cluster=cluster)
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        wait_condition(cluster, ns, "pricing", "Ready", "True", timeout=90)
        fleet.wait_serving(digests["v2"])
        back = lb(
            "rollback",
            "pricing",
            "--to",
            digests["v1"],
            "-n",
            ns,
            "--wait",
            "--timeout",
            "60s",
            cluster=cluster,
        )
        assert back.returncode == 0, back.stdout + back.stderr
        fleet.wait_serving(digests["v1"])
    obj = get_bundle(cluster, ns, "pricing")
    assert obj["status"]["stableDigest"] == digests["v1"]
    status = lb("status", "pricing", "-n", ns, cluster=cluster)
    assert status.returncode == 0 and "pricing" in status.stdout
    # Every rollout is in the history, newest first, with how it ended and who signed it.
    shown = lb("history", "pricing", "-n", ns, "-o", "json", cluster=cluster)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    entries = json.loads(shown.stdout)["history"]
    v1, v2 = digests["v1"], digests["v2"]
    assert [(e["digest"], e["outcome"]) for e in entries] == [
        (v1, "Restored"),
        (v2, "Promoted"),
        (v2, "Aborted"),
        (v1, "Installed"),
    ], entries
    assert all(e.get("signer") for e in entries), entries
    promoted = entries[1]
    assert promoted["stages"] and promoted["stages"][-1]["verdict"] in ("Passed", "Promoted")
    text = lb("history", "pricing", "-n", ns, cluster=cluster)
    assert text.returncode == 0, text.stderr
    for digest, outcome in ((v1, "Restored"), (v2, "Promoted"), (v2, "Aborted")):
        assert f"  {digest.removeprefix('sha256:')[:12]}  {outcome}" in text.stdout, text.stdout
