"""Deleting a LogicBundle releases its pods (issue 11, defect 8: ``release`` had no test).

Mid-rollout, the state "every pod on stable" is published first and the
finalizer waits until no pod reports the candidate (bounded); then the
distributor forgets the bundle's targets (keeping those of other bundles),
the state ConfigMap is deleted and the operator's per-bundle memory is
cleared in every owner (the bundle's memory, its restarts, its metrics),
leaving the other bundles' alone.  Nothing is ever written on a pod.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kopf
import pytest

from logicbundle import contract, rollout
from logicbundle.api import LogicBundleStatus
from logicbundle.api.v1alpha1 import TargetState
from logicbundle.controller._handlers import (
    RELEASE_DEADLINE,
    ControllerSettings,
    Memo,
    bundle_changed,
    release,
)
from logicbundle.controller._memory import BundleMemory, SourceCheck
from logicbundle.controller._reconcile import PodSnapshot, Runtime, pod_facts, reconcile
from logicbundle.distributor import BundleReport, BundleSummary, PodIdentity, Report, bundle_rule
from logicbundle.oci import RegistryUnavailableError
from tests.controller.test_reconcile import SPEC, FakeKube, _snapshots, runtime  # noqa: F401
from tests.rollout._fixtures import BUNDLE, D1, D2, NS, T0, installed
from tests.rollout._fixtures import pods as pod_reports

OTHER = "other-bundle"


def _pod(name: str) -> PodSnapshot:
    return PodSnapshot(
        namespace=NS,
        name=name,
        uid=f"uid-{name}",
        labels={"app": "shop"},
        annotations={},
        has_agent=True,
    )


def _everyone_on(digest: str, bundle: str = BUNDLE) -> contract.RolloutState:
    return contract.RolloutState(bundle=bundle, stable=digest)


IN_FLIGHT_REVISION = 4_102_444_800_000
"""The in-flight state's revision: a publish time in 2100, ahead of any test's clock."""


def _in_flight(bundle: str = BUNDLE) -> contract.RolloutState:
    return contract.RolloutState(
        bundle=bundle,
        stable=D1,
        candidate=D2,
        stage=contract.Everyone(),
        revision=IN_FLIGHT_REVISION,
    )


def _report(rt: Runtime, pod: str, digest: str) -> None:
    rt.agents.reports.record(
        PodIdentity(namespace=NS, name=pod, uid=f"uid-{pod}", service_account="default"),
        Report(bundles={BUNDLE: BundleReport(active=digest, healthy=True)}),
        targets=None,
    )


def _body(deleted_ago: float) -> kopf.Body:
    deleted = datetime.now(UTC) - timedelta(seconds=deleted_ago)
    return kopf.Body(
        {
            "metadata": {
                "namespace": NS,
                "name": BUNDLE,
                "uid": "lb-uid",
                "deletionTimestamp": deleted.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            "spec": SPEC.model_dump(mode="json", by_alias=True, exclude_none=True),
            "status": {
                "stableDigest": D1,
                "candidateDigest": D2,
                "stage": "everyone",
                "stageIndex": 1,
                "targetState": contract.state_to_json(_in_flight()),
            },
        }
    )


def _merging_status_writes(kube: FakeKube, body: Mapping[str, Any]) -> None:
    """Status patches answered like the API server: the whole object, the patch merged in."""
    stored = copy.deepcopy(dict(body))
    record = kube.patch_status

    def patch_status(namespace: str, name: str, patch: Mapping[str, Any]) -> Mapping[str, Any]:
        answer = record(namespace, name, patch)
        _merge(stored["status"], patch)
        stored["metadata"]["resourceVersion"] = answer["metadata"]["resourceVersion"]
        return copy.deepcopy(stored)

    kube.patch_status = patch_status  # type: ignore[method-assign,assignment]


def _merge(into: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386 merge patch."""
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _set_up(rt: Runtime, tmp_path: Path) -> tuple[Memo, list[PodSnapshot]]:
    pods = [_pod("on-candidate"), _pod("on-stable"), _pod("both-bundles")]
    rt.agents.rules.set_bundle(NS, BUNDLE, bundle_rule(SPEC, _in_flight()))
    rt.agents.rules.set_bundle(NS, OTHER, bundle_rule(SPEC, _everyone_on(D1, OTHER)))
    for pod in pods:
        rt.agents.rules.set_pod(NS, pod.name, uid=pod.uid, facts=pod_facts(pod))
    memory = rt.memories.get((NS, BUNDLE))
    memory.source = SourceCheck(generation=1, checked_at=rt.clock(), outcome=None)
    memory.written = {}
    _merging_status_writes(rt.kube, _body(1))  # type: ignore[arg-type]
    return Memo(settings=ControllerSettings(cache_dir=tmp_path), runtime=rt), pods


