"""One trace per rollout, read back from a real trace backend (issue 12, part 1).

Jaeger v2 (built from the Go module proxy, in-memory storage) receives the
operator's OTLP/HTTP export.  Six kwok pods each run a real agent and a real
sample app (:mod:`e2e.harness.fleet`); the agents report their swaps to the
operator's distributor, which exports them under the ``traceparent`` the
published state carried.  The test reads the rollout's trace back through
Jaeger's query API and checks its tree.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.harness.cluster import Cluster
from e2e.harness.fleet import Fleet, Traffic
from e2e.harness.jaeger import Jaeger
from e2e.harness.operator import (
    EXAMPLES,
    KeyPair,
    Operator,
    apply,
    get_bundle,
    logicbundle,
    push_bundle,
    wait_condition,
)
from e2e.harness.proc import wait_for
from e2e.harness.services import Registry
from logicbundle import contract
from logicbundle.api import names

INTERNAL = {names.LABEL_COHORT: names.COHORT_INTERNAL}
ROLLOUT = {
    "stages": [
        {"name": "internal", "internal": {"matchLabels": INTERNAL}, "pause": "2s"},
        {"name": "canary", "percent": 5, "pause": "2s"},
        {"name": "everyone", "all": True},
    ],
    "analysis": {
        "provider": "builtin",
        "interval": "2s",
        "minSamples": 10,
        "metrics": [{"name": "error-rate", "builtin": "errorRate", "max": 0.05}],
    },
}


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return KeyPair.generate()


@pytest.fixture(scope="module")
def digests(registry: Registry, key: KeyPair) -> dict[str, str]:
    return {
        tag: push_bundle(
            registry.host,
            EXAMPLES / "bundles" / f"pricing-{tag}",
            repository="shop/traced",
            tag=tag,
            version="1.0.0",
            key=key,
        )
        for tag in ("v1", "v2")
    }


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jaeger]:
    with Jaeger.start(tmp_path_factory.mktemp("jaeger")) as running:
        yield running


@pytest.fixture(scope="module")
def traced_operator(
    cluster: Cluster, logicbundle_crd: str, jaeger: Jaeger, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_url,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_SERVICE_NAME": "logicbundle-e2e",
    }
    with pytest.MonkeyPatch.context() as patch:  # the operator's environment only
        for name, value in env.items():
            patch.setenv(name, value)
        running = Operator.start(cluster, tmp_path_factory.mktemp("operator"))
    yield running
    running.stop()


@pytest.fixture
def fleet(
    cluster: Cluster,
    namespace: str,
    registry: Registry,
    traced_operator: Operator,
    tmp_path: Path,
) -> Iterator[Fleet]:
    made = Fleet(
        cluster=cluster,
        namespace=namespace,
        work=tmp_path,
        distributor_url=traced_operator.distributor_url,
        bundles={
            "pricing": {
                "source": f"{registry.host}/shop/traced",
                "insecure": True,
                "healthCheck": {"mode": "sdk", "timeout": "10s"},
            }
        },
        labels={"app": "web"},
    )
    yield made
    made.stop()


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span.get("tags") or []}


def _parent(span: dict[str, Any]) -> str | None:
    for reference in span.get("references") or []:
        if reference.get("refType") == "CHILD_OF":
            return str(reference["spanID"])
    return None


def test_a_rollout_is_one_trace_with_the_operators_steps_and_one_swap_span_per_pod(
    cluster: Cluster,
    registry: Registry,
    key: KeyPair,
    digests: dict[str, str],
    fleet: Fleet,
    jaeger: Jaeger,
) -> None:
    fleet.add(2, extra_labels=INTERNAL)
    fleet.add(4)
    manifest = logicbundle(
        "pricing",
        ref=f"{registry.host}/shop/traced:v1",
        key=key,
        selector={"app": "web"},
        rollout=ROLLOUT,
        interval="1h",
    )
    apply(cluster, fleet.namespace, manifest)
    wait_condition(cluster, fleet.namespace, "pricing", "Ready", "True", timeout=90)
    fleet.start_apps()
    fleet.wait_serving(digests["v1"])
    with Traffic(fleet):
        manifest["spec"]["source"]["ref"] = f"{registry.host}/shop/traced:v2"
        apply(cluster, fleet.namespace, manifest)
        wait_for(
            lambda: fleet.served().get(digests["v2"], 0) == len(fleet.pods),
            what="v2 served by every pod",
            timeout=120,
            interval=0.2,
        )
    wait_condition(cluster, fleet.namespace, "pricing", "Ready", "True", timeout=60)
    status = get_bundle(cluster, fleet.namespace, "pricing")["status"]
    assert status["stableDigest"] == digests["v2"]
    parent = contract.parse_traceparent(status["targetState"].get("traceparent"))
    assert parent is not None, status["targetState"]
    trace_id = parent.trace_id
    root_id = contract.phase_span_id(trace_id, "rollout")
    pods = {p.name for p in fleet.pods}

    def complete() -> list[dict[str, Any]] | None:
        spans = jaeger.trace(trace_id)
        names = [s["operationName"] for s in spans]
        swapped = {
            _tags(s).get("k8s.pod.name") for s in spans if s["operationName"].startswith("swap ")
        }
        if f"rollout {fleet.namespace}/pricing" in names and swapped >= pods:
            return spans
        return None

    spans = wait_for(complete, what=f"trace {trace_id} complete in Jaeger", timeout=60)
    by_id = {s["spanID"]: s for s in spans}
    assert {s["traceID"] for s in spans} == {trace_id}

    root = by_id[root_id]
    assert _parent(root) is None
    assert _tags(root)["logicbundle.outcome"] == "Promoted"
    assert _tags(root)["logicbundle.digest"] == digests["v2"]

    children = {s["operationName"]: s for s in spans if _parent(s) == root_id}
    source = children["resolve, verify and cache"]
    assert _tags(source)["logicbundle.digest"] == digests["v2"]
    assert _tags(source)["logicbundle.signer.identity"].startswith("sha256:")  # the key id
    assert {"stage internal", "stage canary", "stage everyone", "promotion"} <= set(children)
    canary = children["stage canary"]
    verdicts = [log for log in canary.get("logs") or [] if _fields(log).get("event") == "analysis"]
    assert verdicts, "the canary stage's analysis verdicts are span events"
    assert _fields(verdicts[-1])["logicbundle.verdict"] == "Passed"

    # One swap span per pod, each under the stage (or promotion) that moved it, each
    # with its steps; the two internal pods moved in the internal stage.
    swaps = [s for s in spans if s["operationName"].startswith("swap ")]
    to_v2 = [s for s in swaps if _tags(s)["logicbundle.digest"] == digests["v2"]]
    assert sorted(_tags(s)["k8s.pod.name"] for s in to_v2) == sorted(pods)
    phases = {s["spanID"]: s["operationName"] for s in children.values()}
    for swap in to_v2:
        assert phases.get(_parent(swap) or "") in {
            "stage internal",
            "stage canary",
            "stage everyone",
            "promotion",
        }
        assert _tags(swap)["logicbundle.outcome"] == "activated"
        steps = {s["operationName"] for s in spans if _parent(s) == swap["spanID"]}
        assert {"fetch", "unpack", "swap", "notify", "health check", "ack"} <= steps
    internal = [s for s in to_v2 if phases[_parent(s) or ""] == "stage internal"]
    assert len(internal) == 2
    slowest = max(to_v2, key=lambda s: s["duration"])
    assert slowest["duration"] > 0


def _fields(log: dict[str, Any]) -> dict[str, Any]:
    return {field["key"]: field["value"] for field in log.get("fields") or []}
