"""The rollout core: which digest each pod runs, and when a rollout moves on.

Pure: no I/O, no Kubernetes client, no clock (``now`` is always passed in).
The controller and the webhook are thin shells around these calls, and the
state they need lives in the ``LogicBundle`` status and the pods'
annotations, so the decisions are fast to test and survive an operator
restart.

The webhook asks one question, for a pod being created::

    target = rollout.desired_target(
        bundle_name=lb.metadata.name, spec=lb.spec, status=lb.status,
        pod=rollout.PodReport(pod=rollout.PodIdentity(namespace=ns, name=name,
                                                       cohort_key=key), labels=labels),
        pods=other_selected_pods,
    )
    if target is not None:
        annotations[names.target_annotation(lb.metadata.name)] = rollout.format_target(target)

(``key`` is :func:`cohort_key`, written to the ``logicbundle.io/cohort-key``
annotation; pod names are unknown at admission for ``generateName`` pods.)

The controller, at every reconcile::

    if rollout.analysis_due(spec=spec, status=status, now=now):
        verdict = rollout.judge_builtin(analysis=spec.rollout.analysis,
                                        candidate=cand_sample, stable=stable_sample)
        # or: rollout.render_query(...) per metric, then rollout.judge(...)
    decision = rollout.step(bundle_name=name, generation=generation, spec=spec,
                            status=status, pods=reports, verdict=verdict,
                            action=parsed_action, verified=verification, now=now)
    # patch decision.assignments onto pods (format_target), write decision.status,
    # post decision.events, requeue after decision.requeue_after.

The cohort rule and share are explained in :mod:`logicbundle.rollout._cohort`;
the state diagram in :mod:`logicbundle.rollout._machine`; the verdicts in
:mod:`logicbundle.rollout._analysis`.
"""

from logicbundle.rollout._analysis import (
    AnalysisVerdict,
    BuiltinSample,
    MetricValue,
    MetricValues,
    builtin_value,
    escape_label_value,
    histogram_quantile,
    judge,
    judge_builtin,
    judge_metric,
    render_query,
)
from logicbundle.rollout._cohort import (
    candidate_cohort,
    cohort_key,
    cohort_position,
    current_stage,
    desired_target,
    plan_assignments,
    share,
)
from logicbundle.rollout._machine import (
    EVENT_ABORTED,
    EVENT_ACTION_IGNORED,
    EVENT_ANALYSIS_FAILED,
    EVENT_DIGEST_VERIFIED,
    EVENT_HEALTH_CHECK_FAILED,
    EVENT_INSTALLED,
    EVENT_REASONS,
    EVENT_RESUMED,
    EVENT_RETRIED,
    EVENT_ROLLBACK_REQUESTED,
    EVENT_ROLLED_BACK,
    EVENT_ROLLOUT_STARTED,
    EVENT_ROLLOUT_SUCCEEDED,
    EVENT_STAGE_ADVANCED,
    EVENT_SUPERSEDED,
    EVENT_SUSPENDED,
    EVENT_VERIFICATION_FAILED,
    analysis_due,
    step,
)
from logicbundle.rollout._model import (
    Decision,
    Event,
    EventType,
    PodFailure,
    PodIdentity,
    PodReport,
    PodTarget,
    VerifiedDigest,
    format_target,
    parse_target,
)

__all__ = [
    "EVENT_ABORTED",
    "EVENT_ACTION_IGNORED",
    "EVENT_ANALYSIS_FAILED",
    "EVENT_DIGEST_VERIFIED",
    "EVENT_HEALTH_CHECK_FAILED",
    "EVENT_INSTALLED",
    "EVENT_REASONS",
    "EVENT_RESUMED",
    "EVENT_RETRIED",
    "EVENT_ROLLBACK_REQUESTED",
    "EVENT_ROLLED_BACK",
    "EVENT_ROLLOUT_STARTED",
    "EVENT_ROLLOUT_SUCCEEDED",
    "EVENT_STAGE_ADVANCED",
    "EVENT_SUPERSEDED",
    "EVENT_SUSPENDED",
    "EVENT_VERIFICATION_FAILED",
    "AnalysisVerdict",
    "BuiltinSample",
    "Decision",
    "Event",
    "EventType",
    "MetricValue",
    "MetricValues",
    "PodFailure",
    "PodIdentity",
    "PodReport",
    "PodTarget",
    "VerifiedDigest",
    "analysis_due",
    "builtin_value",
    "candidate_cohort",
    "cohort_key",
    "cohort_position",
    "current_stage",
    "desired_target",
    "escape_label_value",
    "format_target",
    "histogram_quantile",
    "judge",
    "judge_builtin",
    "judge_metric",
    "parse_target",
    "plan_assignments",
    "render_query",
    "share",
    "step",
]
