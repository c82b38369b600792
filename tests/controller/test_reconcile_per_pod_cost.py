"""A reconcile's per-pod work: only what changed since the last one is worked out again.

At 2,000 pods a rollback runs reconciles while the same event loop answers the
pods' long-polls and reports: each pod's report rebuilt, and each pod's target
hashed only to charge restarts that had not happened, were a quarter of the
operator's CPU then.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from logicbundle import contract, rollout
from logicbundle.controller import _reconcile
from logicbundle.controller._memory import BundleMemory
from logicbundle.controller._reconcile import PodSnapshot, Runtime, _observe_restarts, _pod_reports
from tests.controller.test_reconcile import runtime  # noqa: F401

NS = "shop"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def _pod(i: int, restarts: int = 0) -> PodSnapshot:
    return PodSnapshot(
        namespace=NS,
        name=f"web-{i}",
        uid=f"uid-{i}",
        labels={"app": "web"},
        annotations={},
        has_agent=True,
        restarts=restarts,
    )


def test_a_pods_report_is_built_again_only_when_its_snapshot_changed() -> None:
    memory = BundleMemory()
    pods = [_pod(i) for i in range(5)]
    first = _pod_reports(memory, pods)
    again = _pod_reports(memory, pods)
    assert all(a is b for a, b in zip(first, again, strict=True))
    changed = dataclasses.replace(pods[2], labels={"app": "web", "cohort": "internal"})
    third = _pod_reports(memory, [*pods[:2], changed, *pods[3:4]])
    assert third[2] is not first[2] and third[2].labels == changed.labels
    assert third[2] == _reconcile._pod_report(changed)
    assert set(memory.pod_reports) == {"web-0", "web-1", "web-2", "web-3"}  # web-4 left


def test_restarts_are_charged_without_working_out_every_pods_target(
    runtime: tuple[Runtime, Any, Any],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rt, _, _ = runtime
    state = contract.RolloutState(
        bundle="pricing", stable=D1, candidate=D2, stage=contract.Everyone()
    )
    computed: list[str] = []
    real = rollout.pod_target

    def counting(published: contract.RolloutState, report: rollout.PodReport) -> Any:
        computed.append(report.pod.name)
        return real(published, report)

    monkeypatch.setattr(rollout, "pod_target", counting)
    pods = [_pod(i, restarts=1) for i in range(50)]

    def observe(snapshots: list[PodSnapshot]) -> None:
        _observe_restarts(
            rt,
            namespace=NS,
            bundle="pricing",
            pods=snapshots,
            reports=[_reconcile._pod_report(p) for p in snapshots],
            published=state,
        )

    observe(pods)  # the baselines
    observe(pods)  # nothing moved
    assert computed == []
    pods[7] = _pod(7, restarts=3)
    observe(pods)
    assert computed == ["web-7"]
    assert rt.restarts.restarts(bundle="pricing", namespace=NS, digest=D2, since=0) == 2
