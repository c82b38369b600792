"""Deleting a LogicBundle releases its pods (issue 11, defect 8: ``release`` had no test).

Mid-rollout, every pod that carried the candidate is told the stable digest,
pods already on stable are not written again, the distributor forgets the
bundle's targets (keeping those of other bundles), and the operator's
per-bundle memory is cleared.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import kopf

from logicbundle import rollout
from logicbundle.api import names
from logicbundle.controller._handlers import ControllerSettings, Memo, release
from logicbundle.controller._reconcile import PodSnapshot, Runtime
from logicbundle.distributor import BundleTarget
from tests.controller.test_reconcile import FakeKube, runtime  # noqa: F401
from tests.rollout._fixtures import BUNDLE, D1, D2, NS

OTHER = "other-bundle"


def _pod(name: str, targets: dict[str, str]) -> PodSnapshot:
    return PodSnapshot(
        namespace=NS,
        name=name,
        uid=f"uid-{name}",
        labels={},
        annotations={names.target_annotation(b): v for b, v in targets.items()},
        has_agent=True,
    )


def test_deleting_a_bundle_mid_rollout_puts_every_pod_back_on_stable(
    runtime: tuple[Runtime, FakeKube, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    rt, kube, _ = runtime
    stable, candidate = rollout.format_target(rollout.PodTarget(digest=D1)), D2
    pods = [
        _pod("on-candidate", {BUNDLE: candidate}),
        _pod("on-stable", {BUNDLE: stable}),
        _pod("both-bundles", {BUNDLE: candidate, OTHER: D1}),
        _pod("other-only", {OTHER: D1}),
    ]
    for pod in pods:
        targets = {
            b: BundleTarget(digest=v.split(";")[0])
            for b, v in (
                (k.removeprefix(names.ANNOTATION_TARGET_PREFIX), v)
                for k, v in pod.annotations.items()
            )
        }
        rt.pod_targets[(NS, pod.name)] = dict(targets)
        rt.targets.set_targets(NS, pod.name, targets, uid=pod.uid)
    rt.sources[(NS, BUNDLE)] = object()  # type: ignore[assignment]
    rt.written[(NS, BUNDLE)] = {}
    memo = Memo(settings=ControllerSettings(cache_dir=tmp_path), runtime=rt)
    body = kopf.Body(
        {
            "metadata": {"namespace": NS, "name": BUNDLE},
            "status": {
                "stableDigest": D1,
                "candidateDigest": D2,
                "stage": "canary",
                "stageIndex": 1,
            },
        }
    )

    asyncio.run(
        release(memo=memo, body=body, namespace=NS, name=BUNDLE, pods_by_namespace={NS: pods})
    )

    patched = {call[1][0]: call[1][1] for call in kube.calls if call[0] == "pod"}
    annotation = names.target_annotation(BUNDLE)
    # Each pod that carried the candidate is written once, back to stable; no other pod.
    assert patched == {"on-candidate": {annotation: stable}, "both-bundles": {annotation: stable}}
    # The distributor no longer answers for the bundle, and still does for the other one.
    assert not rt.targets.get(NS, "on-candidate", uid="uid-on-candidate").known
    kept = rt.targets.get(NS, "both-bundles", uid="uid-both-bundles")
    assert kept.known and set(kept.targets) == {OTHER}
    assert set(rt.targets.get(NS, "other-only", uid="uid-other-only").targets) == {OTHER}
    assert (NS, BUNDLE) not in rt.sources and (NS, BUNDLE) not in rt.written


def test_deleting_a_bundle_that_never_had_a_stable_digest_writes_nothing_it_cannot_name(
    runtime: tuple[Runtime, FakeKube, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    rt, kube, _ = runtime
    pods = [_pod("p0", {BUNDLE: D2})]
    memo = Memo(settings=ControllerSettings(cache_dir=tmp_path), runtime=rt)
    body = kopf.Body({"metadata": {"namespace": NS, "name": BUNDLE}, "status": {}})
    asyncio.run(
        release(memo=memo, body=body, namespace=NS, name=BUNDLE, pods_by_namespace={NS: pods})
    )
    # No stable digest to keep: the annotation is removed, the agent keeps what is active.
    assert [c for c in kube.calls if c[0] == "pod"] == [
        ("pod", ("p0", {names.target_annotation(BUNDLE): None}))
    ]
