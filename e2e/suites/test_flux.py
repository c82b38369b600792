"""A real Flux sync of a LogicBundle: Git, source-controller, kustomize-controller.

The LogicBundle's YAML lives in a Git repository served over smart HTTP on
loopback (``git http-backend``, :mod:`e2e.harness.flux`); Flux's own
source-controller follows it (a ``GitRepository``) and its kustomize-controller
applies it (a ``Kustomization`` with ``wait: true``), judging the LogicBundle
with Flux's own health checking (kstatus, fail-fast). The real operator rolls
it out on a fleet of real agents and apps (the rollout suite's fixtures).

Through commits pushed to the repository:

1. v1: the Kustomization is Ready only once the LogicBundle is Ready;
2. v2, a good version: the Kustomization is progressing while the rollout runs,
   and Ready for the new revision once it completes;
3. ``flaky``, a version whose analysis fails: the operator rolls back, the
   LogicBundle goes Stalled, and the Kustomization fails its health check
   well before its timeout (fail-fast: Stalled is kstatus ``Failed``);
4. a revert to v2 in Git: the Kustomization is Ready again.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from e2e.harness.cluster import Cluster
from e2e.harness.fleet import Fleet, Traffic
from e2e.harness.flux import (
    KUSTOMIZE_API,
    Checkout,
    Flux,
    GitServer,
    git_repository,
    kustomization,
    kustomization_files,
)
from e2e.harness.operator import (
    KeyPair,
    apply,
    condition,
    events,
    get_bundle,
    logicbundle,
)
from e2e.harness.proc import wait_for
from e2e.harness.services import Registry
from e2e.suites.test_rollout import (  # noqa: F401 - fixtures
    INTERNAL,
    digests,
    fleet,
    key,
    operator,
    ref,
    rollout,
)

TIMEOUT = 600
"""The Kustomization's ``timeout`` (s): how long Flux would wait for a health check."""

FAIL_FAST = 90
"""A failed LogicBundle must fail the Kustomization within this (s) of going Stalled.

Flux polls every 5 s; the bound leaves room for two loaded cores, and is still a
small part of :data:`TIMEOUT` (a Stalled that Flux read as in progress would wait
the whole timeout)."""

SYNC = 240
"""Deadline (s) for Flux to fetch, apply and judge a commit, rollout included."""

KS_PATH = "/apis/" + KUSTOMIZE_API + "/namespaces/{namespace}/kustomizations/pricing"


def get_kustomization(cluster: Cluster, namespace: str) -> dict[str, Any]:
    obj: dict[str, Any] = cluster.request("GET", KS_PATH.format(namespace=namespace))
    return obj


def when(cond: Mapping[str, Any] | None) -> datetime:
    assert cond is not None
    return datetime.fromisoformat(str(cond["lastTransitionTime"]).replace("Z", "+00:00"))


def kustomization_ready(cluster: Cluster, namespace: str, commit: str) -> dict[str, Any] | None:
    """The Kustomization once Ready=True with ``commit`` applied, else None."""
    obj = get_kustomization(cluster, namespace)
    ready = condition(obj, "Ready") or {}
    applied = str((obj.get("status") or {}).get("lastAppliedRevision", ""))
    if ready.get("status") == "True" and applied.endswith(commit):
        return obj
    return None


