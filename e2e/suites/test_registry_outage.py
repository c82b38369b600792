"""The registry unreachable when a rollback is decided: every pod still goes back to stable.

Issue 11's fault matrix, row "registry unreachable when a rollback is decided",
against the real operator (its distributor and cache), real agents and sample
apps: a rollout to a candidate stops at a manual gate, a pod joins mid-rollout
on the candidate alone, the registry is stopped (by its process id), and the
rollout is aborted.  Every pod comes back to stable without the registry: a
pod that ran stable before keeps it on disk (the agent keeps the previous
version exactly for this) and switches back without fetching a byte; the pod
that never had stable gets its bytes from the distributor's verified cache.

The registry here is this module's own (the session's registry serves every
other suite and must not stop).
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator

import pytest

from e2e.harness.cluster import Cluster
from e2e.harness.fleet import Fleet, FleetPod, Traffic
from e2e.harness.operator import KeyPair, get_bundle, wait_condition
from e2e.harness.proc import http_status, wait_for
from e2e.harness.services import Registry
from e2e.suites.test_rollout import (  # noqa: F401 - fixtures
    ERRORS_ONLY,
    INTERNAL,
    cohorts,
    digests,
    fleet,
    install,
    key,
    lb,
    move_to,
    operator,
    ref,
)

FETCHED = re.compile(
    r'^logicbundle_agent_fetch_bytes_total\{bundle="pricing",source="([a-z]+)"\} (\d+)$', re.M
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """This module's own registry (it overrides the session's): the test stops it."""
    with Registry.start(tmp_path_factory.mktemp("own-registry")) as running:
        yield running


def fetched(pod: FleetPod) -> dict[str, int]:
    """Bytes the pod's agent fetched so far, by source (``distributor``, ``registry``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{pod.agent_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {source: int(n) for source, n in FETCHED.findall(text)}


def on_disk(pod: FleetPod, digest: str) -> bool:
    return (pod.root / "pricing" / ".versions" / digest).is_dir()


def test_with_the_registry_stopped_an_abort_rolls_every_pod_back_from_disk_or_the_cache(
    cluster: Cluster,
    registry: Registry,
    key: KeyPair,  # noqa: F811
    digests: dict[str, str],  # noqa: F811
    fleet: Fleet,  # noqa: F811
) -> None:
    v1, v2 = digests["v1"], digests["v2"]
    ns = fleet.namespace
    # The gate on the internal stage: a pod of that cohort that joins now gets the candidate.
    gated = {
        "stages": [
            {"name": "internal", "internal": {"matchLabels": INTERNAL}, "manualGate": True},
            {"name": "everyone", "all": True},
        ],
        "analysis": ERRORS_ONLY,
    }
    manifest = install(cluster, fleet, registry, key, digests, pods=4, spec_rollout=gated)
    with Traffic(fleet):
        move_to(cluster, fleet, manifest, ref(registry, "v2"))
        wait_condition(
            cluster, ns, "pricing", "Reconciling", "True", reason="WaitingForPromotion", timeout=90
        )
        # A pod that joins mid-rollout in the internal cohort gets the candidate at its
        # first activation: it never had stable.
        joined = fleet.add(1, extra_labels=INTERNAL)
        fleet.start_apps(joined)
        fleet.wait_serving(v2, count=3)
    on_candidate = [p for p in fleet.pods if p.served_digest() == v2]
    assert sorted(p.name for p in on_candidate) == ["web-0", "web-1", "web-4"]
    kept = [p for p in on_candidate if p is not joined[0]]
    for pod in kept:
        assert on_disk(pod, v1), f"{pod.name}: the agent let go of the version it came from"
    assert not on_disk(joined[0], v1)
    assert fetched(joined[0]).get("registry", 0) == 0  # so far, the cache served every byte

    registry.stop()
    assert http_status(f"{registry.url}/v2/") == 0, "the registry still answers"
    before = {p.name: fetched(p) for p in fleet.pods}

    aborted = lb("abort", "pricing", "-n", ns, "--wait", "--timeout", "60s", cluster=cluster)
    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    wait_condition(cluster, ns, "pricing", "Stalled", "True", reason="Aborted", timeout=60)
    fleet.wait_serving(v1)

    for pod in kept:
        # Back to the version kept on disk: a rename, not one byte fetched.
        assert fetched(pod) == before[pod.name], pod.name
    after = fetched(joined[0])
    assert after.get("registry", 0) == before[joined[0].name].get("registry", 0) == 0
    assert after.get("distributor", 0) > before[joined[0].name].get("distributor", 0)
    assert on_disk(joined[0], v1)
    assert get_bundle(cluster, ns, "pricing")["status"]["stableDigest"] == v1
    assert set(cohorts(cluster, fleet).values()) == {v1}  # what the published rule assigns
    wait_for(
        lambda: all(p.ready() for p in fleet.pods),
        what="every agent ready on stable",
        timeout=30,
    )