def test_deleting_a_bundle_mid_rollout_withdraws_the_candidate_then_lets_go(
    runtime: tuple[Runtime, FakeKube, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    rt, kube, _ = runtime
    memo, pods = _set_up(rt, tmp_path)
    _report(rt, "on-candidate", D2)
    _report(rt, "on-stable", D1)

    with pytest.raises(kopf.TemporaryError, match="1 pod\\(s\\) still run the candidate"):
        asyncio.run(
            release(
                memo=memo, body=_body(1), namespace=NS, name=BUNDLE, pods_by_namespace={NS: pods}
            )
        )

    # "Every pod on stable" is published, newer than the state in flight (an agent
    # follows the newest state, whichever path brought it), in the status first (the
    # distributor replicas read it there; the in-flight fields nulled by the merge
    # patch), then in the ConfigMap (the slow path), and this process's distributor
    # tells the agents at once.
    [(_, (patched, _))] = [c for c in kube.calls if c[0] == "status"]
    [(_, (bundle, state, _))] = [c for c in kube.calls if c[0] == "state"]
    assert bundle == BUNDLE
    assert state == {"bundle": BUNDLE, "stable": D1, "revision": IN_FLIGHT_REVISION + 1}
    assert patched == {"targetState": {**state, "candidate": None, "stage": None}}
    assert [c[0] for c in kube.calls] == ["status", "state"], "status, then ConfigMap"
    for pod in pods:
        target = rt.agents.targets.get(NS, pod.name, uid=pod.uid).targets[BUNDLE]
        assert (target.digest, target.revision) == (D1, IN_FLIGHT_REVISION + 1)
    assert not [c for c in kube.calls if c[0] == "pod"], "no pod is written"

    # Retried while the candidate is still reported: the same state, nothing written again.
    with pytest.raises(kopf.TemporaryError, match="1 pod\\(s\\) still run the candidate"):
        asyncio.run(
            release(
                memo=memo, body=_body(1), namespace=NS, name=BUNDLE, pods_by_namespace={NS: pods}
            )
        )
    assert [c[0] for c in kube.calls] == ["status", "state"]
    assert ("delete-state", BUNDLE) not in kube.calls, "nothing is let go while pods wait"

    _report(rt, "on-candidate", D1)  # the agent swapped back
    asyncio.run(
        release(memo=memo, body=_body(2), namespace=NS, name=BUNDLE, pods_by_namespace={NS: pods})
    )

    assert kube.calls[-1] == ("delete-state", BUNDLE)
    # The distributor no longer answers for the bundle, and still does for the other one.
    for pod in pods:
        kept = rt.agents.targets.get(NS, pod.name, uid=pod.uid)
        assert kept.known and set(kept.targets) == {OTHER}, pod.name
    assert (NS, BUNDLE) not in rt.memories, "its source check, written object, published state"


def test_pods_that_never_go_back_do_not_hold_the_deletion_past_its_deadline(
    runtime: tuple[Runtime, FakeKube, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    rt, kube, _ = runtime
    memo, pods = _set_up(rt, tmp_path)
    _report(rt, "on-candidate", D2)

    asyncio.run(
        release(
            memo=memo,
            body=_body(RELEASE_DEADLINE + 1),
            namespace=NS,
            name=BUNDLE,
            pods_by_namespace={NS: pods},
        )
    )

    assert ("delete-state", BUNDLE) in kube.calls
    assert BUNDLE not in rt.agents.targets.get(NS, "on-candidate", uid="uid-on-candidate").targets


def test_deleting_a_bundle_that_never_had_a_stable_digest_publishes_nothing_it_cannot_name(
    runtime: tuple[Runtime, FakeKube, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    rt, kube, _ = runtime
    pods = [_pod("p0")]
    memo = Memo(settings=ControllerSettings(cache_dir=tmp_path), runtime=rt)
    body = kopf.Body({"metadata": {"namespace": NS, "name": BUNDLE}, "status": {}})
    asyncio.run(
        release(memo=memo, body=body, namespace=NS, name=BUNDLE, pods_by_namespace={NS: pods})
    )
    # No stable digest to keep: nothing is published, the ConfigMap (if any) is deleted.
    assert [c[0] for c in kube.calls] == ["delete-state"]


def _stored(bundle: str, status: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": NS, "name": bundle, "uid": f"uid-{bundle}", "generation": 1},
        "spec": SPEC.model_dump(mode="json", by_alias=True, exclude_none=True),
        "status": status.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def _bundle_series(rt: Runtime, bundle: str) -> list[str]:
    """The operator's metric series labelled with ``bundle``."""
    return [
        sample.name
        for family in rt.metrics.registry.collect()
        for sample in family.samples
        if sample.labels.get("bundle") == bundle
    ]


def test_a_deleted_bundle_leaves_no_memory_in_any_owner_and_another_bundle_keeps_its_own(
    runtime: tuple[Runtime, FakeKube, Any],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rt, kube, _ = runtime

    def unreachable(*_: Any, **__: Any) -> None:
        raise RegistryUnavailableError("resolving registry.example/shop/pricing:v1: unreachable")

    # Two bundles reconciled twice, their pods' containers restarting in between: each
    # one's memory (a failed source check, its warning, the written object, the published
    # state), its restarts and its metrics.
    monkeypatch.setattr("logicbundle.controller._reconcile.resolve_and_verify", unreachable)
    kube.spec = SPEC.model_dump(mode="json", by_alias=True, exclude_none=True)
    status, reports = installed(SPEC, pod_reports(2))
    for bundle in (BUNDLE, OTHER):
        for restarts in (0, 2):
            snapshots = [dataclasses.replace(p, restarts=restarts) for p in _snapshots(reports)]
            asyncio.run(reconcile(rt, body=_stored(bundle, status), pods=snapshots, now=T0))
    for bundle in (BUNDLE, OTHER):
        memory = rt.memories.get((NS, bundle))
        assert memory.source is not None and memory.source.failure is not None, bundle
        assert memory.warning is not None and "unreachable" in memory.warning, bundle
        assert memory.written is not None and memory.published is not None, bundle
        assert rt.restarts.restarts(bundle=bundle, namespace=NS, digest=D1, since=0) == 4
        assert _bundle_series(rt, bundle), bundle
    other = rt.memories.get((NS, OTHER))
    other_before = copy.deepcopy(other)
    other_series = _bundle_series(rt, OTHER)

    memo = Memo(settings=ControllerSettings(cache_dir=tmp_path), runtime=rt)
    body = kopf.Body(
        {"metadata": {"namespace": NS, "name": BUNDLE}, "status": {"stableDigest": D1}}
    )
    asyncio.run(
        release(memo=memo, body=body, namespace=NS, name=BUNDLE, pods_by_namespace={NS: []})
    )

    assert (NS, BUNDLE) not in rt.memories and len(rt.memories) == 1
    assert rt.restarts.restarts(bundle=BUNDLE, namespace=NS, digest=D1, since=0) == 0
    assert _bundle_series(rt, BUNDLE) == []
    # Its pods' restart baselines are gone too: seen again, a count charges nothing.
    for pod in _snapshots(reports):
        rt.restarts.observe(
            bundle=BUNDLE, namespace=NS, pod=pod.name, uid=pod.uid, restarts=5, digest=D1
        )
    assert rt.restarts.restarts(bundle=BUNDLE, namespace=NS, digest=D1, since=0) == 0
    # The other bundle: the same memory, unchanged, its charges, baselines and series kept.
    assert rt.memories.get((NS, OTHER)) is other and other == other_before
    assert rt.restarts.restarts(bundle=OTHER, namespace=NS, digest=D1, since=0) == 4
    for pod in _snapshots(reports):
        rt.restarts.observe(
            bundle=OTHER, namespace=NS, pod=pod.name, uid=pod.uid, restarts=5, digest=D1
        )
    assert rt.restarts.restarts(bundle=OTHER, namespace=NS, digest=D1, since=0) == 10
    assert _bundle_series(rt, OTHER) == other_series
    # A bundle created again under the deleted one's name starts with nothing remembered.
    assert rt.memories.get((NS, BUNDLE)) == BundleMemory()


@dataclasses.dataclass
class _Replicas:
    """The distributor replicas' summed reports, as the leader reads them (None: incomplete)."""

    answer: BundleSummary | None
    asked: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    async def summary(
        self, namespace: str, bundle: str, *, since: float | None
    ) -> BundleSummary | None:
        self.asked.append((namespace, bundle))
        return self.answer


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (BundleSummary(reporting=3, active={D1: 1, D2: 2}), "2 pod\\(s\\) still run the candidate"),
        (None, "reports are incomplete"),
    ],
    ids=["pods-on-the-candidate", "a-replica-does-not-answer"],
)
def test_with_distributor_replicas_the_deletion_waits_on_their_summed_reports(
    runtime: tuple[Runtime, FakeKube, Any],  # noqa: F811
    tmp_path: Path,
    answer: BundleSummary | None,
    why: str,
) -> None:
    """The leader holds no per-pod report then: it must ask the replicas, and fail closed."""
    rt, kube, _ = runtime
    memo, pods = _set_up(rt, tmp_path)
    replicas = _Replicas(answer)
    rt.agents.summary_source = replicas

    with pytest.raises(kopf.TemporaryError, match=why):
        asyncio.run(
            release(
                memo=memo, body=_body(1), namespace=NS, name=BUNDLE, pods_by_namespace={NS: pods}
            )
        )
    assert replicas.asked == [(NS, BUNDLE)]
    assert ("delete-state", BUNDLE) not in kube.calls

    replicas.answer = BundleSummary(reporting=3, active={D1: 3})  # every pod went back
    asyncio.run(
        release(memo=memo, body=_body(2), namespace=NS, name=BUNDLE, pods_by_namespace={NS: pods})
    )
    assert kube.calls[-1] == ("delete-state", BUNDLE)


def test_the_released_state_is_newer_than_any_state_the_bundle_published() -> None:
    """An agent compares revisions: an unstamped or older state would never be followed."""
    in_flight = LogicBundleStatus.model_validate(
        {
            "stableDigest": D1,
            "candidateDigest": D2,
            "targetState": contract.state_to_json(_in_flight()),
        }
    )
    now = datetime(2030, 1, 1, tzinfo=UTC)
    state = rollout.released(in_flight, bundle=BUNDLE, now=now)
    assert state == contract.RolloutState(bundle=BUNDLE, stable=D1, revision=IN_FLIGHT_REVISION + 1)
    # Published already (a retried deletion): the same revision, so nothing changes.
    again = in_flight.model_copy(
        update={"target_state": TargetState.model_validate(contract.state_to_json(state))}
    )
    assert rollout.released(again, bundle=BUNDLE, now=now + timedelta(seconds=5)) == state
    # The clock ahead of the last revision: the publish time.
    later = datetime(2101, 1, 1, tzinfo=UTC)
    stamped = rollout.released(in_flight, bundle=BUNDLE, now=later)
    assert stamped is not None and stamped.revision == int(later.timestamp() * 1000)
    # Nothing stable to go back to: nothing to publish.
    assert rollout.released(LogicBundleStatus(), bundle=BUNDLE, now=now) is None


def test_a_deleted_bundle_is_forgotten_by_the_distributor_even_if_an_update_came_after_release(
    runtime: tuple[Runtime, FakeKube, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The finalizer's removal is an update: seen after the release, it set the rule again."""
    rt, _, _ = runtime
    memo, pods = _set_up(rt, tmp_path)
    gone = _body(2)
    bundle_changed(memo=memo, body=gone, namespace=NS, name=BUNDLE, type="MODIFIED")
    assert BUNDLE in rt.agents.targets.get(NS, "on-stable", uid="uid-on-stable").targets

    bundle_changed(memo=memo, body=gone, namespace=NS, name=BUNDLE, type="DELETED")

    for pod in pods:
        assert set(rt.agents.targets.get(NS, pod.name, uid=pod.uid).targets) == {OTHER}
