"""Which digest each pod should carry: the one cohort rule.

The webhook (for a pod being created) and the controller (for every pod, at
every reconcile) call the same functions here, so a pod that joins
mid-rollout lands where the controller would have put it.

The rule for a ``percent`` stage, and why:

* **Share.**  ``share(N, p) = max(1, floor(p * N / 100))`` for ``0 < p``
  and ``N > 0`` pods with the agent (``0`` when ``p`` or ``N`` is 0).  The
  percentage is a ceiling on the blast radius, so it is rounded *down*; the
  only exception is the one pod without which there is nothing to judge.
  A stage carries the candidate on exactly ``min(share, N)`` pods.
* **Position.**  Pods are ranked by ``sha256(bundle, candidate, key)``
  where ``key`` is the pod's cohort key (:func:`cohort_key`).  Hashing with
  the candidate gives every rollout a fresh canary set; hashing with the
  bundle keeps bundles independent.  No clock, no randomness and no operator
  memory are involved, so a restarted operator computes the same ranks.
* **Stickiness.**  Pods whose target annotation already names the candidate
  keep it, all of them (the ``internal`` stage's pods included); the
  remaining places, if the share has any left, go to the lowest-ranked other
  pods.  A pod leaves the candidate only by a rollback, an abort or a
  promotion, never by a stage change or pods coming and going, so no pod goes
  candidate -> stable -> candidate within a rollout.  The state it reads
  lives in the pods' annotations, so it, too, survives an operator restart.
  Consequences (all property-tested): a stage never grows past its share (it
  may start above it when the pods that already had the candidate are more);
  it has at least one pod when ``p > 0`` and there are pods; no pod on the
  candidate is ever moved out of it by the plan.

The cohort key: pods of a Deployment get their name from ``generateName``
*after* mutating admission, so the webhook cannot hash the name.  It writes
the ``logicbundle.io/cohort-key`` annotation instead (``namespace/name``
when the name is known, else the admission request's uid) and the pod keeps
it for life; a pod without it is hashed by ``namespace/name``, which is
stable across operator restarts (the uid would be too, but is unknown at
admission as well).  A re-created pod is a new pod with a new position.

``internal`` stages take exactly the pods their selector matches; ``all``
takes every pod; ``requestPercent`` gives every pod both digests and a
weight, and the SDK splits calls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

from logicbundle.api import LogicBundleSpec, LogicBundleStatus, Stage
from logicbundle.rollout._model import PodIdentity, PodReport, PodTarget


def cohort_key(*, namespace: str, name: str | None, request_uid: str) -> str:
    """The ``logicbundle.io/cohort-key`` value the webhook writes on a new pod."""
    return f"{namespace}/{name}" if name else f"uid/{request_uid}"


def cohort_position(*, bundle_name: str, candidate: str, pod: PodIdentity) -> int:
    """The pod's rank for ``candidate``: a 64-bit integer, lower joins earlier."""
    material = f"{bundle_name}\n{candidate}\n{pod.key}".encode()
    return int.from_bytes(hashlib.sha256(material).digest()[:8], "big")


def share(*, percent: int, pods: int) -> int:
    """How many of ``pods`` a ``percent`` stage gives the candidate to (see the module doc)."""
    if percent <= 0 or pods <= 0:
        return 0
    if percent >= 100:
        return pods
    return max(1, percent * pods // 100)


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


def _percent_cohort(
    *, bundle_name: str, candidate: str, percent: int, pods: Sequence[PodReport]
) -> set[PodIdentity]:
    places = share(percent=percent, pods=len(pods))

    def rank(report: PodReport) -> tuple[int, str]:
        position = cohort_position(bundle_name=bundle_name, candidate=candidate, pod=report.pod)
        return position, report.pod.key

    ranked = sorted(pods, key=rank)
    # Every pod already on the candidate keeps it (only a rollback, an abort or a promotion
    # moves it): no pod goes candidate -> stable -> candidate within a rollout.  The share
    # counts them, so the stage takes more only while it is below its share.
    keepers = [r for r in ranked if r.assigned is not None and r.assigned.digest == candidate]
    chosen = [r.pod for r in keepers]
    taken = set(chosen)
    for report in ranked:
        if len(chosen) >= places:
            break
        if report.pod not in taken:
            chosen.append(report.pod)
            taken.add(report.pod)
    return taken


def plan_assignments(
    *,
    bundle_name: str,
    stage: Stage | None,
    stable: str | None,
    candidate: str | None,
    pods: Sequence[PodReport],
) -> dict[PodIdentity, PodTarget]:
    """The target of every pod with the agent, for ``stage`` of ``candidate``'s rollout.

    ``stage`` None (or no candidate) puts every pod on ``stable``.  With no
    stable digest there is nothing verified to fall back on and nothing is
    assigned.  Pods without the agent are left out.
    """
    eligible = _eligible(pods)
    if stable is None:
        return {}
    on_stable = PodTarget(digest=stable)
    if stage is None or candidate is None or candidate == stable:
        return {report.pod: on_stable for report in eligible}
    on_candidate = PodTarget(digest=candidate)
    if stage.request_percent is not None:
        weight = stage.request_percent
        split = PodTarget(digest=stable, candidate=candidate, weight=weight) if weight else None
        return {report.pod: split or on_stable for report in eligible}
    chosen = _stage_cohort(bundle_name=bundle_name, stage=stage, candidate=candidate, pods=eligible)
    return {report.pod: on_candidate if report.pod in chosen else on_stable for report in eligible}


def _stage_cohort(
    *, bundle_name: str, stage: Stage, candidate: str, pods: Sequence[PodReport]
) -> set[PodIdentity]:
    """The pods of a pod-level stage (``all``, ``internal`` or ``percent``)."""
    if stage.all_pods:
        return {report.pod for report in pods}
    if stage.internal is not None:
        selector = stage.internal
        return {report.pod for report in pods if selector.matches(dict(report.labels))}
    return _percent_cohort(
        bundle_name=bundle_name, candidate=candidate, percent=stage.percent or 0, pods=pods
    )


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


def desired_target(
    *,
    bundle_name: str,
    spec: LogicBundleSpec,
    status: LogicBundleStatus | None,
    pod: PodReport,
    pods: Sequence[PodReport],
) -> PodTarget | None:
    """The target of one pod (the webhook's question for a pod being created).

    ``pods`` are the other selected pods with their current assignments;
    ``pod`` may or may not be among them.  The answer is what
    :func:`plan_assignments` gives that pod with everyone else in place, so
    the webhook and the controller agree.  None: nothing verified to assign
    yet (or the pod has no agent).
    """
    others = [report for report in pods if report.pod != pod.pod]
    plan = plan_assignments(
        bundle_name=bundle_name,
        stage=current_stage(spec=spec, status=status),
        stable=status.stable_digest if status else None,
        candidate=status.candidate_digest if status else None,
        pods=[*others, pod],
    )
    return plan.get(pod.pod)


def candidate_cohort(
    assignments: Mapping[PodIdentity, PodTarget], *, candidate: str
) -> set[PodIdentity]:
    """The pods whose target carries ``candidate`` (fully or by a request split)."""
    return {pod for pod, target in assignments.items() if target.carries(candidate)}