@pytest.fixture(scope="module")
def git(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    server = GitServer(tmp_path_factory.mktemp("git"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def flux(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flux]:
    running = Flux.start(cluster, tmp_path_factory.mktemp("flux"))
    yield running
    running.stop()


@pytest.fixture
def synced(cluster: Cluster, fleet: Fleet, flux: Flux) -> Iterator[str]:  # noqa: F811
    """The fleet's namespace; afterwards the Flux objects are deleted while Flux runs.

    (Their finalizers need the controllers: deleted later, the namespace would hang.)
    """
    namespace = fleet.namespace
    yield namespace
    base = f"/apis/{{api}}/namespaces/{namespace}/{{plural}}"
    objects = [
        base.format(api=KUSTOMIZE_API, plural="kustomizations") + "/pricing",
        base.format(api="source.toolkit.fluxcd.io/v1", plural="gitrepositories") + "/fleet",
    ]
    for path in objects:
        with contextlib.suppress(Exception):
            cluster.request("DELETE", path)
    for path in objects:

        def gone(path: str = path) -> bool:
            try:
                cluster.request("GET", path)
            except Exception:
                return True
            return False

        with contextlib.suppress(Exception):
            wait_for(gone, what=f"{path} deleted", timeout=60)


def test_flux_applies_a_logicbundle_and_judges_it_through_a_rollout_and_a_rollback(
    cluster: Cluster,
    registry: Registry,
    key: KeyPair,  # noqa: F811
    digests: dict[str, str],  # noqa: F811
    fleet: Fleet,  # noqa: F811
    flux: Flux,
    git: GitServer,
    synced: str,
    tmp_path: Path,
) -> None:
    ns = synced
    url = git.create("fleet")
    checkout = Checkout.clone(url, tmp_path / "checkout")
    fleet.add(2, extra_labels=INTERNAL)
    fleet.add(4)
    manifest = logicbundle(
        "pricing",
        ref=ref(registry, "v1"),
        key=key,
        selector={"app": "web"},
        rollout=rollout(),
        interval="1h",
    )
    manifest["metadata"]["namespace"] = ns

    def push(tag: str) -> str:
        manifest["spec"]["source"]["ref"] = ref(registry, tag)
        return checkout.commit_and_push(kustomization_files([manifest]), f"pricing: {tag}")

    def explain() -> str:
        with contextlib.suppress(Exception):
            return json.dumps(
                {
                    "kustomization": get_kustomization(cluster, ns).get("status"),
                    "logicbundle": get_bundle(cluster, ns, "pricing").get("status"),
                    "events": events(cluster, ns, "pricing"),
                },
                indent=1,
            )
        return "(no status)"

    def ready_at(revision: str) -> dict[str, Any]:
        """The Kustomization, once Ready at ``revision``."""
        found: dict[str, Any] = wait_for(
            lambda: kustomization_ready(cluster, ns, revision),
            what=f"the Kustomization Ready at {revision}",
            timeout=SYNC,
            interval=0.5,
            watch=flux.processes,
        )
        return found

    # 1. v1: Ready only once the LogicBundle is.
    v1 = push("v1")
    apply(cluster, ns, git_repository("fleet", ns, url))
    apply(cluster, ns, kustomization("pricing", ns, source="fleet", timeout=f"{TIMEOUT}s"))
    synced_v1 = ready_at(v1)
    bundle = get_bundle(cluster, ns, "pricing")
    assert (condition(bundle, "Ready") or {}).get("status") == "True", explain()
    assert bundle["status"]["stableDigest"] == digests["v1"]
    assert when(condition(synced_v1, "Ready")) >= when(condition(bundle, "Ready")), explain()
    managers = {field["manager"] for field in bundle["metadata"]["managedFields"]}
    assert "kustomize-controller" in managers, managers
    fleet.start_apps()
    fleet.wait_serving(digests["v1"])

    with Traffic(fleet):
        # 2. v2: progressing during the rollout, Ready once it is done.
        v2 = push("v2")
        progressing: list[dict[str, Any]] = []

        def rolled_out() -> dict[str, Any] | None:
            obj = get_kustomization(cluster, ns)
            attempted = str((obj.get("status") or {}).get("lastAttemptedRevision", ""))
            reconciling = condition(obj, "Reconciling") or {}
            if attempted.endswith(v2) and reconciling.get("status") == "True":
                progressing.append(obj)
            return kustomization_ready(cluster, ns, v2)

        synced_v2 = wait_for(
            rolled_out,
            what=f"the Kustomization Ready at {v2}",
            timeout=SYNC,
            interval=0.2,
            watch=flux.processes,
        )
        bundle = get_bundle(cluster, ns, "pricing")
        assert bundle["status"]["stableDigest"] == digests["v2"], explain()
        assert (condition(bundle, "Ready") or {}).get("status") == "True", explain()
        assert when(condition(synced_v2, "Ready")) >= when(condition(bundle, "Ready")), explain()
        assert progressing, "the Kustomization was never seen progressing on v2"
        messages = [(condition(obj, "Reconciling") or {}).get("message", "") for obj in progressing]
        assert any(m.startswith("Running health checks") for m in messages), messages
        fleet.wait_serving(digests["v2"])

        # 3. flaky: rolled back and Stalled; the Kustomization fails fast.
        bad = push("flaky")
        seen: dict[str, float] = {}

        def failed() -> dict[str, Any] | None:
            bundle = get_bundle(cluster, ns, "pricing")
            if (condition(bundle, "Stalled") or {}).get("status") == "True":
                seen.setdefault("stalled", time.monotonic())
            obj = get_kustomization(cluster, ns)
            ready = condition(obj, "Ready") or {}
            attempted = str((obj.get("status") or {}).get("lastAttemptedRevision", ""))
            if (
                attempted.endswith(bad)
                and ready.get("status") == "False"
                and ready.get("reason") == "HealthCheckFailed"
            ):
                seen.setdefault("failed", time.monotonic())
                return obj
            return None

        broken = wait_for(
            failed,
            what=f"the Kustomization failing its health check at {bad}",
            timeout=SYNC,
            interval=0.2,
            watch=flux.processes,
        )
        bundle = get_bundle(cluster, ns, "pricing")
        stalled = condition(bundle, "Stalled")
        assert stalled is not None and stalled["status"] == "True", explain()
        assert stalled["reason"] == "RolledBack", explain()
        assert bundle["status"]["stableDigest"] == digests["v2"]
        # Measured on the servers' clocks (both write lastTransitionTime) and on ours.
        lag = (when(condition(broken, "Ready")) - when(stalled)).total_seconds()
        observed = seen["failed"] - seen.get("stalled", seen["failed"])
        print(f"\nKustomization failed {lag:.0f}s after Stalled (observed {observed:.1f}s)")
        assert lag < FAIL_FAST, explain()
        assert observed < FAIL_FAST, explain()
        message = str((condition(broken, "Ready") or {}).get("message", ""))
        assert "LogicBundle" in message and "pricing" in message, message
        fleet.wait_serving(digests["v2"])

        # 4. The bad commit reverted in Git: Ready again, nothing rolled out.
        reverted = push("v2")
        ready_at(reverted)
        bundle = get_bundle(cluster, ns, "pricing")
        assert (condition(bundle, "Ready") or {}).get("status") == "True", explain()
        assert bundle["status"]["stableDigest"] == digests["v2"]
