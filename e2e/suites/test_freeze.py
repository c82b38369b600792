"""``onFailure: freeze`` end to end: a failing candidate stops where it is instead of rolling back.

For bundles whose effects cannot be undone.  The real operator judges the
``flaky`` bundle's error rate at the internal stage, freezes (``Stalled=True``,
reason ``Frozen``) and keeps every pod on what it runs: the internal pods on
the candidate, the others on the stable digest, measurement after
measurement.  An ``abort`` then rolls every pod back.
"""

from __future__ import annotations

from typing import Any

from e2e.harness.cluster import Cluster
from e2e.harness.fleet import Fleet, Traffic
from e2e.harness.operator import KeyPair, apply, condition, events, get_bundle, wait_condition
from e2e.harness.services import Registry
from e2e.suites.test_rollout import (  # noqa: F401 - fixtures
    cohorts,
    digests,
    fleet,
    gitops_health,
    install,
    key,
    move_to,
    operator,
    ref,
    rollout,
)
from logicbundle.api import names


def test_a_failing_candidate_freezes_where_it_is_and_abort_rolls_it_back(
    cluster: Cluster,
    registry: Registry,
    key: KeyPair,  # noqa: F811
    digests: dict[str, str],  # noqa: F811
    fleet: Fleet,  # noqa: F811
) -> None:
    spec_rollout: dict[str, Any] = {**rollout(), "onFailure": "freeze"}
    manifest = install(cluster, fleet, registry, key, digests, spec_rollout=spec_rollout)
    internal = {p.name for p in fleet.pods[:2]}  # install() makes the first two internal
    with Traffic(fleet):
        move_to(cluster, fleet, manifest, ref(registry, "flaky"))
        obj = wait_condition(
            cluster, fleet.namespace, "pricing", "Stalled", "True", reason="Frozen", timeout=120
        )
        status = obj["status"]
        assert (status["phase"], status["candidateDigest"], status["stage"]) == (
            "Frozen",
            digests["flaky"],
            "internal",
        )
        assert "error-rate: " in condition(obj, "Stalled")["message"]  # type: ignore[index]
        assert condition(obj, "Reconciling")["status"] == "False"  # type: ignore[index]
        assert gitops_health(obj) == ("Degraded", "Failed")
        assert ("Warning", "Frozen") in events(cluster, fleet.namespace, "pricing")
        frozen_state = status["targetState"]
        expected = {
            p.name: digests["flaky"] if p.name in internal else digests["v1"] for p in fleet.pods
        }
        assert cohorts(cluster, fleet) == expected
        fleet.wait_serving(digests["flaky"], count=2)
        fleet.wait_serving(digests["v1"], count=len(fleet.pods) - 2)
        # Still frozen once the apps serve it: the published state has not moved.
        again = get_bundle(cluster, fleet.namespace, "pricing")
        assert again["status"]["targetState"] == frozen_state
        assert condition(again, "Stalled")["reason"] == "Frozen"  # type: ignore[index]
        assert cohorts(cluster, fleet) == expected

        manifest["metadata"].setdefault("annotations", {})[names.ANNOTATION_REQUESTED_ACTION] = (
            "abort@e2e-freeze"
        )
        apply(cluster, fleet.namespace, manifest)
        wait_condition(
            cluster, fleet.namespace, "pricing", "Stalled", "True", reason="Aborted", timeout=60
        )
        fleet.wait_serving(digests["v1"], timeout=60)
    assert set(cohorts(cluster, fleet).values()) == {digests["v1"]}
