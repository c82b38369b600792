"""Which digest each pod should carry: the published state, from which every pod's target follows.

The rule itself lives in :mod:`logicbundle.contract` (standard library only,
so the agent evaluates it in the pod on the slow path, and every distributor
replica for the long-polls).  This module is the operator's half: from the
stage in flight, the previous published state and the pods it sees, the next
:class:`~logicbundle.contract.RolloutState`.

* ``internal`` stages publish their selector; ``all`` publishes "every pod";
  ``requestPercent`` publishes the weight (every pod loads both digests and
  the SDK splits calls).
* ``percent`` stages publish a threshold over a stable hash of the pod's
  cohort key, sealed by admission time (:func:`logicbundle.contract.plan_percent`).
  Thresholds and the seal only move up within a rollout, so no pod leaves
  the candidate when pods come and go or the stage advances, and pods that
  an ``internal`` stage put on the candidate are carried over; without any
  per-pod record.  The previous state is the one in the status
  (``status.targetState``), so a restarted operator plans the same.

The cohort key: pods of a Deployment get their name from ``generateName``
*after* mutating admission, so the webhook cannot hash the name.  It writes
the ``logicbundle.io/cohort-key`` annotation instead (``namespace/name``
when the name is known, else the admission request's uid) and the pod keeps
it for life, with ``logicbundle.io/admitted-at``.  A re-created pod is a new
pod with a new position.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Final

from logicbundle import contract
from logicbundle.api import LabelSelector, LogicBundleSpec, LogicBundleStatus, Stage
from logicbundle.rollout._model import PodIdentity, PodReport, PodTarget

ADMISSION_LAG_MS: Final = 5_000
"""How far behind the pods the operator sees may be (cache lag plus clock skew).

A percent stage never seals pods admitted within this much of ``now``: a pod
admitted but not yet in the operator's cache would otherwise join the
candidate unaccounted for.  They are sealed at a later reconcile.  The one
exception: entering a percent stage from an ``internal`` one seals every pod
seen that the internal stage put on the candidate, so that it keeps it.
"""


def cohort_key(*, namespace: str, name: str | None, request_uid: str) -> str:
    """The ``logicbundle.io/cohort-key`` value the webhook writes on a new pod."""
    return f"{namespace}/{name}" if name else f"uid/{request_uid}"


def share(*, percent: int, pods: int) -> int:
    """How many of ``pods`` a ``percent`` stage gives the candidate to."""
    return contract.share(percent=percent, pods=pods)


def _eligible(pods: Iterable[PodReport]) -> list[PodReport]:
    seen: set[PodIdentity] = set()
    result: list[PodReport] = []
    for report in pods:
        if report.pod in seen:
            raise ValueError(f"pod {report.pod.namespace}/{report.pod.name} is listed twice")
        seen.add(report.pod)
        if report.has_agent:
            result.append(report)
    return result


def selector(value: LabelSelector) -> contract.Selector:
    """The rule's form of a label selector from the spec."""
    return contract.Selector(
        match_labels=dict(value.match_labels or {}),
        match_expressions=tuple(
            contract.Requirement(key=r.key, operator=r.operator, values=tuple(r.values or ()))
            for r in value.match_expressions or ()
        ),
    )


def facts(report: PodReport) -> contract.PodFacts:
    """What the rule knows of a pod."""
    return contract.PodFacts(key=report.pod.key, labels=report.labels, admitted=report.admitted)


def publish(
    *,
    bundle_name: str,
    stage: Stage | None,
    stable: str | None,
    candidate: str | None,
    previous: contract.RolloutState | None,
    pods: Sequence[PodReport],
    now: datetime,
) -> contract.RolloutState:
    """The state to publish for ``stage`` of ``candidate``'s rollout.

    ``stage`` None (or no candidate): every pod on ``stable``.  ``previous``:
    the state published before (``status.targetState``); a percent stage
    continues from it when it is the same candidate's.  Pods without the
    agent are not counted.
    """
    if stable is None or stage is None or candidate is None or candidate == stable:
        return contract.RolloutState(bundle=bundle_name, stable=stable)
    published: contract.Stage
    if stage.request_percent is not None:
        published = contract.Split(stage.request_percent)
    elif stage.all_pods:
        published = contract.Everyone()
    elif stage.internal is not None:
        published = contract.Internal(selector(stage.internal))
    else:
        before = (
            previous.stage
            if previous is not None
            and previous.bundle == bundle_name
            and previous.candidate == candidate
            else None
        )
        seen = [facts(report) for report in _eligible(pods)]
        carry_from = before.selector if isinstance(before, contract.Internal) else None
        horizon = int(now.timestamp() * 1000) - ADMISSION_LAG_MS
        if carry_from is not None:
            # The internal stage gave the candidate to every pod its selector matched,
            # however recently admitted; the carry keeps only sealed pods, so the seal
            # must cover them, or the newest would go back to stable.
            horizon = max([horizon, *(p.admitted for p in seen if carry_from.matches(p.labels))])
        published = contract.plan_percent(
            bundle=bundle_name,
            candidate=candidate,
            percent=stage.percent or 0,
            pods=seen,
            previous=before if isinstance(before, contract.Percent) else None,
            carry_from=carry_from,
            horizon=horizon,
        )
    return contract.RolloutState(
        bundle=bundle_name, stable=stable, candidate=candidate, stage=published
    )


def pod_target(state: contract.RolloutState, report: PodReport) -> PodTarget | None:
    """What one pod should run under ``state`` (None: nothing, or a pod without the agent)."""
    if not report.has_agent:
        return None
    target = contract.target_of(state, facts(report))
    if target is None:
        return None
    return PodTarget(digest=target.digest, candidate=target.candidate, weight=target.weight)


def assignments(
    state: contract.RolloutState, pods: Sequence[PodReport]
) -> dict[PodIdentity, PodTarget]:
    """Every pod's target under ``state`` (pods without the agent are left out)."""
    result: dict[PodIdentity, PodTarget] = {}
    for report in _eligible(pods):
        target = pod_target(state, report)
        if target is not None:
            result[report.pod] = target
    return result


def current_stage(*, spec: LogicBundleSpec, status: LogicBundleStatus | None) -> Stage | None:
    """The stage in flight according to ``status`` (None when nothing is in flight).

    Looked up by name first, so reordering the stages in the spec mid-rollout
    keeps the stage that was running; by index when the name is gone.
    """
    if status is None or status.candidate_digest is None or status.stage_index is None:
        return None
    stages = spec.rollout.effective_stages()
    for stage in stages:
        if stage.name == status.stage:
            return stage
    return stages[min(status.stage_index, len(stages) - 1)]


def published_state(status: LogicBundleStatus | None) -> contract.RolloutState | None:
    """The state ``status`` published (None: none, or one that does not parse)."""
    if status is None or status.target_state is None:
        return None
    try:
        return contract.state_from_json(
            status.target_state.model_dump(mode="json", by_alias=True, exclude_none=True)
        )
    except contract.StateError:
        return None


def candidate_cohort(
    assignments: Mapping[PodIdentity, PodTarget], *, candidate: str
) -> set[PodIdentity]:
    """The pods whose target carries ``candidate`` (fully or by a request split)."""
    return {pod for pod, target in assignments.items() if target.carries(candidate)}
