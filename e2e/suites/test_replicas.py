"""Distributor replicas that scale out, and a leader that reads only their sums (issue 10).

The operator runs with its own distributor (the replicas' upstream for bytes)
and reads the agents' reports from two ``logicbundle distributor`` replicas,
each serving half of the fleet's real agents, as a Service would spread
them.  Every process has a real pod-bound token (:mod:`e2e.harness.replicas`).
Checked here:

* a staged rollout completes with the agents talking only to the replicas:
  the operator's own distributor receives no report, each replica fetched
  each digest's bytes from the operator once, and the status counts come
  from the replicas' sums;
* every replica killed mid-rollout: the leader does not advance on the
  missing data, the agents converge to the published state through the
  slow path (the state ConfigMap, copied into each pod like the kubelet
  does), and once replicas are back the agents report and the rollout
  completes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2e.harness.cluster import Cluster
from e2e.harness.fleet import Fleet, Traffic
from e2e.harness.operator import (
    EXAMPLES,
    KeyPair,
    Operator,
    apply,
    condition,
    get_bundle,
    logicbundle,
    push_bundle,
    wait_condition,
)
from e2e.harness.proc import free_port, wait_for
from e2e.harness.replicas import (
    OPERATOR_ACCOUNT,
    READER_ACCOUNT,
    REPLICA_ACCOUNT,
    Replica,
    stand_in,
)
from e2e.harness.services import Registry
from logicbundle.api import actions, names

BUNDLES = EXAMPLES / "bundles"
INTERNAL = {names.LABEL_COHORT: names.COHORT_INTERNAL}


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return KeyPair.generate()


@pytest.fixture(scope="module")
def digests(registry: Registry, key: KeyPair) -> dict[str, str]:
    return {
        tag: push_bundle(
            registry.host,
            BUNDLES / f"pricing-{tag}",
            repository="replicas/pricing",
            tag=tag,
            version="1.0.0",
            key=key,
        )
        for tag in ("v1", "v2")
    }


@dataclass
class Stack:
    operator: Operator
    replicas: list[Replica]
    fleet: Fleet
    run_dir: Path
    tokens: list[Path]
    namespace: str

    def restart_replicas(self, cluster: Cluster, generation: int) -> None:
        self.replicas = [
            Replica.start(
                cluster,
                self.run_dir,
                name=f"replica-{i}-gen{generation}",
                namespace=self.namespace,
                upstream=self.operator.distributor_url,
                token_file=self.tokens[i],
                operator_namespace=self.namespace,
                port=old.port,  # behind the same Service address
            )
            for i, old in enumerate(self.replicas)
        ]


@pytest.fixture
def stack(
    cluster: Cluster,
    logicbundle_crd: str,
    registry: Registry,
    namespace: str,
    tmp_path: Path,
) -> Iterator[Stack]:
    cluster.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": READER_ACCOUNT}},
    )
    operator_token = tmp_path / "operator.token"
    stand_in(cluster, namespace, "operator-0", OPERATOR_ACCOUNT, operator_token)
    tokens = []
    for i in range(2):
        token = tmp_path / f"replica-{i}.token"
        stand_in(cluster, namespace, f"distributor-{i}", REPLICA_ACCOUNT, token)
        tokens.append(token)
    ports = [free_port(), free_port()]
    operator = Operator.start(
        cluster,
        tmp_path / "operator",
        extra=(
            "--namespace",
            namespace,
            "--operator-namespace",
            namespace,
            *[f"--distributor-replica=http://127.0.0.1:{port}" for port in ports],
            f"--distributor-service-account={namespace}:{REPLICA_ACCOUNT}",
            f"--replica-token-file={operator_token}",
        ),
    )
    replicas = [
        Replica.start(
            cluster,
            tmp_path,
            name=f"replica-{i}",
            namespace=namespace,
            upstream=operator.distributor_url,
            token_file=tokens[i],
            operator_namespace=namespace,
            port=ports[i],
        )
        for i in range(2)
    ]
    fleet = Fleet(
        cluster=cluster,
        namespace=namespace,
        work=tmp_path / "fleet",
        distributor_url=replicas[0].url,
        replica_urls=[r.url for r in replicas],
        bundles={
            "pricing": {
                "source": f"{registry.host}/replicas/pricing",
                "insecure": True,
                "healthCheck": {"mode": "sdk", "timeout": "10s"},
            }
        },
        labels={"app": "web"},
    )
    made = Stack(operator, replicas, fleet, tmp_path, tokens, namespace)
    try:
        yield made
    finally:
        fleet.stop()
        for replica in made.replicas:
            replica.process.stop()
        operator.stop()


def _metric(url: str, name: str) -> float:
    """The sum of a counter's samples on a distributor's /metrics (0 when absent)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(m.group(1))
        for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    )


