"""A stage judged on the application's runtime health, end to end (issue 12, part 3).

The operator runs as a process with its distributor; every kwok pod has a real
agent and a real sample app (:mod:`e2e.harness.fleet`).  The candidate,
``examples/bundles/pricing-hungry``, answers every call as v1 does, but its
version starts 48 threads and holds 96 MiB in each process that activates it:
the SDK samples its process when the agent asks for stats, the distributor sums
the figures per digest, and the ``threadCount`` and ``residentMemory`` builtin
metrics judge the candidate's pods against the stable ones'.  Prometheus scrapes
the operator meanwhile, so the per-version health series
(``logicbundle_version_*``) are checked as a real scrape sees them.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e.harness.cluster import Cluster
from e2e.harness.fleet import Fleet
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
from e2e.harness.proc import wait_for
from e2e.harness.services import Prometheus, Registry
from logicbundle.api import names

BUNDLES = EXAMPLES / "bundles"
INTERNAL = {names.LABEL_COHORT: names.COHORT_INTERNAL}
MiB = 2**20
HEALTH = {
    "provider": "builtin",
    # The first measurement comes at the stage's start (no candidate pod reports yet: no
    # data); the next one 10 s later, which leaves the candidate's series several scrapes.
    "interval": "10s",
    "metrics": [
        {"name": "memory", "builtin": "residentMemory", "maxRatioToStable": 2, "minSamples": 2},
        {"name": "threads", "builtin": "threadCount", "maxRatioToStable": 2, "minSamples": 2},
    ],
}
ROLLOUT = {
    "stages": [
        {"name": "internal", "internal": {"matchLabels": INTERNAL}, "pause": "2s"},
        {"name": "everyone", "all": True},
    ],
    "analysis": HEALTH,
}


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return KeyPair.generate()


@pytest.fixture(scope="module")
def digests(registry: Registry, key: KeyPair) -> dict[str, str]:
    return {
        name: push_bundle(
            registry.host,
            BUNDLES / f"pricing-{name}",
            repository="health/pricing",
            tag=name,
            version=version,
            key=key,
        )
        for name, version in (("v1", "1.0.0"), ("hungry", "2.3.0-hungry"))
    }


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
                "source": f"{registry.host}/health/pricing",
                "insecure": True,
                "healthCheck": {"mode": "sdk", "timeout": "10s"},
            }
        },
        labels={"app": "web"},
    )
    yield made
    made.stop()


@pytest.fixture(autouse=True)
def _explain_failures(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[None]:
    """On failure, print the LogicBundle's status: the story of the rollout."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "namespace" in request.fixturenames:
        namespace = request.node.funcargs["namespace"]
        with contextlib.suppress(Exception):
            status = get_bundle(cluster, namespace, "pricing")["status"]
            print("status:", json.dumps(status, indent=1))


def _event_messages(cluster: Cluster, namespace: str, reason: str) -> list[str]:
    items = cluster.request("GET", f"/api/v1/namespaces/{namespace}/events")["items"]
    return [
        str(e.get("message") or "")
        for e in items
        if e["involvedObject"].get("kind") == names.KIND and e.get("reason") == reason
    ]


def _operator_series(operator: Operator, namespace: str) -> dict[tuple[str, str, str], float]:
    """(series, cohort, digest) -> value of the operator's version health series now."""
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, sample.labels["cohort"], sample.labels["digest"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("logicbundle_version_")
        for sample in family.samples
        if sample.labels.get("namespace") == namespace
    }


def _scraped(prometheus: Prometheus, promql: str) -> dict[tuple[str, str], float]:
    """(cohort, digest) -> value of an instant query over the operator's scraped series."""
    return {
        (r["metric"]["cohort"], r["metric"]["digest"]): float(r["value"][1])
        for r in prometheus.query(promql)["result"]
    }


def test_a_candidate_whose_pods_grow_threads_and_memory_fails_its_stage_and_rolls_back(
    cluster: Cluster,
    registry: Registry,
    key: KeyPair,
    digests: dict[str, str],
    fleet: Fleet,
    operator: Operator,
    start_prometheus: Callable[[dict[str, Any]], Prometheus],
) -> None:
    v1, hungry = digests["v1"], digests["hungry"]
    namespace = fleet.namespace
    prometheus = start_prometheus(
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "operator",
                    "static_configs": [{"targets": [f"127.0.0.1:{operator.metrics_port}"]}],
                }
            ],
        }
    )
    fleet.add(2, extra_labels=INTERNAL)
    fleet.add(4)
    manifest = logicbundle(
        "pricing",
        ref=f"{registry.host}/health/pricing:v1",
        key=key,
        selector={"app": "web"},
        rollout=ROLLOUT,
        interval="1h",
    )
    apply(cluster, namespace, manifest)
    wait_condition(cluster, namespace, "pricing", "Ready", "True", timeout=90)
    fleet.start_apps()
    fleet.wait_serving(v1)
    # At rest, the operator refreshes the series every 30 s: the six apps' processes appear.
    wait_for(
        lambda: (
            _operator_series(operator, namespace).get(
                ("logicbundle_version_process_pods", "stable", v1)
            )
            == len(fleet.pods)
        ),
        what="the six apps' process health in the operator's series",
        timeout=120,
        interval=0.5,
    )
    manifest["spec"]["source"]["ref"] = f"{registry.host}/health/pricing:hungry"
    apply(cluster, namespace, manifest)
    obj = wait_condition(cluster, namespace, "pricing", "Stalled", "True", timeout=180)
    fleet.wait_serving(v1, timeout=60)

    # The verdict: both metrics failed, with the figures of both cohorts.
    stalled = condition(obj, "Stalled")
    assert stalled is not None and stalled["reason"] == "RolledBack", stalled
    assert "memory: " in stalled["message"] and "MiB is" in stalled["message"], stalled
    assert "threads: " in stalled["message"], stalled
    measured = {m["name"]: m for m in obj["status"]["analysis"]["metrics"]}
    print("verdict:", stalled["message"])  # the figures, in the test's output with -s
    assert {name: m["verdict"] for name, m in measured.items()} == {
        "memory": "Failed",
        "threads": "Failed",
    }, measured
    assert measured["threads"]["candidate"] >= measured["threads"]["stable"] + 40, measured
    assert measured["memory"]["candidate"] >= measured["memory"]["stable"] + 80 * MiB, measured
    assert (measured["memory"]["samples"], measured["memory"]["stableSamples"]) == (2, 4)
    rolled = _event_messages(cluster, namespace, "RolledBack")
    assert rolled and any("threads: " in m for m in rolled), rolled

    # The series: the rolled-back digest's go with the reconcile that rolled back, and a
    # real scrape saw them while the candidate ran (48 threads and 96 MiB above any process).
    wait_for(
        lambda: {digest for _, _, digest in _operator_series(operator, namespace)} == {v1},
        what="only the stable digest's series in the operator's metrics",
        timeout=30,
        interval=0.2,
    )
    threads = f'logicbundle_version_threads{{namespace="{namespace}"}}'
    seen = _scraped(prometheus, f"max_over_time({threads}[10m])")
    assert seen.get(("candidate", hungry), 0) >= 48, seen
    assert seen.get(("stable", v1), 0) >= 1, seen
    memory = f'logicbundle_version_resident_memory_bytes{{namespace="{namespace}"}}'
    seen = _scraped(prometheus, f"max_over_time({memory}[10m])")
    assert seen.get(("candidate", hungry), 0) >= 96 * MiB, seen
    assert seen.get(("stable", v1), 0) > 0, seen