def _install(cluster: Cluster, stack: Stack, registry: Registry, key: KeyPair, rollout: Any) -> Any:
    stack.fleet.add(2, extra_labels=INTERNAL)
    stack.fleet.add(2)
    manifest = logicbundle(
        "pricing",
        ref=f"{registry.host}/replicas/pricing:v1",
        key=key,
        selector={"app": "web"},
        rollout=rollout,
        interval="1h",
    )
    apply(cluster, stack.namespace, manifest)
    wait_condition(cluster, stack.namespace, "pricing", "Ready", "True", timeout=120)
    stack.fleet.start_apps()
    return manifest


def test_two_replicas_serve_a_staged_rollout_and_the_leader_reads_only_their_sums(
    cluster: Cluster, registry: Registry, key: KeyPair, digests: dict[str, str], stack: Stack
) -> None:
    rollout = {
        "stages": [
            {"name": "internal", "internal": {"matchLabels": INTERNAL}, "pause": "1s"},
            {"name": "everyone", "all": True},
        ],
        "analysis": {
            "provider": "builtin",
            "interval": "2s",
            "minSamples": 5,
            "metrics": [{"name": "error-rate", "builtin": "errorRate", "max": 0.05}],
        },
    }
    manifest = _install(cluster, stack, registry, key, rollout)
    fleet = stack.fleet
    fleet.wait_serving(digests["v1"])
    with Traffic(fleet):
        manifest["spec"]["source"]["ref"] = f"{registry.host}/replicas/pricing:v2"
        apply(cluster, stack.namespace, manifest)
        wait_for(
            lambda: (
                fleet.served().get(digests["v2"], 0) == len(fleet.pods)
                and (condition(get_bundle(cluster, stack.namespace, "pricing"), "Ready") or {}).get(
                    "status"
                )
                == "True"
            ),
            what="v2 everywhere and Ready",
            timeout=180,
            watch=[stack.operator.process, *(r.process for r in stack.replicas)],
        )
    status = get_bundle(cluster, stack.namespace, "pricing")["status"]
    assert status["stableDigest"] == digests["v2"]
    # The counts are the replicas' sums: both halves of the fleet are in them.
    assert status["pods"]["active"] == len(fleet.pods) == 4
    assert status["analysis"]["verdict"] == "Passed", status["analysis"]
    # No agent talks to the operator's own distributor; each replica got its reports.
    operator_reports = _metric(
        stack.operator.distributor_url, "logicbundle_distributor_reports_received_total"
    )
    assert operator_reports == 0
    # `logicbundle status --pods`: each pod's report, from both replicas, with a token of
    # the status-reader account (any other account is refused).
    listed = _status_pods(cluster, stack, reader=f"{stack.namespace}:{READER_ACCOUNT}")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["pod"] for r in rows] == sorted(p.name for p in fleet.pods)
    assert all(r["active"] == digests["v2"] and r["healthy"] for r in rows), rows
    refused = _status_pods(cluster, stack, reader=f"{stack.namespace}:{REPLICA_ACCOUNT}")
    assert refused.returncode == 1 and "HTTP 403" in refused.stderr, refused.stderr
    for replica in stack.replicas:
        assert _metric(replica.url, "logicbundle_distributor_reports_received_total") > 0
        # The verified bytes, from the operator, once per digest per replica.
        assert replica.cached() == {digests["v1"], digests["v2"]}
        log = replica.process.log_path.read_text()
        for digest in (digests["v1"], digests["v2"]):
            assert log.count(f"cached {digest} from the operator") == 1, replica.process.name


def test_every_replica_killed_mid_rollout_agents_converge_through_the_slow_path(
    cluster: Cluster, registry: Registry, key: KeyPair, digests: dict[str, str], stack: Stack
) -> None:
    rollout = {
        "stages": [
            {"name": "internal", "internal": {"matchLabels": INTERNAL}, "manualGate": True},
            {"name": "everyone", "all": True},
        ],
        "skipAnalysis": True,
    }
    manifest = _install(cluster, stack, registry, key, rollout)
    fleet = stack.fleet
    fleet.wait_serving(digests["v1"])
    fleet.project_states(every=1.0)  # what the kubelet does with the state ConfigMap
    manifest["spec"]["source"]["ref"] = f"{registry.host}/replicas/pricing:v2"
    apply(cluster, stack.namespace, manifest)
    wait_condition(
        cluster,
        stack.namespace,
        "pricing",
        "Reconciling",
        "True",
        reason="WaitingForPromotion",
        timeout=120,
        watch=(stack.operator.process,),
    )
    fleet.wait_serving(digests["v2"], count=2)

    for replica in stack.replicas:
        replica.kill()
    # Every agent notices (its long-poll fails) before the next state is published.
    wait_for(
        lambda: all(_agent_fast_path(pod.agent_port) == 0 for pod in fleet.pods),
        what="every agent off the fast path",
        timeout=60,
    )
    value = actions.format_action("promote", token="replicas-down")
    cluster.request(
        "PATCH",
        f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{stack.namespace}/{names.PLURAL}/pricing",
        {"metadata": {"annotations": {names.ANNOTATION_REQUESTED_ACTION: value}}},
    )
    # The promote is published (the state ConfigMap), and every agent follows it
    # through the slow path, though no replica answers.
    fleet.wait_serving(digests["v2"], timeout=120)
    status = get_bundle(cluster, stack.namespace, "pricing")["status"]
    assert status["stage"] == "everyone" and status["stableDigest"] == digests["v1"], (
        "the leader must not complete a stage it cannot see"
    )
    assert status["lastHandledAction"] == value
    reconciling = condition(get_bundle(cluster, stack.namespace, "pricing"), "Reconciling")
    assert reconciling is not None and reconciling["reason"] == "WaitingForPods", reconciling

    # Replicas back: the agents report at once, and the rollout completes.
    stack.restart_replicas(cluster, generation=2)
    wait_condition(
        cluster,
        stack.namespace,
        "pricing",
        "Ready",
        "True",
        timeout=120,
        watch=(stack.operator.process, *(r.process for r in stack.replicas)),
    )
    status = get_bundle(cluster, stack.namespace, "pricing")["status"]
    assert status["stableDigest"] == digests["v2"]
    assert status["pods"]["active"] == len(fleet.pods)


def _status_pods(cluster: Cluster, stack: Stack, *, reader: str) -> Any:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "logicbundle.cli",
            "status",
            "pricing",
            "-n",
            stack.namespace,
            "--pods",
            "-o",
            "json",
            "--reader",
            reader,
            *[f"--distributor={replica.url}" for replica in stack.replicas],
            "--kubeconfig",
            str(cluster.kubeconfig),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _agent_fast_path(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    found = re.search(r"^logicbundle_agent_fast_path_up (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None
